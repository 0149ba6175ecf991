"""Who gets in, and what the log says: refused tokens are rate-limited per
address, X-Forwarded-For counts only behind a trusted local proxy, and a
full run's log holds neither a token nor any report content. Plain HTTP
is refused beyond loopback unless --allow-plaintext; the address checks
that need a non-loopback peer run in a network namespace made here, so no
packet leaves this machine."""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid

from harness import (SERVER, Device, Server, assign, batch, cli, edit, pull, push, read_response,
                     report, request, run_tests, value)


def attempt(port, token, xff=None):
    h = {"Authorization": f"Bearer {token}"}
    if xff:
        h["X-Forwarded-For"] = xff
    return request(port, "GET", "/v1/pull", headers=h)[0]


def test_refused_tokens_are_rate_limited():
    with Server(args=["--auth-burst", "5", "--auth-refill", "0.5"]) as s:
        good = Device(s.data, "phone")
        bad = "shd_" + "B" * 43
        assert [attempt(s.port, bad) for _ in range(5)] == [401] * 5
        # the sixth failure gets 429, and its connection is closed...
        st, h, b = request(s.port, "GET", "/v1/pull", headers={"Authorization": f"Bearer {bad}",
                                                               "Connection": "keep-alive"})
        assert st == 429 and h["retry-after"] == "60" and b"too_many_failed_attempts" in b
        assert h["connection"] == "close"
        # ...but failures cannot lock out successes: a phone behind the same
        # address (a carrier's NAT) is served, and stays served
        for _ in range(3):
            assert attempt(s.port, good.token) == 200
        assert attempt(s.port, bad) == 429
        # no token needed, no limit
        assert request(s.port, "GET", "/healthz")[0] == 200
        time.sleep(0.6)  # one attempt earned back
        # X-Forwarded-For is not trusted unless asked for: still this address
        assert attempt(s.port, bad, xff="10.0.0.7") == 401
        assert attempt(s.port, bad, xff="10.0.0.8") == 429


def test_forwarded_for_behind_a_trusted_proxy():
    with Server(args=["--auth-burst", "3", "--auth-refill", "60", "--trust-proxy"]) as s:
        bad = "shd_" + "C" * 43
        assert [attempt(s.port, bad, "10.0.0.1") for _ in range(4)] == [401] * 3 + [429]
        # another client behind the same proxy is not punished for it
        assert attempt(s.port, bad, "10.0.0.2, 192.168.1.9") == 401
        assert attempt(s.port, bad, "2001:db8::1") == 401


def test_plain_http_refused_off_loopback():
    # Documentation addresses (RFC 5737, RFC 3849): not on this machine, so
    # even a server that did not refuse could not listen on them.
    with tempfile.TemporaryDirectory(prefix="shahidi-it-") as d:
        for addr in ["192.0.2.1:0", "[2001:db8::1]:0"]:
            p = subprocess.run([SERVER, "--data", os.path.join(d, "data"), "--listen", addr],
                               capture_output=True, text=True, timeout=30)
            assert p.returncode != 0 and "refusing to serve plain HTTP" in p.stderr, (addr, p)
            # --allow-plaintext lifts the refusal (and the bind then fails)
            p = subprocess.run([SERVER, "--data", os.path.join(d, "data"), "--listen", addr,
                                "--allow-plaintext"], capture_output=True, text=True, timeout=30)
            assert p.returncode != 0 and "refusing" not in p.stderr, (addr, p)
            assert "cannot listen" in p.stderr, (addr, p)
    # loopback in all its forms is served
    for extra in (["--listen", "127.0.0.2:0"], ["--listen", "[::1]:0"]):
        with Server(args=extra) as s:
            host = "::1" if "::1" in extra[1] else "127.0.0.2"
            c = socket.create_connection((host, s.port), timeout=10)
            c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert read_response(c)[0] == 200
            c.close()


NS_ADDR = "10.78.0.1"


def test_non_loopback_in_a_network_namespace():
    """In a namespace of its own whose lo also holds 10.78.0.1: a server
    told to listen there refuses without --allow-plaintext, serves with
    it, and believes X-Forwarded-For (--trust-proxy) only from a peer on
    loopback, not from one at 10.78.0.1."""
    ns = "shahidi-sec-" + uuid.uuid4().hex[:6]
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        raise AssertionError(f"this test makes a network namespace (needs root): {e}")
    try:
        for cmd in (["ip", "link", "set", "lo", "up"],
                    ["ip", "addr", "add", NS_ADDR + "/32", "dev", "lo"]):
            subprocess.run(["ip", "netns", "exec", ns, *cmd], check=True, capture_output=True)
        p = subprocess.run(["ip", "netns", "exec", ns, sys.executable, __file__, "--in-netns"],
                           capture_output=True, text=True, timeout=120)
        print(p.stdout, end="")
        assert p.returncode == 0, p.stdout + p.stderr
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def in_netns():
    def attempt_from(src, port, token, xff):
        c = socket.create_connection((NS_ADDR if src != "127.0.0.1" else "127.0.0.1", port),
                                     timeout=10)
        c.sendall((f"GET /v1/pull HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                   f"Authorization: Bearer {token}\r\nX-Forwarded-For: {xff}\r\n\r\n").encode())
        peer = c.getsockname()[0]
        st = read_response(c)[0]
        c.close()
        return peer, st

    with tempfile.TemporaryDirectory(prefix="shahidi-it-") as d:
        p = subprocess.run([SERVER, "--data", os.path.join(d, "data"), "--listen",
                            NS_ADDR + ":0"], capture_output=True, text=True, timeout=30)
        assert p.returncode != 0 and "refusing to serve plain HTTP" in p.stderr, p
    bad = "shd_" + "D" * 43
    with Server(args=["--listen", "0.0.0.0:0", "--allow-plaintext", "--trust-proxy",
                      "--auth-burst", "3", "--auth-refill", "60"]) as s:
        # from 10.78.0.1: each request names another client, none believed
        got = [attempt_from(NS_ADDR, s.port, bad, f"192.168.7.{i}") for i in range(4)]
        assert {peer for peer, _ in got} == {NS_ADDR}, got
        assert [st for _, st in got] == [401] * 3 + [429], got
        # from loopback (a proxy on this machine): believed, each client apart
        got = [attempt_from("127.0.0.1", s.port, bad, f"192.168.8.{i}") for i in range(4)]
        assert {peer for peer, _ in got} == {"127.0.0.1"}, got
        assert [st for _, st in got] == [401] * 4, got
    print("   in the namespace: refused without --allow-plaintext; X-Forwarded-For from "
          "10.78.0.1 ignored (429 at the 4th), from loopback believed")


def test_no_tokens_or_content_in_the_log():
    secret_text = "Wanjiku-Njoroge-narrative-7431"
    name = "Secret-Survivor-Name-1962"
    with Server() as s:
        a, b = Device(s.data, "phone A"), Device(s.data, "phone B")
        admin = Device(s.data, "admin", role="admin")
        coord = Device(s.data, "coordinator", "047", role="coordinator")
        rec = report(a, narrative=secret_text)
        rec.fields.add(field=31, value=value("text", name))
        push(s.port, a, batch(a, [rec]))
        seen = [(rec.hlc, a.id)]
        push(s.port, a, batch(a, [edit(a, rec.record_id, 62, "text", secret_text + " A", seen)]))
        assign(s.data, rec.record_id, b)
        push(s.port, b, batch(b, [edit(b, rec.record_id, 62, "text", secret_text + " B", seen)]))
        pull(s.port, a)
        for path in ["/v1/status", "/v1/conflicts", "/metrics", "/v1/devices",
                     "/v1/export?format=ndjson&include_sensitive=1"]:
            st, h, body = request(s.port, "GET", path,
                                  headers={"Authorization": f"Bearer {admin.token}"})
            assert st == 200, path
        assert secret_text.encode() in body  # the export did carry it...
        request(s.port, "GET", "/v1/pull?cursor=0&token=" + a.token,
                headers={"Authorization": "Bearer " + a.token[:-1] + "x"})
        request(s.port, "GET", "/v1/status", headers={"Authorization": f"Bearer {coord.token}"})
        assert s.stop() == 0
        log = s.logtext()
        assert "route=/v1/push status=200" in log  # the log is there...
        for t in [a.token, b.token, admin.token, coord.token, a.token[:-1] + "x",
                  a.token[4:20]]:
            assert t not in log, "a token reached the log"
        for text in [secret_text, name, "Secret-Survivor", "narrative-7431"]:
            assert text not in log, "report content reached the log"
        s.start()


if __name__ == "__main__":
    if sys.argv[1:] == ["--in-netns"]:
        in_netns()
    else:
        run_tests(globals())
