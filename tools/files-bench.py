#!/usr/bin/python3
"""Upload throughput: N phones each upload one M-MB attachment at once over
tus PATCHes (4 MiB each, every one fdatasync'd before its answer), beside
the raw speed of the same disk measured in the same run (the same bytes
written sequentially in files of M MB, each fdatasync'd), the server's
resident memory above idle, sampled every 20 ms, and the latency of a
phone pushing 20 reports at a time every 50 ms (a process of its own),
alone and while the uploads run, with the server's own durable commit
latency and its own push latency in both phases (from /metrics: their
means, and the share of commits over 20 ms), which tell the disk's and the
server's part from the rest of a shared machine's; the upload reads the
server held back for other requests, and the CPU the server and the
uploading phones used during the uploads.

    tools/files-bench.py [--phones 16] [--mb 20] [--build build] [--dir DIR]
                         [--server-arg ARG]...

DIR (default: a new directory under the current one, so on the disk the
server would use) is removed afterwards. Talks only to 127.0.0.1.
"""
import argparse
import hashlib
import multiprocessing
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import base64

ap = argparse.ArgumentParser()
ap.add_argument("--phones", type=int, default=16)
ap.add_argument("--mb", type=int, default=20)
ap.add_argument("--build", default="build")
ap.add_argument("--dir", default=None)
ap.add_argument("--server-arg", action="append", default=[],
                help="one more argument for shahidi-server (e.g. --server-arg=--upload-rate=50M)")
args = ap.parse_args()
sys.path.insert(0, os.path.join(args.build, "tests"))
import shahidi_pb2 as pb  # noqa: E402

CHUNK = 4 << 20
root = tempfile.mkdtemp(prefix="files-bench-", dir=args.dir or ".")
data_dir = os.path.join(root, "data")
size = args.mb << 20


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def cpu_s(pid):
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        st = f.read().rsplit(")", 1)[1].split()
    return (int(st[11]) + int(st[12])) / os.sysconf("SC_CLK_TCK")


def call(port, method, path, headers, body=b"", want_body=False):
    s = socket.create_connection(("127.0.0.1", port), timeout=120)
    try:
        h = {"Host": "127.0.0.1", "Content-Length": str(len(body)), "Connection": "close",
             "Tus-Resumable": "1.0.0", **headers}
        s.sendall((f"{method} {path} HTTP/1.1\r\n" +
                   "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n").encode())
        if body:
            s.sendall(body)
        buf = b""
        while b"\r\n\r\n" not in buf:
            c = s.recv(65536)
            if not c:
                raise ConnectionError("no answer")
            buf += c
        head, rest = buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        hdrs = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
        if want_body:
            while len(rest) < int(hdrs.get("content-length", "0")):
                c = s.recv(65536)
                if not c:
                    break
                rest += c
            return int(lines[0].split()[1]), hdrs, rest
        return int(lines[0].split()[1]), hdrs
    finally:
        s.close()


try:
    # the raw disk: the same bytes, written and synced the same way
    blob = os.urandom(size)
    raw_dir = os.path.join(root, "raw")
    os.mkdir(raw_dir)
    t0 = time.time()
    for i in range(args.phones):
        fd = os.open(os.path.join(raw_dir, str(i)), os.O_WRONLY | os.O_CREAT, 0o600)
        for off in range(0, size, CHUNK):
            os.write(fd, blob[off:off + CHUNK])
            os.fdatasync(fd)
        os.close(fd)
    raw_mbs = args.phones * args.mb / (time.time() - t0)
    shutil.rmtree(raw_dir)

    cli = os.path.join(args.build, "tools", "shahidi")
    phones = []
    for i in range(args.phones):
        out = subprocess.run([cli, "device", "enroll", "--data", data_dir, "--name", f"p{i}",
                              "--county", "047"], capture_output=True, text=True,
                             check=True).stdout
        dev = int(re.search(r"^device ([0-9a-f]{16})$", out, re.M).group(1), 16)
        tok = re.search(r"^token +(\S+)$", out, re.M).group(1)
        phones.append((dev, tok))
    out = subprocess.run([cli, "device", "enroll", "--data", data_dir, "--name", "admin",
                          "--county", "047", "--role", "admin"], capture_output=True, text=True,
                         check=True).stdout
    atok = re.search(r"^token +(\S+)$", out, re.M).group(1)
    srv = subprocess.Popen([os.path.join(args.build, "server", "shahidi-server"), "--data",
                            data_dir, "--listen", "127.0.0.1:0", "--quiet", *args.server_arg],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    port = int(srv.stdout.readline().decode().strip().rsplit(":", 1)[1])
    def change(i, fid=None, body=None):
        c = pb.Change(change_id=i, record_id=os.urandom(16), form_id="incident_report",
                      form_version=1, hlc=int(time.time() * 1000) << 16, create=True)
        for field, kind, v in [(1, "choice", "submitted"), (10, "choice", "survivor"),
                               (11, "choice", "signed"), (12, "date", "2026-11-20"),
                               (13, "boolean", True), (30, "text", "SV-1"),
                               (51, "choice", "exact"), (53, "choice", "047"),
                               (62, "text", "bench")]:
            val = pb.Value()
            setattr(val, kind, v)
            c.fields.add(field=field, value=val)
        c.fields.add(field=59).value.choices.codes.append("torture")
        if fid:
            a = c.fields.add(field=100).value.attachment
            a.file_id, a.sha256, a.size, a.media_type = fid, hashlib.sha256(body).digest(), \
                size, "image/jpeg"
        return c

    # a phone that only pushes: its latency alone and while the uploads run
    out = subprocess.run([cli, "device", "enroll", "--data", data_dir, "--name", "pusher",
                          "--county", "047"], capture_output=True, text=True, check=True).stdout
    pdev = int(re.search(r"^device ([0-9a-f]{16})$", out, re.M).group(1), 16)
    ptok = re.search(r"^token +(\S+)$", out, re.M).group(1)
    pseq = [0]

    def one_push():
        pseq[0] += 1
        b = pb.PushBatch(device=pdev, batch_seq=pseq[0], sent_hlc=int(time.time() * 1000) << 16)
        b.changes.extend(change(pseq[0] * 100 + k) for k in range(20))
        t = time.time()
        st, _ = call(port, "POST", "/v1/push", {"Authorization": f"Bearer {ptok}"},
                     b.SerializeToString())
        assert st == 200, st
        return (time.time() - t) * 1000

    def commits():
        """(count, sum of seconds, count within 20 ms) of the server's commits,
        and (count, sum of seconds) of its pushes (first byte to answer)."""
        st, _, body = call(port, "GET", "/metrics", {"Authorization": f"Bearer {atok}"},
                           want_body=True)
        assert st == 200, st
        t = body.decode()
        n = int(re.search(r"^shahidi_commit_seconds_count (\d+)", t, re.M).group(1))
        total = float(re.search(r"^shahidi_commit_seconds_sum (\S+)", t, re.M).group(1))
        fast = int(re.search(r'^shahidi_commit_seconds_bucket\{le="0.02"\} (\d+)', t,
                             re.M).group(1))
        pn = re.search(r'^shahidi_http_request_duration_seconds_count\{route="push"\} (\d+)',
                       t, re.M)
        ps = re.search(r'^shahidi_http_request_duration_seconds_sum\{route="push"\} (\S+)',
                       t, re.M)
        held = re.search(r'^shahidi_upload_reads_deferred_total\{reason="others"\} (\d+)', t, re.M)
        return (n, total, fast, int(pn.group(1)) if pn else 0, float(ps.group(1)) if ps else 0,
                int(held.group(1)) if held else 0)

    def commit_figures(a, b):
        n, total, fast, pn, ps = (b[i] - a[i] for i in range(5))
        return (f"{n} commits, mean {1000 * total / max(n, 1):.1f} ms, "
                f"{100 * (n - fast) / max(n, 1):.0f}% over 20 ms; its pushes' mean "
                f"{1000 * ps / max(pn, 1):.1f} ms")

    def p99(xs):
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(len(xs) * 0.99))], xs[len(xs) // 2]

    files = []
    for i, (dev, tok) in enumerate(phones):
        body = bytes([i]) + blob[1:]  # each phone's own file
        fid = os.urandom(16)
        c = change(1, fid, body)
        b = pb.PushBatch(device=dev, batch_seq=1, sent_hlc=c.hlc)
        b.changes.append(c)
        st, _ = call(port, "POST", "/v1/push", {"Authorization": f"Bearer {tok}"},
                     b.SerializeToString())
        assert st == 200, st
        md = "fileid " + base64.b64encode(fid.hex().encode()).decode()
        st, _ = call(port, "POST", "/v1/files/", {"Authorization": f"Bearer {tok}",
                                                  "Upload-Length": str(size),
                                                  "Upload-Metadata": md})
        assert st == 201, st
        files.append((tok, fid.hex(), body))
    time.sleep(0.5)
    idle = rss_kb(srv.pid)
    peak = [idle]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_kb(srv.pid))
            time.sleep(0.02)

    def upload(tok, fid, body):
        for off in range(0, size, CHUNK):
            st, h = call(port, "PATCH", f"/v1/files/{fid}",
                         {"Authorization": f"Bearer {tok}", "Upload-Offset": str(off),
                          "Content-Type": "application/offset+octet-stream"},
                         body[off:off + CHUNK])
            assert st == 204, st

    c0 = commits()
    # pushes at a fixed pace (PACE s apart, or right after the last when it
    # took longer), so that faster pushes do not mean more commits
    PACE = 0.05

    def paced(n=None, stop=None):
        out, nxt = [], time.time()
        while (len(out) < n) if n else not stop.is_set():
            out.append(one_push())
            nxt += PACE
            time.sleep(max(0, nxt - time.time()))
        return out

    # The pushing phone is a process of its own: in this one, sixteen
    # uploading threads take Python's lock in turns (up to 5 ms each), and
    # the pushes' latency measured here was mostly that wait.
    ctx = multiprocessing.get_context("fork")

    def pushing(n, first_seq, stop, go, out):
        pseq[0] = first_seq
        if go:
            go.wait()
        out.send(paced(n, stop))
        out.close()

    def phone_process(n, first_seq, stop=None, go=None):
        rx, tx = ctx.Pipe(duplex=False)
        pr = ctx.Process(target=pushing, args=(n, first_seq, stop, go, tx))
        pr.start()
        return pr, rx

    pr, rx = phone_process(40, 0)
    alone = rx.recv()
    pr.join()
    c1 = commits()
    stop_pushing = ctx.Event()
    go = ctx.Event()
    pr, rx = phone_process(None, 1000, stop_pushing, go)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    ws = [threading.Thread(target=upload, args=f) for f in files]
    cpu0 = cpu_s(srv.pid), cpu_s(os.getpid())
    t0 = time.time()
    go.set()
    for w in ws:
        w.start()
    for w in ws:
        w.join()
    took = time.time() - t0
    cpu1 = cpu_s(srv.pid), cpu_s(os.getpid())
    done.set()
    stop_pushing.set()
    during = rx.recv()
    pr.join()
    sampler.join()
    c2 = commits()
    srv.terminate()
    srv.wait(30)
    stored = len(os.listdir(os.path.join(data_dir, "files", "sha256")))
    mbs = args.phones * args.mb / took
    print(f"{args.phones} phones x {args.mb} MB: {mbs:.0f} MB/s ({took:.2f} s), "
          f"raw write+fdatasync of the same disk {raw_mbs:.0f} MB/s "
          f"({100 * mbs / raw_mbs:.0f}%); {stored} files stored; server RSS idle "
          f"{idle / 1024:.1f} MB, peak {peak[0] / 1024:.1f} MB "
          f"(+{(peak[0] - idle) / 1024:.1f} MB)")
    a99, a50 = p99(alone)
    d99, d50 = p99(during)
    print(f"push of 20 reports: p50/p99 {a50:.1f}/{a99:.1f} ms alone, {d50:.1f}/{d99:.1f} ms "
          f"during the uploads ({len(during)} pushes)")
    print(f"server's commits: alone {commit_figures(c0, c1)}; during the uploads "
          f"{commit_figures(c1, c2)}; upload reads held back for other requests "
          f"{c2[5] - c1[5]}")
    print(f"CPU during the uploads ({took:.2f} s, {os.cpu_count()} cores): server "
          f"{cpu1[0] - cpu0[0]:.2f} s, the uploading phones (this process, with its kernel "
          f"time) {cpu1[1] - cpu0[1]:.2f} s")
finally:
    shutil.rmtree(root, ignore_errors=True)
