"""Attachments under the rules of the records that name them: erasing a
record removes its files (unless a record not erased names the same bytes;
410 afterwards, none of the bytes in the data directory or a later backup),
and downloads follow the export's sensitive-field rules (a coordinator
only within its counties and never a file of a sensitive field, a phone
only for records it holds, an admin anywhere)."""
import base64
import hashlib
import json
import os
import subprocess

from harness import (APPLIED, SANITIZED, SRC, Device, Server, assign, batch, cli, pb, push, report,
                     request, run_tests)
from tusutil import attachment, create, patch, phone, report_with, tus


def upload(dev, fid, data, upto=None):
    assert create(dev, fid, len(data))[0] == 201
    st, h, _ = patch(dev, fid, 0, data[:upto])
    assert st == 204, st


def head(dev, fid):
    return request(dev.port, "HEAD", f"/v1/files/{fid}", headers=tus(dev))


def head_status(dev, fid):
    """A HEAD's status (no body follows, whatever Content-Length says)."""
    import socket
    s = socket.create_connection(("127.0.0.1", dev.port), timeout=30)
    try:
        s.sendall(f"HEAD /v1/files/{fid} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  f"Authorization: Bearer {dev.token}\r\n\r\n".encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            c = s.recv(4096)
            if not c:
                break
            buf += c
        return int(buf.split()[1])
    finally:
        s.close()


def download(dev, fid):
    return request(dev.port, "GET", f"/v1/files/{fid}",
                   headers={"Authorization": f"Bearer {dev.token}"})


def error(body):
    return json.loads(body)["error"]


def pattern():
    """64 random bytes, no newline: what grep looks for."""
    while True:
        p = os.urandom(64)
        if b"\n" not in p:
            return p


def grep(pat, directory):
    """The files under directory that hold pat, by grep itself."""
    pf = os.path.join(os.path.dirname(directory.rstrip("/")), "pattern")
    with open(pf, "wb") as f:
        f.write(pat + b"\n")
    p = subprocess.run(["grep", "-rlaF", "-f", pf, directory], capture_output=True)
    os.unlink(pf)
    assert p.returncode in (0, 1), p.stderr
    return p.stdout.decode().split()


def with_pattern(pat, size=200000):
    a = os.urandom(size)
    return a[:size // 2] + pat + a[size // 2:]


def test_erasure_removes_the_records_files():
    with Server(quiet=True) as srv:
        dev = phone(srv, "phone 1")
        admin = phone(srv, "admin", role="admin")
        coord = phone(srv, "coordinator nairobi", role="coordinator")
        p_own, p_part, p_shared = pattern(), pattern(), pattern()
        own, part, shared = with_pattern(p_own), with_pattern(p_part), with_pattern(p_shared)
        # the erased record names: a complete file, one half uploaded, and
        # bytes that a second record (not erased) names too
        c = report(dev)
        fids, changes, prev = [], [c], None
        for data in (own, part, shared):  # the photo replaced twice: all three named
            v = attachment(data)
            if prev is None:
                ch = c
            else:
                ch = pb.Change(change_id=dev.next_change, record_id=c.record_id,
                               form_id="incident_report", form_version=1, hlc=dev.hlc())
                dev.next_change += 1
                changes.append(ch)
            fw = ch.fields.add(field=100, value=v)
            if prev is not None:
                fw.supersedes.add(hlc=prev, device=dev.id)
            prev = ch.hlc
            fids.append(v.attachment.file_id.hex())
        r = push(dev.port, dev, batch(dev, changes))[1]
        assert [x.status for x in r.results] == [APPLIED] * 3, r
        rid = str(__import__("uuid").UUID(bytes=c.record_id))
        f_own, f_part, f_shared = fids
        _, f_other = report_with(dev, shared)
        upload(dev, f_own, own)
        upload(dev, f_part, part, upto=len(part) // 2 + 100)  # the pattern is in it
        upload(dev, f_shared, shared)
        assert head(dev, f_other)[1]["upload-offset"] == str(len(shared))  # stored once
        for p in (p_own, p_part, p_shared):
            assert grep(p, srv.data), "the bytes are on disk before"
        assert srv.stop() == 0

        _, out, _ = cli("erase", "--data", srv.data, "--as", admin.hex, "--record", rid,
                        "--reason", "data subject's request, ref DPA-2026-15")
        assert ("attachments: 1 file(s) removed, 1 kept (named by a record not erased), "
                "1 upload(s) in progress dropped") in out, out
        assert grep(p_own, srv.data) == [] and grep(p_part, srv.data) == [], \
            "no byte of the erased record's own files is left in the data directory"
        assert grep(p_shared, srv.data), "bytes another record names are kept"
        _, out, _ = cli("audit", "--data", srv.data)
        entry = [json.loads(ln) for ln in out.splitlines() if '"action":"erase"' in ln][-1]
        d = entry["details"] if "details" in entry else entry
        assert (d["files_removed"], d["files_kept"], d["uploads_dropped"]) == (1, 1, 1), entry
        for secret in (f_own, f_part, hashlib.sha256(own).hexdigest()):
            assert secret not in out, "the audit names no file"
        backup = os.path.join(srv.tmp.name, "backup")
        cli("backup", "--data", srv.data, backup)
        assert grep(p_own, backup) == [] and grep(p_part, backup) == []
        assert grep(p_shared, backup)
        rc, out, _ = cli("verify", "--data", srv.data, check=False)
        assert rc == 0 and "all equal" in out, out

        srv.start()
        for who in (dev, admin, coord):
            who.port = srv.port
        for fid in (f_own, f_shared):
            st, _, b = download(admin, fid)
            assert st == 410 and error(b) == "file_erased", (st, b[:200])
        st, _, b = download(dev, f_own)
        assert st == 410 and error(b) == "file_erased", (st, b[:200])
        assert head_status(dev, f_part) == 410
        st, _, b = patch(dev, f_part, len(part) // 2 + 100, part[len(part) // 2 + 100:])
        assert st == 410 and error(b) == "file_erased", (st, b[:200])
        st, _, b = create(dev, f_part, len(part))
        assert st == 410 and error(b) == "file_erased", (st, b[:200])
        assert grep(p_part, srv.data) == [], "nothing was written for the refused PATCH"
        st, _, body = download(dev, f_other)
        assert st == 200 and body == shared


def test_erasure_of_the_last_record_naming_shared_bytes():
    with Server(quiet=True) as srv:
        dev = phone(srv, "phone 1")
        admin = phone(srv, "admin", role="admin")
        pat = pattern()
        data = with_pattern(pat)
        r1, f1 = report_with(dev, data)
        r2, f2 = report_with(dev, data)
        upload(dev, f1, data)
        assert head(dev, f2)[1]["upload-offset"] == str(len(data))
        assert srv.stop() == 0
        ids = [str(__import__("uuid").UUID(bytes=r)) for r in (r1, r2)]
        _, out, _ = cli("erase", "--data", srv.data, "--as", admin.hex, "--record", ids[0],
                        "--reason", "request 1")
        assert "attachments: 0 file(s) removed, 1 kept" in out, out
        assert grep(pat, srv.data)
        _, out, _ = cli("erase", "--data", srv.data, "--as", admin.hex, "--record", ids[1],
                        "--reason", "request 2")
        assert "attachments: 1 file(s) removed, 0 kept" in out, out
        assert grep(pat, srv.data) == []
        srv.start()
        dev.port = srv.port
        for f in (f1, f2):
            st, _, b = download(dev, f)
            assert st == 410 and error(b) == "file_erased", (st, b[:200])
        # a record without attachments: the erasure says so
        r3 = report(dev)
        assert push(dev.port, dev, batch(dev, [r3]))[1].results[0].status == APPLIED
        assert srv.stop() == 0
        _, out, _ = cli("erase", "--data", srv.data, "--as", admin.hex, "--record",
                        str(__import__("uuid").UUID(bytes=r3.record_id)), "--reason", "r3")
        assert "attachments: none" in out, out
        srv.start()


def test_erasure_keeps_an_upload_another_record_names():
    """Two records name the same file id (the phone attached it twice): an
    upload half done survives the first one's erasure and goes with the
    second's."""
    import uuid
    with Server(quiet=True) as srv:
        dev = phone(srv, "phone 1")
        admin = phone(srv, "admin", role="admin")
        pat = pattern()
        data = with_pattern(pat)
        fid = os.urandom(16)
        r1, f = report_with(dev, data, file_id=fid)
        r2, _ = report_with(dev, data, file_id=fid)
        upload(dev, f, data, upto=len(data) // 2 + 100)
        assert srv.stop() == 0
        _, out, _ = cli("erase", "--data", srv.data, "--as", admin.hex, "--record",
                        str(uuid.UUID(bytes=r1)), "--reason", "request 1")
        assert "0 file(s) removed, 0 kept (named by a record not erased), 0 upload(s) " \
               "in progress dropped" in out, out
        assert grep(pat, srv.data)
        srv.start()
        dev.port = srv.port
        st, h, _ = head(dev, f)
        assert st == 200 and h["upload-offset"] == str(len(data) // 2 + 100), (st, h)
        assert srv.stop() == 0
        _, out, _ = cli("erase", "--data", srv.data, "--as", admin.hex, "--record",
                        str(uuid.UUID(bytes=r2)), "--reason", "request 2")
        assert "1 upload(s) in progress dropped" in out, out
        assert grep(pat, srv.data) == []
        srv.start()
        dev.port = srv.port
        assert head_status(dev, f) == 410


def form_with_open_attachment(path):
    """Version 2 of the incident report with field 101, a scene photo
    (an attachment not marked sensitive)."""
    with open(os.path.join(SRC, "tests", "fixtures", "incident_report.v2.json")) as f:
        form = json.load(f)
    form["fields"].append({"number": 101, "name": "scene_photo", "section": "incident",
                           "type": "attachment", "label": "Photo of the scene"})
    with open(path, "w") as f:
        json.dump(form, f)
    return path


def test_downloads_follow_the_sensitive_rules():
    import tempfile
    tmp = tempfile.TemporaryDirectory(prefix="shahidi-it-form-")
    forms = form_with_open_attachment(os.path.join(tmp.name, "v2.json"))
    with Server(quiet=True, args=["--forms", forms]) as srv:
        dev = phone(srv, "phone 1")
        other = phone(srv, "phone 2")
        near = phone(srv, "coordinator nairobi", role="coordinator")
        far = phone(srv, "coordinator mombasa", county="001", role="coordinator")
        admin = phone(srv, "admin", role="admin")
        photo, scene = os.urandom(30000), os.urandom(20000)
        rid, f_photo = report_with(dev, photo)                      # field 100: sensitive
        _, f_scene = report_with(dev, scene, field=101, version=2)  # field 101: not
        upload(dev, f_photo, photo)
        upload(dev, f_scene, scene)

        # refusals, each with its status and its reason
        st, _, b = download(near, f_photo)
        assert st == 403 and error(b) == "sensitive_field", (st, b[:200])
        assert "admin" in json.loads(b)["message"], b
        assert head_status(near, f_photo) == 403
        for who, fid in ((far, f_photo), (far, f_scene), (other, f_photo), (other, f_scene)):
            st, _, b = download(who, fid)
            assert st == 404 and error(b) == "not_found", (who.name, fid, st, b[:200])
        st, _, b = download(near, os.urandom(16).hex())
        assert st == 404 and error(b) == "not_found", (st, b[:200])

        # allowed: the phone that holds the record, sensitive or not; a
        # coordinator in its county for a field that is not sensitive; an admin
        for who, fid, data in ((dev, f_photo, photo), (dev, f_scene, scene),
                               (near, f_scene, scene), (admin, f_photo, photo),
                               (admin, f_scene, scene)):
            st, _, body = download(who, fid)
            assert st == 200 and body == data, (who.name, fid, st)
        # a phone assigned the record holds it too
        assign(srv.data, rid, other)
        st, _, body = download(other, f_photo)
        assert st == 200 and body == photo
        # every office download is in the audit log before its first byte
        # (as every export is): who, which record and field, how many bytes
        _, out, _ = cli("audit", "--data", srv.data)
        got = sorted((e["actor"], e["field"], e["bytes"]) for e in map(json.loads, out.splitlines())
                     if e["action"] == "download")
        assert got == sorted([(f"device:{near.hex}", 101, len(scene)),
                              (f"device:{admin.hex}", 100, len(photo)),
                              (f"device:{admin.hex}", 101, len(scene))]), got
        ids = [e["record_id"] for e in map(json.loads, out.splitlines())
               if e["action"] == "download" and e["field"] == 100]
        assert ids == [str(__import__("uuid").UUID(bytes=rid))], ids
        assert f_photo not in out and hashlib.sha256(photo).hexdigest() not in out
    tmp.cleanup()


def test_upload_rate_caps_the_disk_writes():
    """--upload-rate 1M: 3 MiB in one PATCH is acknowledged after 2 s at the
    earliest (its first MiB goes at once), and arrives whole."""
    import time
    with Server(quiet=True, args=["--upload-rate", "1M"]) as srv:
        dev = phone(srv, "phone 1")
        data = os.urandom(3 << 20)
        _, fid = report_with(dev, data)
        assert create(dev, fid, len(data))[0] == 201
        t0 = time.time()
        st, h, _ = patch(dev, fid, 0, data)
        took = time.time() - t0
        assert st == 204 and h["upload-offset"] == str(len(data)), (st, h)
        assert took >= 1.9, took
        print(f"   3 MiB at --upload-rate 1M: {took:.2f} s")
        st, _, body = download(dev, fid)
        assert st == 200 and body == data
    st = __import__("subprocess").run(
        [os.path.join(os.environ["SHAHIDI_BUILD"], "server", "shahidi-server"),
         "--upload-rate", "fast"], capture_output=True, text=True, timeout=30)
    assert st.returncode == 2 and "--upload-rate" in st.stderr, (st.returncode, st.stderr)


def cpu_seconds(pid):
    """CPU time of a process so far, in seconds, to the nanosecond: the
    sum of its threads' run time in /proc/PID/task/*/schedstat (utime and
    stime in /proc/PID/stat count 10 ms ticks, a quarter of a download)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except FileNotFoundError:
            pass  # a thread that ended meanwhile
    return total / 1e9


def test_a_50mb_download_its_bytes_and_the_servers_cpu():
    """GET /v1/files/ID of 50 MB: every byte right (and a Range of its
    middle), and the server's CPU time for it printed beside a bare
    sendfile(2) loop's for the same file over loopback (the README's
    Attachments section says why downloads do not use sendfile)."""
    import socket
    import time
    with Server(quiet=True) as srv:
        dev = phone(srv, "phone 1")
        data = os.urandom(50 << 20)
        _, fid = report_with(dev, data)
        upload(dev, fid, data)
        runs = []
        for _ in range(3):
            c0 = cpu_seconds(srv.proc.pid)
            st, h, body = download(dev, fid)
            runs.append(cpu_seconds(srv.proc.pid) - c0)
            assert st == 200 and len(body) == len(data), (st, len(body))
            assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
        # The least of three: a download that shares its core with other
        # tests or loses it to the hypervisor costs more CPU time (caches,
        # TLB) than the server's code does; a copy too many costs it in
        # every one of the three (one clean-clone CI run saw 7.6 s/GB
        # under ASan where reruns gave 2.2).
        best = min(runs)
        st, _, body = request(dev.port, "GET", f"/v1/files/{fid}", headers={
            "Authorization": f"Bearer {dev.token}", "Range": "bytes=20000000-20999999"})
        assert st == 206 and body == data[20000000:21000000], st
        # a bare sendfile loop, same file, same loopback, as the floor: the
        # sending thread's CPU time (a second thread drains the socket)
        import threading
        path = os.path.join(srv.data, "files", "sha256", hashlib.sha256(data).hexdigest())
        lst = socket.socket()
        lst.bind(("127.0.0.1", 0))
        lst.listen(1)
        rcv = socket.create_connection(lst.getsockname())
        snd, _ = lst.accept()
        got = [0]

        def drain():
            while chunk := rcv.recv(1 << 20):
                got[0] += len(chunk)
        t = threading.Thread(target=drain, daemon=True)
        t.start()
        floor = None
        for _ in range(3):
            t0 = time.thread_time()
            with open(path, "rb") as f:
                off, n = 0, len(data)
                while off < n:
                    off += os.sendfile(snd.fileno(), f.fileno(), off, n - off)
            took = time.thread_time() - t0
            floor = took if floor is None else min(floor, took)
        snd.shutdown(socket.SHUT_WR)
        t.join(30)
        assert got[0] == 3 * len(data), got
        for x in (snd, rcv, lst):
            x.close()
    gb = len(data) / 1e9
    print(f"   server CPU for a 50 MiB download: {best:.3f} s ({best / gb:.2f} s/GB; "
          f"the three: {', '.join(f'{t:.3f}' for t in runs)}); "
          f"a bare sendfile loop's sender: {floor:.3f} s ({floor / gb:.2f} s/GB)")
    # About 0.8 s/GB on the machine of the README's figures; on 2026-12-01,
    # a slow hour on the same VM, 3.0-3.8 on this build and 15.6 under
    # the sanitizers, with the bare sendfile loop at 0.09-0.74 where it had
    # been 0.10. The bound is for gross faults (chunks far too small, a read
    # per byte): 6 s/GB, or 40 times the sendfile loop's when this machine is
    # slow. Under the sanitizers (every copy's ranges checked) the figure
    # is printed, not bounded: the plain build's run is the guard.
    if SANITIZED:
        return
    assert best / gb < max(6.0, 40 * floor / gb), (best, runs, floor)


if __name__ == "__main__":
    run_tests(globals())
