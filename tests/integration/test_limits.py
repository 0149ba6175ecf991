"""Every limit of the server hit once: the status it answers with, and the
store unchanged afterwards (its records digest and log head)."""
import socket
import time
import zlib

from harness import (Device, Server, batch, deflate, pull, push, read_response, report, request,
                     run_tests, store_state)

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
        assert store_state(s.data) == before  # nothing of the refused batch
        assert request(s.port, "GET", "/healthz")[0] == 200
        pull(s.port, p)  # 200: reads are served
        entries, _, records, _ = store_state(s.data)
        assert entries == records == acked
        print(f"   {acked} reports accepted under --max-map 4M, then 507")


if __name__ == "__main__":
    run_tests(globals())
