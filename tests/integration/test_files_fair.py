"""Uploads share the event loop: while eight phones stream big PATCHes at
full speed over loopback, the loop takes at most its per-iteration budget of
upload body bytes before it turns to the other connections and to the
completions of the thread pool and the writer (/metrics:
shahidi_upload_read_iteration_max_bytes), and /healthz keeps answering
quickly. Every upload still completes with the right hash."""
import os
import socket
import statistics
import threading
import time

from harness import Server, join_all, metric, request, run_tests, workers
from tusutil import create, phone, report_with, tus

PHONES = 8
MB = 16
BUDGET = 256 << 10   # server/http_int.h: UPLOAD_READ_BUDGET
READ = 64 << 10      # server/http_int.h: READ_CHUNK


def patch_stream(dev, fid, first, blob):
    """One PATCH of first + blob (sent from the one buffer, not copied),
    as fast as the socket takes it; returns its status."""
    s = socket.create_connection(("127.0.0.1", dev.port), timeout=120)
    try:
        h = tus(dev, **{"Upload-Offset": "0", "Host": "127.0.0.1", "Connection": "close",
                        "Content-Type": "application/offset+octet-stream",
                        "Content-Length": str(1 + len(blob))})
        s.sendall((f"PATCH /v1/files/{fid} HTTP/1.1\r\n" +
                   "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n").encode() + first)
        s.sendall(memoryview(blob))
        buf = b""
        while b"\r\n\r\n" not in buf:
            c = s.recv(4096)
            if not c:
                raise ConnectionError("no answer")
            buf += c
        return int(buf.split()[1])
    finally:
        s.close()


def p99(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * 0.99))]


def test_uploads_leave_the_loop_to_others():
    blob = os.urandom((MB << 20) - 1)
    with Server(quiet=True) as s:
        admin = phone(s, "admin", role="admin")
        ups = []
        for i in range(PHONES):
            d = phone(s, f"p{i}")
            first = bytes([i])  # each phone's own file
            _, fid = report_with(d, first + blob)
            assert create(d, fid, 1 + len(blob))[0] == 201
            ups.append((d, fid, first))

        def healthz_alone(n):
            out = []
            for _ in range(n):
                t = time.monotonic()
                assert request(s.port, "GET", "/healthz")[0] == 200
                out.append(time.monotonic() - t)
            return out

        alone = healthz_alone(100)
        during, done = [], threading.Event()

        def poll():
            while not done.is_set():
                t = time.monotonic()
                assert request(s.port, "GET", "/healthz")[0] == 200
                during.append(time.monotonic() - t)
                time.sleep(0.002)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        t0 = time.monotonic()
        def upload(u):
            d, fid, first = u
            st = patch_stream(d, fid, first, blob)
            assert st == 204, st

        ws = workers(upload, ups)
        try:
            join_all(ws, timeout=120)
        finally:
            done.set()
            poller.join(30)
        took = time.monotonic() - t0
        for d, fid, _ in ups:
            st, h, _ = request(s.port, "HEAD", f"/v1/files/{fid}", headers=tus(d))
            assert int(h["upload-offset"]) == MB << 20, h

        print(f"{PHONES} x {MB} MB in {took:.2f} s ({PHONES * MB / took:.0f} MB/s); "
              f"/healthz p50/p99 alone {1000 * statistics.median(alone):.1f}/"
              f"{1000 * p99(alone):.1f} ms, during {1000 * statistics.median(during):.1f}/"
              f"{1000 * p99(during):.1f} ms ({len(during)} polls)", flush=True)
        st, _, body = request(s.port, "GET", "/metrics",
                              headers={"Authorization": f"Bearer {admin.token}"})
        assert st == 200, st
        most = metric(body.decode(), "shahidi_upload_read_iteration_max_bytes")
        print(f"most upload body bytes read in one loop iteration: {most / 1024:.0f} KiB")
        # The budget, overshot by at most one read of each connection
        # whose headers came in the same read as its body's start.
        assert most <= BUDGET + (PHONES + 1) * READ, most
        assert len(during) >= 20, len(during)


run_tests(globals())
