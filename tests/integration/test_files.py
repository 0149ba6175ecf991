"""Attachments over tus 1.0.0 (/v1/files/): a real tus client (Debian's
python3-tuspy) uploads files of 0 B, 1 B, 3 MB and 50 MB; our own client
cuts connections mid-PATCH and resumes from HEAD; a SIGKILL during 8
concurrent uploads loses no acknowledged offset; each refusal (460, 409,
404, 413, 507, an unreferenced file, a phone without the record) leaves
the stored state as it was."""
import base64
import hashlib
import json
import os
import random
import socket
import threading
import time
import uuid

from harness import (APPLIED, Device, Server, assign, batch, cli, pb, push, report, request,
                     run_tests, store_state)
from tusutil import attachment, create, patch, phone, report_with, tus

SEED = int(os.environ.get("SEED", "20261130"))


def raw(port, method, path, headers, body=b"", head_only=False):
    """One request; the body read into a bytearray (50 MB without copying
    it over and over), none for HEAD. Returns (status, headers, body)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        h = {"Host": "127.0.0.1", "Content-Length": str(len(body)), "Connection": "close"}
        h.update(headers)
        s.sendall((f"{method} {path} HTTP/1.1\r\n" +
                   "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n").encode() + body)
        buf = bytearray()
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("closed before a response")
            buf += chunk
        end = buf.index(b"\r\n\r\n")
        lines = buf[:end].decode().split("\r\n")
        hdrs = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
        rest = buf[end + 4:]
        n = 0 if head_only else int(hdrs.get("content-length", "0"))
        while len(rest) < n:
            chunk = s.recv(1 << 20)
            if not chunk:
                raise ConnectionError("closed in the body")
            rest += chunk
        return int(lines[0].split()[1]), hdrs, bytes(rest[:n])
    finally:
        s.close()


def head(dev, fid):
    st, h, _ = raw(dev.port, "HEAD", f"/v1/files/{fid}", tus(dev), head_only=True)
    return st, int(h.get("upload-offset", -1))


def files_on_disk(srv):
    out = []
    for sub in ("partial", "sha256"):
        d = os.path.join(srv.data, "files", sub)
        out += [f"{sub}/{n}" for n in sorted(os.listdir(d))] if os.path.isdir(d) else []
    return out


def download(dev, fid, rng=None):
    h = {"Authorization": f"Bearer {dev.token}"}
    if rng:
        h["Range"] = rng
    return raw(dev.port, "GET", f"/v1/files/{fid}", h)


def test_tuspy_uploads_0_1_3mb_50mb():
    from tusclient import client
    with Server(quiet=True) as srv:
        dev = phone(srv, "phone 1")
        tc = client.TusClient(srv.url + "/v1/files/",
                              headers={"Authorization": f"Bearer {dev.token}"})
        rng = random.Random(SEED)
        for size in (0, 1, 3 << 20, 50 << 20):
            data = rng.randbytes(size)
            _, fid = report_with(dev, data)
            path = os.path.join(srv.tmp.name, "up.bin")
            with open(path, "wb") as f:
                f.write(data)
            t0 = time.time()
            up = tc.uploader(file_path=path, metadata={"fileid": fid}, chunk_size=8 << 20)
            up.upload()
            if size == 0:  # tuspy's upload() sends nothing for 0 B: its own creation call
                up.set_url(up.create_url())
            took = time.time() - t0
            print(f"   {size} B by tuspy in {took:.2f}s")
            assert up.url.endswith("/v1/files/" + fid), up.url
            st, off = head(dev, fid)
            assert (st, off) == (200, size), (st, off)
            sha = hashlib.sha256(data).hexdigest()
            with open(os.path.join(srv.data, "files", "sha256", sha), "rb") as f:
                assert f.read() == data
            st, h, body = download(dev, fid)
            assert st == 200 and body == data and h["content-type"] == "image/jpeg", st
        assert not os.listdir(os.path.join(srv.data, "files", "partial"))
        # OPTIONS advertises what the server does
        st, h, _ = request(srv.port, "OPTIONS", "/v1/files/", headers=tus(dev))
        assert st == 204 and h["tus-version"] == "1.0.0", (st, h)
        assert h["tus-extension"] == "creation,checksum,termination,expiration", h
        assert h["tus-checksum-algorithm"] == "sha256" and h["tus-max-size"] == str(100 << 20)


def test_checksum_mismatch_460_offset_unchanged():
    with Server(quiet=True) as srv:
        dev = phone(srv, "phone 1")
        data = os.urandom(200000)
        _, fid = report_with(dev, data)
        st, h, _ = create(dev, fid, len(data))
        assert st == 201 and h["location"] == f"/v1/files/{fid}" and "upload-expires" in h, h
        st, _, _ = patch(dev, fid, 0, data[:100000], hashlib.sha256(data[:100000]).digest())
        assert st == 204, st
        st, _, b = patch(dev, fid, 100000, data[100000:],
                         hashlib.sha256(b"not these bytes").digest())
        assert st == 460 and b"checksum_mismatch" in b, (st, b)
        assert head(dev, fid) == (200, 100000)
        st, _, _ = patch(dev, fid, 100000, data[100000:],
                         hashlib.sha256(data[100000:]).digest())
        assert st == 204 and head(dev, fid) == (200, len(data))


def test_whole_file_hash_mismatch_discards():
    with Server(quiet=True) as srv:
        dev = phone(srv, "phone 1")
        data = os.urandom(5000)
        _, fid = report_with(dev, data, sha=hashlib.sha256(b"other").digest())
        assert create(dev, fid, len(data))[0] == 201
        st, _, b = patch(dev, fid, 0, data)
        assert st == 460 and b"file_hash_mismatch" in b, (st, b)
        assert head(dev, fid)[0] == 404
        assert files_on_disk(srv) == [], files_on_disk(srv)


def test_refusals_leave_state_unchanged():
    with Server(quiet=True, args=["--max-file", "1M"]) as srv:
        dev = phone(srv, "phone 1")
        other = phone(srv, "phone 2")
        data = os.urandom(3000)
        _, fid = report_with(dev, data)
        _, big = report_with(dev, b"", size=2 << 20, sha=hashlib.sha256(b"x").digest())
        state = store_state(srv.data)
        # a file nobody's change references, and one another phone's does
        assert create(dev, os.urandom(16).hex(), 10)[0] == 403
        assert create(other, fid, len(data))[0] == 403
        # over --max-file
        st, _, b = create(dev, big, 2 << 20)
        assert st == 413 and b"file_too_large" in b, (st, b)
        # not the size the record names
        assert create(dev, fid, len(data) + 1)[0] == 400
        # unknown uploads
        assert head(dev, fid)[0] == 404
        assert patch(dev, fid, 0, data)[0] == 404
        assert request(dev.port, "DELETE", f"/v1/files/{fid}", headers=tus(dev))[0] == 404
        assert store_state(srv.data) == state and files_on_disk(srv) == []
        # no token: refused before the body
        st, _, _ = request(srv.port, "PATCH", f"/v1/files/{fid}", data,
                           headers={"Upload-Offset": "0",
                                    "Content-Type": "application/offset+octet-stream"})
        assert st == 401, st
        # offset mismatch
        assert create(dev, fid, len(data))[0] == 201
        assert patch(dev, fid, 0, data[:1000])[0] == 204
        st, h, _ = patch(dev, fid, 0, data[:1000])
        assert st == 409 and h["upload-offset"] == "1000", (st, h)
        st, h, _ = patch(dev, fid, 1000, data[1000:] + b"more")
        assert st == 413, st
        assert head(dev, fid) == (200, 1000)
        # termination
        assert request(dev.port, "DELETE", f"/v1/files/{fid}", headers=tus(dev))[0] == 204
        assert head(dev, fid)[0] == 404 and files_on_disk(srv) == [], files_on_disk(srv)


def test_disk_full_507_at_creation():
    with Server(quiet=True, args=["--max-file", "2T"]) as srv:
        dev = phone(srv, "phone 1")
        _, fid = report_with(dev, b"", size=1 << 40, sha=hashlib.sha256(b"x").digest())
        st, _, b = create(dev, fid, 1 << 40)
        assert st == 507 and b"storage_full" in b, (st, b)
        assert head(dev, fid)[0] == 404 and files_on_disk(srv) == [], files_on_disk(srv)


def test_disk_full_mid_patch_507_offset_unchanged():
    """The server under a 3 MiB file size limit (RLIMIT_FSIZE, as a quota):
    a write past it fails; the PATCH gets 507 and its bytes do not count."""
    import resource
    srv = Server(quiet=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (3 << 20, hard))
    try:
        srv.start()  # inherits the limit
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    try:
        dev = phone(srv, "phone 1")
        data = os.urandom(4 << 20)
        _, fid = report_with(dev, data)
        assert create(dev, fid, len(data))[0] == 201
        assert patch(dev, fid, 0, data[:1 << 20])[0] == 204
        st, _, b = patch(dev, fid, 1 << 20, data[1 << 20:])
        assert st == 507 and b"storage_full" in b, (st, b)
        assert head(dev, fid) == (200, 1 << 20)
        assert not os.listdir(os.path.join(srv.data, "files", "sha256"))
        assert srv.stop() == 0
    finally:
        if srv.proc:
            srv.kill()
        srv.tmp.cleanup()


def test_expired_uploads_are_dropped():
    """--upload-expiry 0.00003 days (2.6 s): an upload left half done
    expires (410), its state and bytes are dropped by the sweep, and a new
    POST starts it again from 0."""
    with Server(quiet=True, args=["--upload-expiry", "0.00003"]) as srv:
        dev = phone(srv, "phone 1")
        data = os.urandom(10000)
        _, fid = report_with(dev, data)
        st, h, _ = create(dev, fid, len(data))
        assert st == 201 and h["upload-expires"].endswith(" GMT"), h
        assert patch(dev, fid, 0, data[:4000])[0] == 204
        assert files_on_disk(srv) == [f"partial/{fid}"]
        deadline = time.time() + 20
        while files_on_disk(srv) and time.time() < deadline:
            time.sleep(0.1)
        assert files_on_disk(srv) == [] and head(dev, fid)[0] == 404
        assert create(dev, fid, len(data))[0] == 201 and head(dev, fid) == (200, 0)
        assert patch(dev, fid, 0, data)[0] == 204 and head(dev, fid) == (200, len(data))


def cut_patch(port, dev, fid, offset, chunk, send):
    """A PATCH whose connection is cut after send bytes of its body."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    h = (f"PATCH /v1/files/{fid} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {dev.token}\r\n"
         f"Tus-Resumable: 1.0.0\r\nUpload-Offset: {offset}\r\n"
         f"Content-Type: application/offset+octet-stream\r\nContent-Length: {len(chunk)}\r\n\r\n")
    s.sendall(h.encode() + chunk[:send])
    time.sleep(0.05)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()  # a reset, as a dropped link


def test_cut_connections_resume_from_head():
    rng = random.Random(SEED)
    with Server(quiet=True) as srv:
        dev = phone(srv, "phone 1")
        data = rng.randbytes(1 << 20)
        _, fid = report_with(dev, data)
        assert create(dev, fid, len(data))[0] == 201
        cuts = 0
        off = 0
        while off < len(data):
            chunk = data[off:off + 300000]
            if rng.random() < 0.6:
                cut_patch(srv.port, dev, fid, off, chunk, rng.randrange(1, len(chunk)))
                cuts += 1
                deadline = time.time() + 10
                while True:  # the kept bytes are committed just after the cut
                    st, new = head(dev, fid)
                    if st == 200 and (new > off or time.time() > deadline):
                        break
                    time.sleep(0.02)
                assert off <= new <= off + len(chunk), (off, new)
                off = new
            else:
                st, h, _ = patch(dev, fid, off, chunk)
                assert st == 204, st
                off = int(h["upload-offset"])
        print(f"   {cuts} cuts")
        assert cuts >= 2
        st, _, body = download(dev, fid)
        assert st == 200 and hashlib.sha256(body).digest() == hashlib.sha256(data).digest()


def test_sigkill_during_8_concurrent_uploads():
    rng = random.Random(SEED)
    srv = Server(quiet=True)
    srv.start()
    try:
        phones = [phone(srv, f"phone {i}") for i in range(8)]
        files = []
        for p in phones:
            data = rng.randbytes(3 << 20)
            _, fid = report_with(p, data)
            assert create(p, fid, len(data))[0] == 201
            files.append((p, fid, data))
        acked = {fid: 0 for _, fid, _ in files}
        stop = threading.Event()

        def upload(p, fid, data):
            off = 0
            while off < len(data) and not stop.is_set():
                try:
                    st, h, _ = patch(p, fid, off, data[off:off + 65536])
                except OSError:
                    return
                if st != 204:
                    return
                off = int(h["upload-offset"])
                acked[fid] = off

        ws = [threading.Thread(target=upload, args=f, daemon=True) for f in files]
        for w in ws:
            w.start()
        deadline = time.time() + 30
        while min(acked.values()) < 65536 and time.time() < deadline:
            time.sleep(0.01)
        assert min(acked.values()) >= 65536, acked
        srv.kill()
        stop.set()
        for w in ws:
            w.join(10)
        seen = dict(acked)
        srv.start()
        for p in phones:
            p.port = srv.port
        for p, fid, data in files:
            st, off = head(p, fid)
            assert st == 200 and off >= seen[fid], (fid, off, seen[fid])
            while off < len(data):
                st, h, _ = patch(p, fid, off, data[off:off + (1 << 20)])
                assert st == 204, st
                off = int(h["upload-offset"])
            st, _, body = download(p, fid)
            assert st == 200 and body == data
        print("   acknowledged before the kill: " +
              ", ".join(str(v) for v in sorted(seen.values())))
        assert srv.stop() == 0
    finally:
        if srv.proc:
            srv.kill()
        srv.tmp.cleanup()


def test_downloads_for_holders_only():
    with Server(quiet=True) as srv:
        dev = phone(srv, "phone 1")
        other = phone(srv, "phone 2")
        far = phone(srv, "coordinator mombasa", county="001", role="coordinator")
        near = phone(srv, "coordinator nairobi", county="047", role="coordinator")
        admin = phone(srv, "admin", role="admin")
        data = os.urandom(100000)
        rid, fid = report_with(dev, data)
        assert create(dev, fid, len(data))[0] == 201
        assert patch(dev, fid, 0, data)[0] == 204
        assert download(other, fid)[0] == 404
        assert download(far, fid)[0] == 404
        # evidence files are a sensitive field: not a coordinator's (test_files_rules)
        assert download(near, fid)[0] == 403
        st, h, body = download(admin, fid, "bytes=10-19")
        assert st == 206 and body == data[10:20], (st, h)
        assert h["content-range"] == f"bytes 10-19/{len(data)}"
        assert download(admin, fid, "bytes=999999-")[0] == 416
        assign(srv.data, rid, other)
        st, _, body = download(other, fid)
        assert st == 200 and body == data
        # the same bytes named by a second record are stored once
        _, fid2 = report_with(dev, data)
        assert create(dev, fid2, len(data))[0] == 201
        assert head(dev, fid2) == (200, len(data))
        assert len(os.listdir(os.path.join(srv.data, "files", "sha256"))) == 1
        assert download(dev, fid2)[2] == data


def test_office_status_export_and_backup():
    with Server(quiet=True) as srv:
        dev = phone(srv, "Kisumu phone 3", county="042")
        far = phone(srv, "Nairobi phone 1", county="047")
        coord = phone(srv, "coordinator kisumu", county="042", role="coordinator")
        admin = phone(srv, "admin", role="admin")
        done, half, none = os.urandom(4000), os.urandom(5000), os.urandom(3000)
        rid, fid = report_with(dev, done, county="042")
        _, fid_half = report_with(dev, half, county="042")
        c = report(far, county="047")
        v = attachment(none)
        c.fields.add(field=100, value=v)
        assert push(far.port, far, batch(far, [c]))[1].results[0].status == APPLIED
        c = report(dev, county="042")
        c.fields.add(field=100, value=attachment(none))
        assert push(dev.port, dev, batch(dev, [c]))[1].results[0].status == APPLIED
        assert create(dev, fid, len(done))[0] == 201 and patch(dev, fid, 0, done)[0] == 204
        assert create(dev, fid_half, len(half))[0] == 201
        assert patch(dev, fid_half, 0, half[:1000])[0] == 204

        def status(who):
            st, _, b = raw(srv.port, "GET", "/v1/files/status",
                           {"Authorization": f"Bearer {who.token}"})
            return st, json.loads(b) if st == 200 else b

        st, j = status(coord)
        assert st == 200 and j["files_pending"] == 2 and j["bytes_waiting"] == 4000 + 3000, j
        assert list(j["devices"]) == [dev.hex], j
        assert j["devices"][dev.hex]["name"] == "Kisumu phone 3", j
        assert j["devices"][dev.hex]["files_pending"] == 2 and list(j["counties"]) == ["042"]
        st, j = status(admin)
        assert j["files_pending"] == 3 and j["bytes_waiting"] == 10000, j
        assert j["counties"]["047"] == {"files_pending": 1, "bytes_waiting": 3000}, j
        assert status(dev)[0] == 403

        out = os.path.join(srv.tmp.name, "export")
        cli("export", "--data", srv.data, "--format", "csv", "--quiet",
            "--out", os.path.join(srv.tmp.name, "x.csv"), "--with-files", out)
        with open(os.path.join(out, "manifest.csv")) as f:
            assert f.read().splitlines() == ["record_id,field,file_id,sha256,size,"
                                             "media_type,received_at,uploaded_by"]
        cli("export", "--data", srv.data, "--format", "csv", "--quiet", "--include-sensitive",
            "--out", os.path.join(srv.tmp.name, "x.csv"), "--with-files", out)
        sha = hashlib.sha256(done).hexdigest()
        with open(os.path.join(out, "sha256", sha), "rb") as f:
            assert f.read() == done
        assert os.listdir(os.path.join(out, "sha256")) == [sha]
        with open(os.path.join(out, "manifest.csv")) as f:
            rows = f.read().splitlines()
        assert len(rows) == 5, rows
        row = [r for r in rows if fid in r][0].split(",")
        assert row[0] == str(uuid.UUID(bytes=bytes(rid))) and row[1] == "100", row
        assert row[3:6] == [sha, "4000", '"image/jpeg"'] and row[7] == dev.hex, row
        assert row[6].startswith("20"), row

        dest = os.path.join(srv.tmp.name, "backup")
        cli("backup", "--data", srv.data, dest)
        a = os.stat(os.path.join(srv.data, "files", "sha256", sha))
        b = os.stat(os.path.join(dest, "files", "sha256", sha))
        assert a.st_ino == b.st_ino, "the backup hard-links the file"


if __name__ == "__main__":
    run_tests(globals())
