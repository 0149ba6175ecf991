"""The files as a zip over HTTP: GET /v1/export?format=files streams what
`shahidi export --with-files DIR` writes (sha256/HASH per complete file,
manifest.csv), under the export's rules: an admin anywhere, sensitive
files only when asked; a coordinator its own counties and never a file of
a sensitive field; audited before the first byte and at the end (a cut
download says "cut"). Read back by Python's zipfile and by `unzip -t`;
the server's memory stays flat whatever the number of files."""
import csv
import hashlib
import io
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import zipfile

from harness import Server, cli, request, run_tests
from test_files_rules import form_with_open_attachment, upload
from tusutil import create, phone, report_with


def get_zip(srv, who, query="", path=None):
    st, h, body = request(srv.port, "GET", "/v1/export?format=files" + query,
                          headers={"Authorization": f"Bearer {who.token}"}, timeout=120)
    if st == 200 and path:
        with open(path, "wb") as f:
            f.write(body)
    return st, h, body


def check_zip(path):
    """Every file's SHA-256 is its name's and its manifest rows'; STORED;
    unzip -t agrees. Returns (names of the files, manifest text)."""
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        assert names[-1] == "manifest.csv", names
        assert len(set(names)) == len(names), names
        manifest = z.read("manifest.csv").decode()
        rows = list(csv.DictReader(io.StringIO(manifest)))
        files = [n for n in names if n != "manifest.csv"]
        for n in files:
            info = z.getinfo(n)
            assert info.compress_type == zipfile.ZIP_STORED, n
            assert n.startswith("sha256/"), n
            sha = hashlib.sha256(z.read(n)).hexdigest()
            assert n == "sha256/" + sha, n
            named = [r for r in rows if r["sha256"] == sha]
            assert named and all(r["received_at"] for r in named), (n, named)
            assert all(int(r["size"]) == info.file_size for r in named)
        # every received file the manifest names is in the archive
        for r in rows:
            if r["received_at"]:
                assert "sha256/" + r["sha256"] in files, r
    if shutil.which("unzip"):
        out = subprocess.run(["unzip", "-t", path], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "No errors detected" in out.stdout, out.stdout[-2000:]
    else:
        print("   unzip is not installed (tools/dev setup): checked by Python only")
    return sorted(files), manifest


def cli_manifest(srv, forms, *args):
    """What `shahidi export --with-files` writes for the same store (the
    forms the server has: which fields are sensitive)."""
    out = tempfile.mkdtemp(prefix="shahidi-files-", dir=srv.tmp.name)
    cli("export", "--data", srv.data, "--forms", forms, "--format", "csv", "--quiet",
        "--out", os.path.join(out, "x.csv"), "--with-files", os.path.join(out, "f"), *args)
    with open(os.path.join(out, "f", "manifest.csv"), newline="") as f:
        manifest = f.read()
    files = sorted("sha256/" + n for n in os.listdir(os.path.join(out, "f", "sha256")))
    return files, manifest


def audit(data, ends=0):
    """The exports' entries, once at least `ends` export_end ones are in
    (the end is written after the last byte has left: the client can see
    the whole body a moment before)."""
    for _ in range(100):
        _, out, _ = cli("audit", "--data", data)
        got = [e for e in map(json.loads, out.splitlines())
               if e["action"] in ("export", "export_end")]
        if sum(e["action"] == "export_end" for e in got) >= ends:
            return got
        time.sleep(0.1)
    raise AssertionError(f"fewer than {ends} export_end entries: {got}")


def test_the_zip_is_the_clis_folder_under_the_export_rules():
    tmp = tempfile.TemporaryDirectory(prefix="shahidi-it-form-")
    forms = form_with_open_attachment(os.path.join(tmp.name, "v2.json"))
    with Server(quiet=True, args=["--forms", forms]) as srv:
        dev = phone(srv, "Nairobi phone 1", county="047")
        far = phone(srv, "Mombasa phone 1", county="001")
        near = phone(srv, "coordinator nairobi", county="047", role="coordinator")
        admin = phone(srv, "admin", role="admin")
        photo, scene, shared, far_scene, missing = (os.urandom(n) for n in
                                                    (30000, 20000, 5000, 7000, 3000))
        _, f_photo = report_with(dev, photo)                          # 100: sensitive
        _, f_scene = report_with(dev, scene, field=101, version=2)    # 101: not
        _, f_shared1 = report_with(dev, shared, field=101, version=2)
        _, f_shared2 = report_with(dev, shared, field=101, version=2)  # the same bytes
        _, f_far = report_with(far, far_scene, county="001", field=101, version=2)
        report_with(dev, missing, field=101, version=2)               # never uploaded
        for who, fid, data in ((dev, f_photo, photo), (dev, f_scene, scene),
                               (dev, f_shared1, shared), (far, f_far, far_scene)):
            upload(who, fid, data)
        # the same bytes again: complete at creation (stored once, by hash)
        assert create(dev, f_shared2, len(shared))[0] == 201
        sha = {k: hashlib.sha256(v).hexdigest() for k, v in
               (("photo", photo), ("scene", scene), ("shared", shared), ("far", far_scene))}

        # an admin, sensitive files asked for: everything, each file once
        path = os.path.join(srv.tmp.name, "all.zip")
        st, h, body = get_zip(srv, admin, "&include_sensitive=1", path)
        assert st == 200, (st, body[:300])
        assert h["content-type"] == "application/zip", h
        cd = h["content-disposition"]
        assert cd.startswith('attachment; filename="shahidi-files-') and cd.endswith('.zip"'), cd
        files, manifest = check_zip(path)
        assert files == sorted("sha256/" + s for s in sha.values()), files
        assert manifest.count("\r\n") == 1 + 6, manifest  # a row per reference
        assert (files, manifest) == cli_manifest(srv, forms, "--include-sensitive")
        # not asked for: no file of a sensitive field, and no row for one
        path = os.path.join(srv.tmp.name, "open.zip")
        assert get_zip(srv, admin, "", path)[0] == 200
        files, manifest = check_zip(path)
        assert "sha256/" + sha["photo"] not in files and sha["photo"] not in manifest
        assert len(files) == 3, files
        assert (files, manifest) == cli_manifest(srv, forms)

        # a coordinator: its counties only, never a sensitive file
        path = os.path.join(srv.tmp.name, "near.zip")
        assert get_zip(srv, near, "", path)[0] == 200
        files, manifest = check_zip(path)
        assert files == sorted("sha256/" + sha[k] for k in ("scene", "shared")), files
        assert sha["far"] not in manifest and sha["photo"] not in manifest
        assert (files, manifest) == cli_manifest(srv, forms, "--county", "047")
        st, _, b = get_zip(srv, near, "&include_sensitive=1")
        assert st == 403 and json.loads(b)["error"] == "forbidden", (st, b[:200])
        st, _, b = get_zip(srv, near, "&county=001")
        assert st == 403, (st, b[:200])
        # a phone exports nothing
        assert get_zip(srv, dev)[0] == 403

        # HEAD: the headers alone, nothing exported
        before = len(audit(srv.data, ends=6))
        c = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        c.sendall(b"HEAD /v1/export?format=files HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  b"Authorization: Bearer " + admin.token.encode() + b"\r\n\r\n")
        got = b""
        while chunk := c.recv(65536):
            got += chunk
        c.close()
        head, _, rest = got.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"application/zip" in head, got[:300]
        assert rest == b"", rest[:100]
        assert len(audit(srv.data)) == before

        # audited: who, the format, sensitive or not; the end counts files
        entries = [e for e in audit(srv.data, ends=6) if e["actor"].startswith("device:")]
        assert [e["action"] for e in entries] == ["export", "export_end"] * 3, entries
        assert entries[0]["format"] == "files" and entries[0]["include_sensitive"] is True
        assert entries[0]["actor"] == "device:" + admin.hex
        assert entries[1]["outcome"] == "complete" and entries[1]["files"] == 4, entries[1]
        assert entries[3]["files"] == 3 and entries[5]["files"] == 2, entries
        assert entries[4]["counties"] == ["047"], entries[4]
    tmp.cleanup()


def test_thousands_of_references_paged_and_spooled():
    """2,100 references (more than one read transaction's page of 2,000;
    a manifest over the 256 KiB kept in memory, so spooled to disk), a
    few of them uploaded: the zip's manifest is still the CLI's."""
    from harness import APPLIED, batch, push, report
    from tusutil import attachment
    tmp = tempfile.TemporaryDirectory(prefix="shahidi-it-form-")
    forms = form_with_open_attachment(os.path.join(tmp.name, "v2.json"))
    with Server(quiet=True, args=["--forms", forms]) as srv:
        dev = phone(srv, "phone 1")
        admin = phone(srv, "admin", role="admin")
        uploaded = []
        for b in range(21):
            changes = []
            for i in range(100):
                c = report(dev)
                c.form_version = 2
                data = os.urandom(64)
                v = attachment(data)
                c.fields.add(field=101, value=v)
                changes.append(c)
                if i == 50:
                    uploaded.append((v.attachment.file_id.hex(), data))
            st, r = push(dev.port, dev, batch(dev, changes))
            assert st == 200 and all(x.status == APPLIED for x in r.results), st
        for fid, data in uploaded:
            upload(dev, fid, data)
        path = os.path.join(srv.tmp.name, "many.zip")
        assert get_zip(srv, admin, "", path)[0] == 200
        files, manifest = check_zip(path)
        assert len(files) == 21 and manifest.count("\r\n") == 1 + 2100, len(files)
        assert len(manifest) > 256 << 10
        assert (files, manifest) == cli_manifest(srv, forms)
    tmp.cleanup()


def fill(srv, dev, n, size):
    """n files of size random bytes, uploaded, in field 101 (not sensitive)."""
    for _ in range(n):
        data = os.urandom(size)
        _, fid = report_with(dev, data, field=101, version=2)
        upload(dev, fid, data)


def test_a_cut_download_is_audited_as_cut():
    tmp = tempfile.TemporaryDirectory(prefix="shahidi-it-form-")
    forms = form_with_open_attachment(os.path.join(tmp.name, "v2.json"))
    with Server(quiet=True, args=["--forms", forms]) as srv:
        dev = phone(srv, "phone 1")
        admin = phone(srv, "admin", role="admin")
        fill(srv, dev, 12, 1 << 20)
        c = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.sendall(b"GET /v1/export?format=files HTTP/1.1\r\nHost: x\r\n"
                  b"Authorization: Bearer " + admin.token.encode() + b"\r\n\r\n")
        got = b""
        while len(got) < 1 << 20:
            chunk = c.recv(65536)
            assert chunk, "the export ended early"
            got += chunk
        entries = audit(srv.data)
        assert [e["action"] for e in entries] == ["export"], entries
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
        entries = audit(srv.data, ends=1)
        assert entries[1]["action"] == "export_end", entries
        assert entries[1]["outcome"] == "cut" and entries[1]["files"] < 12, entries[1]
        assert entries[1]["export_id"] == entries[0]["export_id"]
    tmp.cleanup()


def hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_memory_stays_flat_for_many_files():
    """The server's peak RSS while it zips 5 and 50 files of 1 MiB (a
    server started afresh on the data for each, after the uploads): about
    the same (files are read a MiB at a time, never whole)."""
    tmp = tempfile.TemporaryDirectory(prefix="shahidi-it-form-")
    forms = form_with_open_attachment(os.path.join(tmp.name, "v2.json"))
    peaks = {}
    for n in (5, 50):
        data = os.path.join(tmp.name, f"data{n}")
        with Server(quiet=True, data=data, args=["--forms", forms]) as srv:
            dev = phone(srv, "phone 1")
            admin = phone(srv, "admin", role="admin")
            fill(srv, dev, n, 1 << 20)
        with Server(quiet=True, data=data, args=["--forms", forms]) as srv:
            idle = hwm_kib(srv.proc.pid)
            path = os.path.join(tmp.name, f"{n}.zip")
            st, _, _ = get_zip(srv, admin, "", path)
            assert st == 200
            peaks[n] = (idle, hwm_kib(srv.proc.pid))
            assert len(check_zip(path)[0]) == n
    print(f"   server peak RSS (KiB, idle -> after the zip): 5 files of 1 MiB {peaks[5]}, "
          f"50 files {peaks[50]}")
    grow5, grow50 = peaks[5][1] - peaks[5][0], peaks[50][1] - peaks[50][0]
    if "ASAN_OPTIONS" not in os.environ:  # ASan's quarantine of freed blocks is not ours
        assert grow50 < grow5 + 4096, peaks  # 45 MiB more data, under 4 MiB more memory
    tmp.cleanup()


if __name__ == "__main__":
    run_tests(globals())
