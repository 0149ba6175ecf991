"""Uploads share the event loop: while eight phones stream big PATCHes at
full speed over loopback, the loop takes at most its per-iteration budget of
upload body bytes before it turns to the other connections and to the
completions of the thread pool and the writer (/metrics:
shahidi_upload_read_iteration_max_bytes), and /healthz keeps answering.
While requests are answered back to back, uploads give way but are not
starved: they keep a floor of a budget every UPLOAD_HOLD_MS."""
import os
import socket
import statistics
import threading
import time

from harness import (APPLIED, Server, Worker, batch, join_all, metric, push, report, request,
                     run_tests, workers)
from tusutil import create, phone, report_with, tus

PHONES = 8
MB = 16
BUDGET = 256 << 10   # server/http_int.h: UPLOAD_READ_BUDGET


def patch_stream(dev, fid, first, blob):
    """One PATCH of first + blob (sent from the one buffer, not copied),
    as fast as the socket takes it, after the server's 100 Continue (so
    that no body byte comes in the read that carries the headers); returns
    its status."""
    s = socket.create_connection(("127.0.0.1", dev.port), timeout=120)
    try:
        h = tus(dev, **{"Upload-Offset": "0", "Host": "127.0.0.1", "Connection": "close",
                        "Content-Type": "application/offset+octet-stream",
                        "Expect": "100-continue", "Content-Length": str(1 + len(blob))})
        s.sendall((f"PATCH /v1/files/{fid} HTTP/1.1\r\n" +
                   "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n").encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            c = s.recv(4096)
            if not c:
                raise ConnectionError("no answer")
            buf += c
        assert buf.startswith(b"HTTP/1.1 100 "), buf
        s.sendall(first)
        s.sendall(memoryview(blob))
        buf = buf.split(b"\r\n\r\n", 1)[1]
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

        poller = Worker(poll)  # a /healthz that fails fails the test (join re-raises)
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
        # Each read of a body is given no more than what is left of the
        # iteration's budget (the headers came in reads of their own).
        assert most <= BUDGET, most
        assert len(during) >= 20, len(during)
        assert p99(during) < 1.0, p99(during)  # a stall, not a slow machine


def test_uploads_go_on_while_pushes_never_stop():
    """Four phones push back to back (some push is always being answered,
    so uploads are held whenever they may be): a 16 MB upload still
    completes, at no less than the floor's 25 MB/s (bounded generously:
    a shared machine), and the holds are counted."""
    blob = os.urandom((MB << 20) - 1)
    with Server(quiet=True) as s:
        admin = phone(s, "admin", role="admin")
        up = phone(s, "uploader")
        _, fid = report_with(up, b"u" + blob)
        assert create(up, fid, 1 + len(blob))[0] == 201
        done, pushed = threading.Event(), [0]

        def pusher(d):
            while not done.is_set():
                st, r = push(d.port, d, batch(d, [report(d) for _ in range(20)]))
                assert st == 200 and all(x.status == APPLIED for x in r.results), st
                pushed[0] += 1

        ps = workers(pusher, [phone(s, f"pusher{i}") for i in range(4)])
        try:
            time.sleep(0.3)  # pushes under way
            t0 = time.monotonic()
            st = patch_stream(up, fid, b"u", blob)
            took = time.monotonic() - t0
        finally:
            done.set()
            join_all(ps, timeout=60)
        assert st == 204, st
        st, _, body = request(s.port, "GET", "/metrics",
                              headers={"Authorization": f"Bearer {admin.token}"})
        deferred = metric(body.decode(), 'shahidi_upload_reads_deferred_total{reason="others"}')
        print(f"{MB} MB in {took:.2f} s ({MB / took:.0f} MB/s) under {pushed[0]} pushes; "
              f"{deferred:.0f} upload reads deferred for them")
        assert deferred > 0
        assert took < 30, took


run_tests(globals())
