"""The writer's commit window (--commit-window-ms): with many phones pushing
below saturation, a commit waits a little for more batches so that they
share one fsync (the counters of /metrics show it); a lone phone's push
never waits; a push refused before it reaches the writer leaves nothing for
a commit to wait for; the window is bounded and a bad value is refused."""
import json
import os
import statistics
import subprocess
import tempfile
import time

from harness import (BUILD, SERVER, Device, Server, batch, metric, push, report,
                     request, run_tests)

LOADGEN = os.path.join(BUILD, "tools", "shahidi-loadgen")


def metrics(s):
    admin = Device(s.data, "prom", role="admin")
    st, _, m = request(s.port, "GET", "/metrics",
                       headers={"Authorization": f"Bearer {admin.token}"})
    assert st == 200, m
    return m.decode()


def paced_fleet(window_ms):
    """16 phones pushing 100 batches a second in all (10 ms apart, far below
    saturation): jobs per commit, commits that waited, time they waited."""
    with Server(quiet=True, args=["--commit-window-ms", str(window_ms)]) as s:
        p = subprocess.run([LOADGEN, "--server", s.url, "--data", s.data, "--devices", "16",
                            "--batch", "4", "--changes", "60", "--rate", "400", "--json"],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
        r = json.loads(p.stdout)
        assert r["push"]["changes_acked"] == 960 and r["verify"]["ok"], r
        m = metrics(s)
    jobs = metric(m, "shahidi_group_commit_jobs_sum")
    commits = metric(m, "shahidi_group_commit_jobs_count")
    holds = metric(m, "shahidi_commit_window_holds_total")
    held = metric(m, "shahidi_commit_window_held_seconds_total")
    print(f"   window {window_ms} ms: {jobs:.0f} jobs in {commits:.0f} commits "
          f"({jobs / commits:.2f} each), {holds:.0f} held {held * 1000:.0f} ms in all, "
          f"push p50 {r['latency_ms']['p50']:.1f} ms p99 {r['latency_ms']['p99']:.1f} ms")
    return jobs / commits, holds, held, r["latency_ms"]


def test_commits_hold_several_batches_under_concurrent_pushes():
    # Batches come 10 ms apart; a 40 ms window gathers about four of them.
    # Without the window a commit (well under 10 ms here) holds one or two.
    per_commit, holds, held, lat = paced_fleet(40)
    assert per_commit >= 2.5 and holds > 0, (per_commit, holds)
    # The bound: commits waited the window at most (on average over all
    # holds, so that a thread woken a few ms late on a busy machine counts
    # little).
    assert held <= holds * 0.045, (held, holds)
    off, holds_off, _, _ = paced_fleet(0)
    assert holds_off == 0, holds_off
    assert per_commit > 1.5 * off, (per_commit, off)


def lone_phone_latencies(s, dev, n):
    out = []
    for _ in range(n):
        body = batch(dev, [report(dev)])
        t0 = time.monotonic()
        st, _ = push(s.port, dev, body)
        out.append(time.monotonic() - t0)
        assert st == 200
    return out


def test_a_lone_phone_never_waits():
    # A 100 ms window: a lone phone that waited for it would take 100 ms a
    # push; it must be answered as soon as its commit is durable.
    with Server(quiet=True, args=["--commit-window-ms", "100"]) as s:
        a = Device(s.data, "alone")
        lat = lone_phone_latencies(s, a, 20)
        m = metrics(s)
        assert metric(m, "shahidi_commit_window_holds_total") == 0, m
        print(f"   20 pushes: median {statistics.median(lat) * 1000:.1f} ms, "
              f"max {max(lat) * 1000:.1f} ms")
        assert statistics.median(lat) < 0.050, lat


def test_a_refused_push_leaves_nothing_to_wait_for():
    # A push refused after it was read (it does not decode; it names another
    # device) is counted as on its way to the writer while it is decoded;
    # the count must drop, or every later commit would wait for it.
    with Server(quiet=True, args=["--commit-window-ms", "100"]) as s:
        a, b = Device(s.data, "a"), Device(s.data, "b")
        st, _ = push(s.port, a, b"\x0a\xff\xff garbage")
        assert st == 400, st
        st, _ = push(s.port, a, batch(b, [report(b)]))
        assert st == 403, st
        lat = lone_phone_latencies(s, b, 5)
        m = metrics(s)
        assert metric(m, "shahidi_commit_window_holds_total") == 0, m
        assert statistics.median(lat) < 0.050, lat


def test_a_bad_window_is_refused():
    for good in ["0", "2.5", "100"]:
        with Server(quiet=True, args=["--commit-window-ms", good]) as s:
            assert request(s.port, "GET", "/healthz")[0] == 200
    for bad in ["-1", "101", "x", "5ms", ""]:
        with tempfile.TemporaryDirectory(prefix="shahidi-cw-") as d:
            data = os.path.join(d, "never")
            p = subprocess.run([SERVER, "--data", data, "--listen", "127.0.0.1:0",
                                "--commit-window-ms", bad],
                               capture_output=True, text=True, timeout=30)
            assert p.returncode == 2, (bad, p.returncode, p.stderr)
            assert f"bad value '{bad}' for --commit-window-ms" in p.stderr, (bad, p.stderr)
            assert not os.path.exists(data)


run_tests(globals())
