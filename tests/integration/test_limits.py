"""Every limit of the server hit once: the status it answers with, and the
store unchanged afterwards (its records digest and log head)."""
import json
import re
import socket
import time
import uuid
import zlib

from harness import (Device, Server, batch, cli, deflate, edit, metric, pb, pull, push,
                     read_response, report, request, run_tests, store_state)

ARGS = ["--max-body", "64K", "--max-inflated", "1M", "--max-changes", "10",
        "--max-header", "4K", "--header-timeout", "0.5", "--body-timeout", "0.5",
        "--idle-timeout", "0.5", "--max-conns", "6"]


def headers_only(port, head):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(head.encode())
    return s


def check_closed(s, within=5):
    s.settimeout(within)
    try:
        data = s.recv(1)
    except ConnectionResetError:
        data = b""
    assert data == b"", data


def test_limits():
    with Server(args=ARGS) as s:
        a = Device(s.data, "phone")
        st, r = push(s.port, a, batch(a, [report(a)]))
        assert st == 200
        before = store_state(s.data)
        auth = f"Authorization: Bearer {a.token}\r\n"

        # Compressed body over --max-body: refused from its headers alone.
        c = headers_only(s.port, "POST /v1/push HTTP/1.1\r\nHost: x\r\n" + auth +
                         "Content-Length: 100000\r\nContent-Encoding: deflate\r\n\r\n")
        st, h, b, _ = read_response(c)
        assert st == 413 and b"body_too_large" in b and h["connection"] == "close"
        check_closed(c)

        # A zip bomb: 64 MiB of zeros in ~64 KiB. Inflating stops at 1 MiB.
        bomb = zlib.compress(b"\0" * (64 << 20), 9)
        assert len(bomb) < 64 * 1024
        st, h, b = request(s.port, "POST", "/v1/push", bomb, {
            "Authorization": f"Bearer {a.token}", "Content-Encoding": "deflate"})
        assert st == 413 and b"body_too_large" in b, (st, b)

        # More changes than --max-changes.
        st, err = push(s.port, a, batch(a, [report(a) for _ in range(11)]))
        assert st == 413 and err["error"] == "too_many_changes", err

        # Headers over --max-header.
        st, h, b = request(s.port, "GET", "/healthz", headers={"X-Padding": "p" * 5000})
        assert st == 431 and b"headers_too_large" in b

        # Slow-loris headers: 408 after --header-timeout, then closed.
        c = headers_only(s.port, "POST /v1/push HTTP/1.1\r\nHost: x\r\n")
        t0 = time.time()
        st, h, b, _ = read_response(c)
        assert st == 408 and b"header_timeout" in b and time.time() - t0 < 5
        check_closed(c)

        # A body that stalls: 408 after --body-timeout.
        body = deflate(batch(a, [report(a)]))
        c = headers_only(s.port, "POST /v1/push HTTP/1.1\r\nHost: x\r\n" + auth +
                         "Content-Length: %d\r\nContent-Encoding: deflate\r\n\r\n" % len(body))
        c.sendall(body[:10])
        st, h, b, _ = read_response(c)
        assert st == 408 and b"body_timeout" in b
        check_closed(c)

        # An idle keep-alive connection is closed after --idle-timeout.
        c = socket.create_connection(("127.0.0.1", s.port), timeout=10)
        c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(c)[0] == 200
        t0 = time.time()
        check_closed(c)
        assert time.time() - t0 < 4

        # Without a valid token not one body byte is read: 401 at once.
        c = headers_only(s.port, "POST /v1/push HTTP/1.1\r\nHost: x\r\n"
                         "Content-Length: 60000\r\nAuthorization: Bearer nope\r\n\r\n")
        st, h, b, _ = read_response(c)
        assert st == 401 and h["connection"] == "close"
        check_closed(c)

        # --max-conns: the seventh connection gets 503 and the server lives on.
        held = [socket.create_connection(("127.0.0.1", s.port)) for _ in range(6)]
        time.sleep(0.1)
        c = socket.create_connection(("127.0.0.1", s.port), timeout=10)
        st, h, b, _ = read_response(c)
        assert st == 503 and b"too_many_connections" in b
        c.close()
        for h_ in held:
            h_.close()
        time.sleep(0.1)
        assert request(s.port, "GET", "/healthz")[0] == 200

        # Garbage is a 400, not a crash.
        c = headers_only(s.port, "\x16\x03\x01\x02\x00 not http at all\r\n\r\n")
        st, h, b, _ = read_response(c)
        assert st == 400
        assert request(s.port, "GET", "/healthz")[0] == 200

        assert store_state(s.data) == before
        assert s.stop() == 0


def test_max_map_gives_507_and_stores_nothing():
    # The map starts at 1 MiB and may grow to 4 MiB: pushes are accepted
    # (the map grows past its start), then one no longer fits: 507, the
    # store unchanged, and reads still served.
    with Server(args=["--map-size", "1M", "--max-map", "4M"], quiet=True) as s:
        p = Device(s.data, "phone")
        acked = 0
        for _ in range(200):
            before = store_state(s.data)
            st, r = push(s.port, p, batch(p, [report(p, narrative="x" * 2000)
                                             for _ in range(50)]))
            if st != 200:
                break
            acked += 50
        assert st == 507 and r["error"] == "storage_full", (st, r)
        assert acked * 2000 > 1 << 20, acked  # it grew past the initial map
        # and refused only at the cap: a map found full by the commit itself
        # (LMDB's pages for its free list) was once answered 507 without
        # growing, at 1,500 reports one run and 7,100 the next
        _, enrolled, _ = cli("device", "enroll", "--data", s.data, "--name", "prometheus",
                             "--role", "metrics")
        token = re.search(r"^token +(\S+)$", enrolled, re.M).group(1)
        _, _, m = request(s.port, "GET", "/metrics",
                          headers={"Authorization": f"Bearer {token}"})
        assert metric(m.decode(), "shahidi_map_size_bytes") == 4 << 20, acked
        assert store_state(s.data) == before  # nothing of the refused batch
        assert request(s.port, "GET", "/healthz")[0] == 200
        pull(s.port, p)  # 200: reads are served
        entries, _, records, _ = store_state(s.data)
        assert entries == records == acked
        print(f"   {acked} reports accepted under --max-map 4M, then 507")


def test_a_body_that_stalls_is_dropped():
    """--body-stall: a body that stops arriving for that long is dropped
    (408 body_stall), independently of --body-timeout; one that keeps
    arriving, however slowly, is not."""
    with Server(args=["--body-stall", "1", "--body-timeout", "30"]) as s:
        a = Device(s.data, "phone")
        auth = f"Authorization: Bearer {a.token}\r\n"
        body = deflate(batch(a, [report(a)]))
        head = ("POST /v1/push HTTP/1.1\r\nHost: x\r\n" + auth +
                "Content-Length: %d\r\nContent-Encoding: deflate\r\n\r\n" % len(body))
        c = headers_only(s.port, head)
        c.sendall(body[:10])
        t0 = time.time()
        st, h, b, _ = read_response(c)
        took = time.time() - t0
        assert st == 408 and b"body_stall" in b and 0.8 < took < 3, (st, b, took)
        check_closed(c)
        # a slow body that keeps coming, for longer than the stall limit
        c = headers_only(s.port, head)
        step = max(1, len(body) // 6)
        for i in range(0, len(body), step):
            c.sendall(body[i:i + step])
            time.sleep(0.5)
        st, h, b, _ = read_response(c)
        assert st == 200, (st, b)
        c.close()


def big_feed(s):
    """A phone whose feed holds 1,000 changes (a pull of >500 KB): 100 of
    its reports, assigned to another phone, each edited 10 times there."""
    a, b = Device(s.data, "phone"), Device(s.data, "office phone")
    admin = Device(s.data, "admin", role="admin")
    recs = [report(a) for _ in range(100)]
    assert push(s.port, a, batch(a, recs))[0] == 200
    for r in recs:
        body = json.dumps({"record_id": str(uuid.UUID(bytes=r.record_id)),
                           "device": b.hex}).encode()
        assert request(s.port, "POST", "/v1/assign", body, {
            "Authorization": f"Bearer {admin.token}",
            "Content-Type": "application/json"})[0] == 200
    for _ in range(10):
        edits = [edit(b, r.record_id, 62, "text", "x" * 1000, [(r.hlc, a.id)]) for r in recs]
        assert push(s.port, b, batch(b, edits))[0] == 200
    return a


def test_an_answer_waits_for_the_phone_to_take_it():
    """The idle keep-alive timer starts once the phone has received the
    answer (nothing left unsent or unacknowledged), not once it was
    written: a phone whose link stalls for longer than --idle-timeout
    after asking still gets its whole answer."""
    with Server(args=["--idle-timeout", "1"]) as s:
        a = big_feed(s)
        c = socket.socket()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.settimeout(10)
        c.connect(("127.0.0.1", s.port))
        c.sendall(b"GET /v1/pull?cursor=0&limit=1000 HTTP/1.1\r\nHost: x\r\n"
                  b"Authorization: Bearer " + a.token.encode() + b"\r\n\r\n")
        time.sleep(3)  # the link stalls: nothing is read
        st, h, b, _ = read_response(c)
        assert st == 200 and h["connection"] == "keep-alive"
        r = pb.PullResponse()
        r.ParseFromString(b)
        assert len(r.changes) == 1000 and len(b) > 500000, (len(r.changes), len(b))
        # the connection's idle time started when the answer was received:
        # it is still open for the next request...
        c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(c)[0] == 200
        # ...and then, idle, it is closed
        t0 = time.time()
        check_closed(c)
        assert 0.5 < time.time() - t0 < 4


def test_an_answer_nobody_takes_is_dropped_within_the_bound():
    """The wait for an answer to arrive is bounded (--write-timeout): a
    phone that asks and never reads holds its connection that long, past
    --idle-timeout, and no longer."""
    with Server(args=["--idle-timeout", "1", "--write-timeout", "3"]) as s:
        a = big_feed(s)
        _, out, _ = cli("device", "enroll", "--data", s.data, "--name", "prom", "--role", "metrics")
        prom = re.search(r"^token +(\S+)$", out, re.M).group(1)

        def open_conns():
            st, _, body = request(s.port, "GET", "/metrics",
                                  headers={"Authorization": f"Bearer {prom}"})
            assert st == 200
            return metric(body.decode(), "shahidi_connections_open") - 1  # not this one
        c = socket.socket()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.connect(("127.0.0.1", s.port))
        c.sendall(b"GET /v1/pull?cursor=0&limit=1000 HTTP/1.1\r\nHost: x\r\n"
                  b"Authorization: Bearer " + a.token.encode() + b"\r\n\r\n")
        t0 = time.time()
        time.sleep(1.8)
        assert open_conns() == 1, "dropped before --write-timeout"
        while open_conns() and time.time() - t0 < 15:
            time.sleep(0.1)
        took = time.time() - t0
        c.close()
        assert 2.8 < took < 5, took
        print(f"   an answer never read: its connection dropped after {took:.1f} s "
              "(--write-timeout 3, --idle-timeout 1)")


def raw_exchange(port, data, wait=3):
    """Sends data on a new connection; returns every byte answered until
    the server closes it (or wait seconds pass)."""
    c = socket.create_connection(("127.0.0.1", port), timeout=wait)
    c.sendall(data)
    got = b""
    try:
        while True:
            chunk = c.recv(65536)
            if not chunk:
                break
            got += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    c.close()
    return got


def test_malformed_requests_are_refused():
    """A folded (obs-fold) header and whitespace before a header's colon
    get 400 (RFC 9112 5.2, 5.1); an HTTP/0.9 request line is not answered
    as HTTP/1.x: the connection is closed."""
    with Server(args=["--header-timeout", "1"]) as s:
        a = Device(s.data, "phone")
        tok = a.token.encode()
        ok = raw_exchange(s.port, b"GET /v1/pull HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                          tok + b"\r\nConnection: close\r\n\r\n")
        assert ok.startswith(b"HTTP/1.1 200"), ok[:100]
        folded = raw_exchange(s.port, b"GET /v1/pull HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer\r\n "
                              + tok + b"\r\nConnection: close\r\n\r\n")
        assert folded.startswith(b"HTTP/1.1 400"), folded[:100]
        spaced = raw_exchange(s.port, b"GET /v1/pull HTTP/1.1\r\nHost: x\r\nAuthorization : Bearer " +
                              tok + b"\r\nConnection: close\r\n\r\n")
        assert spaced.startswith(b"HTTP/1.1 400"), spaced[:100]
        for line in [b"GET /\r\n", b"GET /healthz\r\n\r\n", b"GET /healthz\r\nHost: x\r\n\r\n"]:
            t0 = time.time()
            got = raw_exchange(s.port, line)
            assert not got.startswith(b"HTTP/1"), (line, got[:100])
            assert time.time() - t0 < 2.5, line
        assert request(s.port, "GET", "/healthz")[0] == 200


def log_lines(s, route):
    return [ln for ln in s.logtext().splitlines() if f"route={route} " in ln]


def test_the_request_log_counts_every_byte():
    """in= is every byte of the request, the first read's included; an
    upload cut mid-body still leaves its line."""
    with Server() as s:
        a = Device(s.data, "phone")
        body = deflate(batch(a, [report(a) for _ in range(50)]))
        st, r = push(s.port, a, batch(a, [report(a)]))
        c = socket.create_connection(("127.0.0.1", s.port), timeout=10)
        head = ("POST /v1/push HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                "Content-Encoding: deflate\r\nContent-Length: %d\r\n\r\n" % (a.token, len(body)))
        c.sendall(head.encode() + body)
        assert read_response(c)[0] == 200
        c.close()
        time.sleep(0.2)
        last = log_lines(s, "/v1/push")[-1]
        n = int(re.search(r" in=(\d+) ", last).group(1))
        assert n == len(head) + len(body), (n, len(head), len(body), last)
        # cut mid-body: a line with the bytes that came
        c = socket.create_connection(("127.0.0.1", s.port), timeout=10)
        c.sendall(head.encode() + body[:1000])
        time.sleep(0.3)
        c.close()
        time.sleep(0.3)
        last = log_lines(s, "/v1/push")[-1]
        assert "status=499" in last and f" in={len(head) + 1000} " in last, last


if __name__ == "__main__":
    run_tests(globals())
