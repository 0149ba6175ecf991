"""shahidi-loadgen against the real server: a small workload whose figures
are sane and whose verification agrees with the store, and a run whose
acknowledged changes are not in the store it verifies, which must fail."""
import csv
import json
import os
import re
import subprocess
import tempfile
import time

from harness import BUILD, Device, Server, cli, request, run_tests, store_state

LOADGEN = os.path.join(BUILD, "tools", "shahidi-loadgen")


def loadgen(*args, timeout=120, env=None):
    p = subprocess.run([LOADGEN, *map(str, args)], capture_output=True, text=True,
                       timeout=timeout, env=env)
    assert "Sanitizer" not in p.stderr and "runtime error" not in p.stderr, p.stderr
    return p.returncode, p.stdout, p.stderr


def test_many_waiting_phones_take_turns():
    # 300 phones, room for 4 batches at a time: the server admits waiting
    # phones a few at a time, in turn. Before it did, each freed place woke
    # every waiting phone; all but one found no room and waited again, in
    # the kernel's order: 151,578 pauses for 1,500 batches, p99 910 ms.
    with Server(quiet=True, args=["--max-queue", "4"]) as s:
        rc, out, err = loadgen("--server", s.url, "--data", s.data, "--devices", 300,
                               "--changes", 25, "--batch", 5, "--json")
        assert rc == 0, (rc, out, err)
        r = json.loads(out)
        assert r["push"]["changes_acked"] == 7500 and r["verify"]["ok"], r
        admin = Device(s.data, "admin", role="admin")
        st, _, m = request(s.port, "GET", "/metrics",
                           headers={"Authorization": f"Bearer {admin.token}"})
        paused = int(re.search(r"^shahidi_reads_paused_total (\d+)$", m.decode(),
                               re.M).group(1))
        print(f"   {paused} pauses for 1500 batches, latency {r['latency_ms']}")
        assert 0 < paused < 1500 * 10, paused


def steal_s():
    """The machine's steal time since boot, in seconds (all cores)."""
    with open("/proc/stat") as f:
        return int(f.readline().split()[8]) / os.sysconf("SC_CLK_TCK")


def test_small_workload_verifies():
    with Server(quiet=True) as s:
        entries0, _, records0, _ = store_state(s.data)
        steal0 = steal_s()
        rc, out, err = loadgen("--server", s.url, "--data", s.data, "--devices", 4,
                               "--changes", 300, "--batch", 50, "--seed", 7, "--json",
                               "--server-pid", s.proc.pid)
        steal1 = steal_s()
        assert rc == 0, (rc, out, err)
        r = json.loads(out)
        # the hypervisor's steal time during the push: within what this
        # process saw over the whole run (a wrong field of /proc/stat, such
        # as idle time, would not be)
        m = r["machine"]
        assert 0 <= m["steal_s"] <= steal1 - steal0 + 0.011, (m, steal0, steal1)
        assert 0 <= m["steal_share"] <= 1, m
        push, lat, wire, v = r["push"], r["latency_ms"], r["wire"], r["verify"]
        # Nothing refused, nothing lost: every change acknowledged once.
        assert push["changes_acked"] == 1200 == push["changes_applied"], push
        assert push["changes_rejected"] == push["changes_in_doubt"] == 0, push
        assert push["batches_acked"] == 24 and push["changes_per_s"] > 0, push
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"], lat
        assert lat["samples"] == 24
        # Deflated reports of ~1 KB, plus headers; a few bytes back per change.
        assert 150 < wire["request_bytes_per_change"] < 600, wire
        assert 0 < wire["response_bytes_per_change"] < 50, wire
        assert r["errors"] == {"rejected": {}}, r["errors"]
        assert r["server"]["rss_max_kb"] > 0, r["server"]
        # Device 0's feed holds the others' edits of the shared records.
        assert r["pull"]["changes"] > 0, r["pull"]
        assert v["ok"] and v["changes"] == 1200 and v["log_entries_added"] == 1200, v
        assert v["conflicted_records"] >= 1, v
        assert v["conflicted_records"] == v["expected_conflicted_records"], v
        # The store agrees, read by the CLI.
        entries, _, records, _ = store_state(s.data)
        assert entries - entries0 == 1200, (entries, entries0)
        assert records - records0 == v["records"], (records, v)

        # The same seed again, as a table: new devices, the same kind of run.
        rc, out, err = loadgen("--server", s.url, "--data", s.data, "--devices", 2,
                               "--changes", 120, "--batch", 40, "--seed", 7)
        assert rc == 0, (rc, out, err)
        assert "verify: ok (240 changes, " in out, out
        for word in ("changes/s", "p50", "p99", "B/change", "errors", "pull", "steal"):
            assert word in out, (word, out)
        assert store_state(s.data)[0] == entries + 240


def test_group_mix_verifies():
    """--groups: phones edit victims and remove sources of their own v3 records and
    all add perpetrators to the shared records at once; every change is
    applied once, adds never conflict (only the shared field 140 does),
    and the store holds what the mix made."""
    with Server(quiet=True) as s:
        rc, out, err = loadgen("--server", s.url, "--data", s.data, "--devices", 4,
                               "--changes", 300, "--batch", 50, "--seed", 7, "--json",
                               "--groups", "10,10,5")
        assert rc == 0, (rc, out, err)
        r = json.loads(out)
        push, v = r["push"], r["verify"]
        assert push["changes_acked"] == 1200 == push["changes_applied"], (push, r["errors"])
        assert v["ok"] and v["changes"] == 1200, v
        assert v["conflicted_records"] == v["expected_conflicted_records"], v
        with tempfile.TemporaryDirectory(prefix="shahidi-lg-") as d:
            cli("export", "--data", s.data, "--format", "csv", "--out", d, "--quiet",
                "--include-deleted")
            def rows(name):
                with open(os.path.join(d, name + ".csv"), encoding="utf-8-sig", newline="") as f:
                    return list(csv.DictReader(f))
            recs = {x["record_id"]: x for x in rows("records")}
            assert all(x["form_version"] == "3" for x in recs.values())
            perps = rows("perpetrators")
            victims = rows("victims")
            removed = sum(1 for x in rows("sources") if x["removed"] == "yes")
            per_rec = {}
            for p in perps:
                per_rec[p["record_id"]] = per_rec.get(p["record_id"], 0) + 1
            most = max(per_rec.values())
            print(f"   {len(recs)} records, {len(victims)} victims, {removed} sources removed, "
                  f"{len(perps)} perpetrators, most on one record {most}")
            assert removed >= 10 and most > 3 + 4  # several phones' adds on a shared one
            # flagged or conflicted: only the shared records
            assert sum(1 for x in recs.values() if x["conflict"] == "yes") == \
                v["conflicted_records"]


def test_lost_changes_fail_verification():
    """The devices push to one server; --data names another store, where
    none of the acknowledged changes are: a benchmark that loses data fails."""
    with Server(quiet=True) as s, tempfile.TemporaryDirectory(prefix="shahidi-lg-") as tmp:
        devs = [Device(s.data, f"phone {i}") for i in range(2)]
        tokens = os.path.join(tmp, "tokens")
        with open(tokens, "w") as f:
            f.write("# device token\n")
            for d in devs:
                f.write(f"{d.hex} {d.token}\n")
        # (no shared records: with tokens, loadgen has no store in which
        # to assign them, and unassigned edits are refused)
        rc, out, err = loadgen("--server", s.url, "--tokens", tokens, "--devices", 2,
                               "--data", os.path.join(tmp, "elsewhere"), "--changes", 60,
                               "--batch", 20, "--shared", 0, "--json")
        assert rc == 1, (rc, out, err)
        assert "VERIFY FAILED: " in err and "missing" in err, err
        r = json.loads(out)
        assert r["push"]["changes_acked"] == 120 and r["verify"]["ok"] is False, r
        # The server did store them: the store it writes holds all 120.
        assert store_state(s.data)[0] == 120

        # Without --data there is nothing to verify against: the run is
        # measured only, and succeeds.
        rc, out, err = loadgen("--server", s.url, "--tokens", tokens, "--devices", 2,
                               "--changes", 20, "--batch", 10, "--json")
        assert rc == 0, (rc, out, err)
        assert json.loads(out)["verify"] is None


def test_server_killed_mid_run_loses_nothing():
    """SIGKILL the server while batches are in flight, start it again on the
    same port: the loadgen resends (the same bytes), the server answers
    what it committed as it did before, and every acknowledged change is
    in the store exactly once."""
    with Server() as s:
        args = ["--server", s.url, "--data", s.data, "--devices", 8, "--changes", 2000,
                "--batch", 50, "--json", "--retries", 12]
        p = subprocess.Popen([LOADGEN, *map(str, args)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.time() + 60
            while s.logtext().count("route=/v1/push") < 30:
                assert p.poll() is None and time.time() < deadline, s.logtext()[-2000:]
                time.sleep(0.01)
            s.kill()
            time.sleep(0.3)
            with Server(data=s.data, args=["--listen", f"127.0.0.1:{s.port}"], quiet=True):
                out, err = p.communicate(timeout=120)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        assert p.returncode == 0, (p.returncode, out, err)
        assert "Sanitizer" not in err and "runtime error" not in err, err
        r = json.loads(out)
        push, v = r["push"], r["verify"]
        assert push["changes_acked"] == 16000 and push["changes_in_doubt"] == 0, push
        assert sum(n for k, n in r["errors"].items() if k != "rejected") >= 1, r["errors"]
        assert push["attempts"] > push["batches_acked"], push
        assert v["ok"] and v["changes"] == 16000 and v["log_entries_added"] == 16000, v
        assert store_state(s.data)[0] == 16000


def test_server_gone_is_an_error():
    """No server: connection errors are counted, retries end, exit 1."""
    with Server(quiet=True) as s:
        data, url = s.data, s.url
        assert s.stop() == 0
        rc, out, err = loadgen("--server", url, "--data", data, "--devices", 2, "--changes", 10,
                               "--retries", 2, "--timeout", 2, "--json", timeout=60)
        assert rc == 1, (rc, out, err)
        r = json.loads(out)
        assert r["errors"].get("connect", 0) >= 3, r["errors"]
        assert r["push"]["changes_acked"] == 0 and r["push"]["changes_refused"] == 20, r
        assert r["verify"]["ok"] is True, r  # nothing acknowledged, nothing stored
        assert "acknowledged no change" in err, err


def writer_metrics(port, token):
    _, _, m = request(port, "GET", "/metrics", headers={"Authorization": f"Bearer {token}"})
    m = m.decode()
    def get(name):
        return float(re.search(rf"^{name} (\S+)$", m, re.M).group(1))
    return get("shahidi_commit_seconds_count"), get("shahidi_group_commit_jobs_sum")


def test_writer_counters_cover_the_push_alone():
    """With a metrics token in SHAHIDI_METRICS_TOKEN, the load generator reads
    the writer's counters when the push starts and ends: the push's commits
    hold every pushed batch, and the pulls' commits after it are left out
    (the counters at the end of the run count them too). A token that
    cannot read /metrics leaves the figures out and the run goes on."""
    with Server(quiet=True) as s:
        # the metrics role, as tools/bench uses: it reads /metrics only
        _, enrolled, _ = cli("device", "enroll", "--data", s.data, "--name", "bench-metrics",
                             "--role", "metrics")
        token = re.search(r"^token +(\S+)$", enrolled, re.M).group(1)
        c0, j0 = writer_metrics(s.port, token)
        env = dict(os.environ, SHAHIDI_METRICS_TOKEN=token)
        rc, out, err = loadgen("--server", s.url, "--data", s.data, "--devices", 4,
                               "--changes", 200, "--batch", 50, "--json", env=env)
        assert rc == 0, (rc, out, err)
        c1, j1 = writer_metrics(s.port, token)
        r = json.loads(out)
        w = r["writer"]
        assert r["push"]["batches_acked"] == 16, r["push"]
        # every pushed batch was in a commit of the push, which did not count
        # the pulls' commits after it
        assert 16 <= w["jobs"] < j1 - j0, (w, j0, j1)
        assert 1 <= w["commits"] < c1 - c0, (w, c0, c1)
        assert 0 <= w["apply_cpu_s"] <= w["commit_cpu_s"] <= w["commit_s"] + 0.001, w
        assert token not in out and token not in err
        rc, out, err = loadgen("--server", s.url, "--data", s.data, "--devices", 2,
                               "--changes", 20, "--batch", 10)
        assert rc == 0 and "writer " not in out, (rc, out, err)  # no token, no line
        env["SHAHIDI_METRICS_TOKEN"] = "not-a-token"
        rc, out, err = loadgen("--server", s.url, "--data", s.data, "--devices", 2,
                               "--changes", 20, "--batch", 10, env=env)
        assert rc == 0 and "counters unreadable" in out, (rc, out, err)
        rc, out, err = loadgen("--server", s.url, "--data", s.data, "--devices", 2,
                               "--changes", 20, "--batch", 10, "--json", env=env)
        assert rc == 0 and "writer" not in json.loads(out), out


def test_usage():
    rc, out, _ = loadgen("--help")
    assert rc == 0
    for opt in ("--server", "--devices", "--batch", "--changes", "--seconds", "--seed",
                "--data", "--tokens", "--json", "--server-pid", "--verify", "--no-verify"):
        assert opt in out, opt
    assert "SHAHIDI_METRICS_TOKEN" in out
    assert loadgen("--devices", 0, "--data", "x")[0] == 2
    assert loadgen("--server", "https://example.org", "--data", "x")[0] == 2
    assert loadgen("--changes", 10)[0] == 2  # neither --data nor --tokens


if __name__ == "__main__":
    run_tests(globals())
