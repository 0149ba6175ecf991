"""/metrics as a Prometheus server reads it: a real scrape, after pushes,
pulls, refused tokens and commits, passes `promtool check metrics`
(Debian's prometheus package), and every family has HELP and TYPE."""
import os
import re
import shutil
import subprocess

from harness import Device, Server, batch, pull, push, report, request, run_tests


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


if __name__ == "__main__":
    run_tests(globals())
