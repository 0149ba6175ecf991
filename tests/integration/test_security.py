"""Who gets in, and what the log says: refused tokens are rate-limited per
address, X-Forwarded-For counts only behind a trusted local proxy, and a
full run's log holds neither a token nor any report content."""
import json
import time

from harness import (Device, Server, batch, cli, edit, pull, push, report, request, run_tests,
                     value)


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
    run_tests(globals())
