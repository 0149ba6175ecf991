"""Attachments in the tests: a pushed Attachment value, and our side of tus
1.0.0 (creation and PATCH) for the tests that play the phone themselves
(the real client, python3-tuspy, is used where it fits)."""
import base64
import hashlib
import os

from harness import APPLIED, Device, batch, pb, push, report, request


def attachment(data, file_id=None, sha=None, size=None, media="image/jpeg"):
    """An Attachment value for data (or lying about its hash or size)."""
    v = pb.Value()
    v.attachment.file_id = file_id or os.urandom(16)
    v.attachment.sha256 = sha or hashlib.sha256(data).digest()
    v.attachment.size = len(data) if size is None else size
    v.attachment.media_type = media
    return v


def phone(srv, name, county="047", role="device"):
    """An enrolled device that knows its server's port."""
    d = Device(srv.data, name, county=county, role=role)
    d.port = srv.port
    return d


def report_with(dev, data, county="047", field=100, version=None, **kw):
    """Pushes a report whose attachment field (the evidence, 100, unless
    told) references data; returns (record id, file id hex)."""
    c = report(dev, county=county)
    if version is not None:
        c.form_version = version
    v = attachment(data, **kw)
    c.fields.add(field=field, value=v)
    st, r = push(dev.port, dev, batch(dev, [c]))
    assert st == 200 and r.results[0].status == APPLIED, (st, r)
    return c.record_id, v.attachment.file_id.hex()


def tus(dev, **extra):
    """A tus request's headers, with dev's token."""
    h = {"Authorization": f"Bearer {dev.token}", "Tus-Resumable": "1.0.0"}
    h.update(extra)
    return h


def create(dev, fid, length):
    md = "fileid " + base64.b64encode(fid.encode()).decode()
    return request(dev.port, "POST", "/v1/files/",
                   headers=tus(dev, **{"Upload-Length": str(length), "Upload-Metadata": md}))


def patch(dev, fid, offset, chunk, checksum=None):
    h = tus(dev, **{"Upload-Offset": str(offset),
                    "Content-Type": "application/offset+octet-stream"})
    if checksum:
        h["Upload-Checksum"] = "sha256 " + base64.b64encode(checksum).decode()
    return request(dev.port, "PATCH", f"/v1/files/{fid}", chunk, headers=h)
