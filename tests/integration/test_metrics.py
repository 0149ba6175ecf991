"""/metrics as a Prometheus server reads it: a real scrape, after pushes,
pulls, refused tokens and commits, passes `promtool check metrics`
(Debian's prometheus package), and every family has HELP and TYPE."""
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time

from harness import (SRC, Device, Server, batch, cli, deflate, pull, push, read_response, report,
                     request, run_tests)

ROUTES = {"push", "pull", "files", "office", "export", "metrics", "healthz", "other"}


def scrape(s, admin):
    st, h, body = request(s.port, "GET", "/metrics", headers={"Authorization": f"Bearer {admin.token}"})
    assert st == 200, (st, body)
    assert h["content-type"].startswith("text/plain; version=0.0.4"), h
    return body.decode()


def families(text):
    """{name: type} from the TYPE lines, and the HELP names."""
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    helps = set(re.findall(r"^# HELP (\S+) \S", text, re.M))
    return types, helps


def test_a_real_scrape_passes_promtool():
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: tools/dev setup installs prometheus"
    with Server() as s:
        admin = Device(s.data, "admin", role="admin")
        phones = [Device(s.data, f"phone {i}") for i in range(3)]
        for d in phones:
            assert push(s.port, d, batch(d, [report(d) for _ in range(5)]))[0] == 200
            pull(s.port, d)
        request(s.port, "GET", "/v1/status", headers={"Authorization": "Bearer wrong"})
        text = scrape(s, admin)
        p = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                           capture_output=True, timeout=60)
        assert p.returncode == 0, (p.returncode, p.stdout, p.stderr, text)
        # promtool passes some things a reader would still trip on: every
        # sample belongs to a family with a TYPE and a HELP
        types, helps = families(text)
        for line in text.splitlines():
            if line.startswith("#") or not line:
                continue
            name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            fam = name if name in types else base
            assert fam in types, ("no TYPE", line)
            assert fam in helps, ("no HELP", line)
            if types[fam] == "counter":
                assert name.endswith("_total"), line
        # the store's map: two gauges, not one name with a label
        assert "shahidi_map_bytes{" not in text
        size = float(re.search(r"^shahidi_map_size_bytes (\S+)$", text, re.M).group(1))
        used = float(re.search(r"^shahidi_map_used_bytes (\S+)$", text, re.M).group(1))
        assert 0 < used <= size
        assert types["shahidi_commit_apply_seconds_total"] == "counter"
        assert types["shahidi_commit_apply_cpu_seconds_total"] == "counter"
        assert types["shahidi_batches_replayed_total"] == "counter"
        assert re.search(r"^shahidi_changes_total\{outcome=\"applied\"\} 15$", text, re.M)
        # build and process
        assert re.search(r'^shahidi_build_info\{version="[^"]+"\} 1$', text, re.M), text
        rss = float(re.search(r"^process_resident_memory_bytes (\S+)$", text, re.M).group(1))
        assert 1 << 20 < rss < 1 << 32, rss
        # RSS in its two parts: the server's own memory, and the store's pages
        own = float(re.search(r"^shahidi_memory_own_bytes (\S+)$", text, re.M).group(1))
        mapped = float(re.search(r"^shahidi_memory_mapped_bytes (\S+)$", text, re.M).group(1))
        assert 0 < own < rss and 0 < mapped < rss and own + mapped == rss, (own, mapped, rss)
        # and RSS is the kernel's figure, read by us a moment later
        with open(f"/proc/{s.proc.pid}/status") as f:
            vmrss = 1024 * int(re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M).group(1))
        assert abs(vmrss - rss) < rss / 4 + (1 << 20), (vmrss, rss)
        cpu = float(re.search(r"^process_cpu_seconds_total (\S+)$", text, re.M).group(1))
        assert 0 < cpu < 600, cpu
        fds = float(re.search(r"^process_open_fds (\S+)$", text, re.M).group(1))
        assert 4 < fds < 1000, fds
        assert re.search(r"^process_max_fds \d+$", text, re.M)
        start = float(re.search(r"^process_start_time_seconds (\S+)$", text, re.M).group(1))
        assert abs(start - os.stat(f"/proc/{s.proc.pid}").st_mtime) < 120, start


def histogram(text, name):
    """{route: ([(le, cumulative count)], sum, count)} of a histogram."""
    out = {}
    for route, le, v in re.findall(rf'^{name}_bucket{{route="([^"]+)",le="([^"]+)"}} (\S+)$',
                                   text, re.M):
        out.setdefault(route, [[], 0.0, 0])[0].append((float(le), int(v)))
    for route, v in re.findall(rf'^{name}_sum{{route="([^"]+)"}} (\S+)$', text, re.M):
        out[route][1] = float(v)
    for route, v in re.findall(rf'^{name}_count{{route="([^"]+)"}} (\S+)$', text, re.M):
        out[route][2] = int(v)
    return out


def slow_push(port, dev, body, pause):
    """A push whose body arrives pause seconds after its headers."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        s.sendall((f"POST /v1/push HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                   f"Authorization: Bearer {dev.token}\r\nContent-Encoding: deflate\r\n"
                   "Connection: close\r\n\r\n").encode())
        time.sleep(pause)
        s.sendall(body)
        return read_response(s)[0]
    finally:
        s.close()


def test_request_latency_histogram_per_route():
    with Server() as s:
        admin = Device(s.data, "admin", role="admin")
        a = Device(s.data, "phone")
        for _ in range(3):
            assert push(s.port, a, batch(a, [report(a)]))[0] == 200
        # one push whose body comes 0.3 s after its headers: the time is
        # counted from the request's first byte
        assert slow_push(s.port, a, deflate(batch(a, [report(a)])), 0.3) == 200
        for _ in range(2):
            pull(s.port, a)
        for _ in range(4):
            assert request(s.port, "GET", "/healthz")[0] == 200
        assert request(s.port, "GET", "/nowhere")[0] == 404
        # a request that does not parse counts under "other", timed from
        # its own first byte too (not from the connection's start)
        raw = socket.create_connection(("127.0.0.1", s.port), timeout=10)
        time.sleep(0.3)
        raw.sendall(b"\x01\x02 nonsense\r\n\r\n")
        assert read_response(raw)[0] == 400
        raw.close()
        auth = {"Authorization": f"Bearer {admin.token}"}
        assert request(s.port, "GET", "/v1/status", headers=auth)[0] == 200
        assert request(s.port, "GET", "/v1/forms", headers=auth)[0] == 200
        assert request(s.port, "GET", "/v1/export?format=csv", headers=auth)[0] == 200
        assert request(s.port, "GET", "/metrics", headers=auth)[0] == 200
        text = scrape(s, admin)
        types, helps = families(text)
        name = "shahidi_http_request_duration_seconds"
        assert types[name] == "histogram" and name in helps
        h = histogram(text, name)
        assert set(h) <= ROUTES, h.keys()
        counts = {r: v[2] for r, v in h.items()}
        assert counts == {"push": 4, "pull": 2, "healthz": 4, "other": 3, "office": 1,
                          "export": 1, "metrics": 1}, counts
        for route, (buckets, total, count) in h.items():
            les = [le for le, _ in buckets]
            assert les == sorted(les) and les[0] == 0.001 and les[-2] == 10 and les[-1] == float("inf")
            cum = [c for _, c in buckets]
            assert cum == sorted(cum) and cum[-1] == count, (route, buckets)
            assert 0 < total < 60, (route, total)
        # the slow push is above 0.25 s, the three others below it
        push_b = dict(h["push"][0])
        assert push_b[0.25] == 3 and push_b[0.5] == 4, push_b
        assert 0.3 <= h["push"][1] < 5
        # /healthz answers at once: every one under 10 ms; so do the
        # others, the one that waited 0.3 s before its first byte too
        assert dict(h["healthz"][0])[0.01] == 4
        assert dict(h["other"][0])[0.25] == 3 and h["other"][1] < 0.25, h["other"]


def test_county_last_push_and_the_readme_alert():
    promtool = shutil.which("promtool")
    with Server() as s:
        admin = Device(s.data, "admin", role="admin")
        Device(s.data, "coordinator", county="042", role="coordinator")
        a, b = Device(s.data, "Nairobi A"), Device(s.data, "Nairobi B")
        k = Device(s.data, "Kisumu", county="042")
        Device(s.data, "Mombasa, never pushed", county="001")
        gone = Device(s.data, "Garissa, revoked", county="007")
        assert push(s.port, gone, batch(gone, [report(gone, county="007")]))[0] == 200
        cli("device", "revoke", "--data", s.data, gone.hex)
        t0 = time.time()
        assert push(s.port, a, batch(a, [report(a)]))[0] == 200
        assert push(s.port, k, batch(k, [report(k, county="042")]))[0] == 200
        time.sleep(1.1)
        assert push(s.port, b, batch(b, [report(b)]))[0] == 200
        t1 = time.time()
        text = scrape(s, admin)
        types, helps = families(text)
        name = "shahidi_county_last_push_timestamp_seconds"
        assert types[name] == "gauge" and name in helps
        got = {c: float(v) for c, v in re.findall(rf'^{name}{{county="(\d{{3}})"}} (\S+)$', text, re.M)}
        # counties with phones in service only: not 007 (its one phone is
        # revoked), not the coordinator's
        assert set(got) == {"001", "042", "047"}, got
        assert got["001"] == 0
        assert t0 - 1 <= got["042"] <= t1 and got["047"] >= got["042"] + 1, got
        phones = {c: float(v) for c, v in
                  re.findall(r'^shahidi_county_phones{county="(\d{3})"} (\S+)$', text, re.M)}
        assert phones == {"001": 1, "042": 1, "047": 2}, phones
        p = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                           capture_output=True, timeout=60)
        assert p.returncode == 0, (p.stdout, p.stderr)
    # the alert rule the README gives passes promtool, and fires for a
    # county silent for two days and only for it
    with open(os.path.join(SRC, "README.md")) as f:
        readme = f.read()
    rules = re.search(r"```yaml\n(# shahidi-alerts\.yml.*?)```", readme, re.S).group(1)
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "shahidi-alerts.yml"), "w") as f:
            f.write(rules)
        p = subprocess.run([promtool, "check", "rules", os.path.join(d, "shahidi-alerts.yml")],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, (p.stdout, p.stderr)
        # 047 pushes every 5 minutes; 042 pushed at 0 and never again (a
        # sample every 5 minutes: the scrape interval, within the lookback)
        with open(os.path.join(d, "test.yml"), "w") as f:
            f.write("""rule_files: [shahidi-alerts.yml]
evaluation_interval: 5m
tests:
  - interval: 5m
    input_series:
      - series: 'shahidi_county_last_push_timestamp_seconds{county="047",job="shahidi"}'
        values: '0+300x1000'
      - series: 'shahidi_county_last_push_timestamp_seconds{county="042",job="shahidi"}'
        values: '0+0x1000'
    alert_rule_test:
      - eval_time: 47h
        alertname: ShahidiCountySilent
        exp_alerts: []
      - eval_time: 80h
        alertname: ShahidiCountySilent
        exp_alerts:
          - exp_labels: {severity: warning, county: "042", job: shahidi}
            exp_annotations: {summary: "No push from county 042 for 3d 8h 0m 0s"}
""")
        p = subprocess.run([promtool, "test", "rules", os.path.join(d, "test.yml")],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, (p.stdout, p.stderr)


def test_metrics_role_scrapes_and_nothing_else():
    promtool = shutil.which("promtool")
    with Server() as s:
        # minted as any token; a metrics token has no county
        st, out, err = cli("device", "enroll", "--data", s.data, "--name", "prom", "--role",
                           "metrics", "--county", "047", check=False)
        assert st == 2 and "a metrics token has no county" in err, (st, out, err)
        _, out, _ = cli("device", "enroll", "--data", s.data, "--name", "prometheus", "--role",
                        "metrics")
        token = re.search(r"^token +(\S+)$", out, re.M).group(1)
        prom_id = re.search(r"^device ([0-9a-f]{16})$", out, re.M).group(1)
        admin = Device(s.data, "admin", role="admin")
        coord = Device(s.data, "coordinator", county="047", role="coordinator")
        phone = Device(s.data, "phone")
        assert push(s.port, phone, batch(phone, [report(phone)]))[0] == 200
        m = {"Authorization": f"Bearer {token}"}
        st, h, body = request(s.port, "GET", "/metrics", headers=m)
        assert st == 200, (st, body)
        p = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True,
                           timeout=60)
        assert p.returncode == 0, (p.stdout, p.stderr)
        assert b'shahidi_county_last_push_timestamp_seconds{county="047"}' in body
        # everything else: 403 with a body that says why
        rid = "0192f3ab-0000-7000-8000-000000000000"
        js = {**m, "Content-Type": "application/json"}
        refused = [
            ("GET", "/v1/status", b"", m),
            ("GET", "/v1/conflicts", b"", m),
            ("GET", f"/v1/history?record={rid}", b"", m),
            ("GET", "/v1/export?format=csv", b"", m),
            ("GET", "/v1/export?format=ndjson&include_sensitive=1", b"", m),
            ("GET", "/v1/devices", b"", m),
            ("POST", "/v1/devices/enrol", json.dumps({"name": "x", "county": "047"}).encode(), js),
            ("POST", "/v1/devices/revoke", json.dumps({"id": phone.hex}).encode(), js),
            ("POST", "/v1/conflicts/resolve", json.dumps({"record_id": rid}).encode(), js),
            ("POST", "/v1/assign", json.dumps({"record_id": rid, "device": phone.hex}).encode(), js),
            ("GET", "/v1/forms", b"", m),
            ("POST", "/v1/push", deflate(batch(phone, [report(phone)])),
             {**m, "Content-Encoding": "deflate"}),
            ("GET", "/v1/pull?cursor=0", b"", m),
            ("GET", "/v1/files/status", b"", m),
            ("POST", "/v1/files/", b"", {**m, "Tus-Resumable": "1.0.0", "Upload-Length": "10"}),
            ("GET", "/v1/files/" + "ab" * 16, b"", m),
        ]
        for method, path, body, hdrs in refused:
            st, h, b = request(s.port, method, path, body, hdrs)
            assert st == 403, (path, st, b)
            e = json.loads(b)
            assert e == {"error": "role_not_allowed",
                         "message": "a metrics token may only read /metrics"}, (path, e)
        # the page itself is static and open; its data is not (above)
        assert request(s.port, "GET", "/")[0] == 200
        # /metrics: a metrics or admin token, nobody else
        assert request(s.port, "GET", "/metrics", headers={
            "Authorization": f"Bearer {admin.token}"})[0] == 200
        for dev in (coord, phone):
            st, h, b = request(s.port, "GET", "/metrics", headers={
                "Authorization": f"Bearer {dev.token}"})
            assert st == 403 and json.loads(b)["error"] == "role_not_allowed", (st, b)
        st, h, b = request(s.port, "GET", "/metrics")
        assert st == 401 and json.loads(b)["error"] == "unauthorized", (st, b)
        _, out, _ = cli("device", "list", "--data", s.data, "--json")
        assert [d["role"] for d in json.loads(out) if d["id"] == prom_id] == ["metrics"]
        # revoked like any token: at the next request
        cli("device", "revoke", "--data", s.data, prom_id)
        assert request(s.port, "GET", "/metrics", headers=m)[0] == 401
        # admins may mint one over HTTP too (a metrics token has no county)
        st, h, b = request(s.port, "POST", "/v1/devices/enrol",
                           json.dumps({"name": "prom 2", "role": "metrics"}).encode(),
                           {"Authorization": f"Bearer {admin.token}",
                            "Content-Type": "application/json"})
        assert st == 200, b
        tok2 = json.loads(b)["token"]
        assert request(s.port, "GET", "/metrics", headers={
            "Authorization": f"Bearer {tok2}"})[0] == 200
        assert request(s.port, "GET", "/v1/status", headers={
            "Authorization": f"Bearer {tok2}"})[0] == 403


if __name__ == "__main__":
    run_tests(globals())
