"""Crash consistency: the server is killed with SIGKILL at random moments,
20 times, while phones push; each time it restarts on the same store.
At the end every acknowledged change is in the store exactly once, the
store opened cleanly every time, the phones' retries finished without
duplicates, and exports before and after a restart agree. Then a full
disk: 507, reads still served, and accepted again once space returns."""
import os
import random
import signal
import subprocess
import threading
import time

from harness import (APPLIED, DUPLICATE, Device, Server, batch, cli, push, report, request,
                     run_tests, store_state)

SEED = int(os.environ.get("SEED", "20261127"))


def test_sigkill_twenty_times_under_load():
    rng = random.Random(SEED)
    print(f"   seed {SEED} (replay with SEED={SEED})")
    srv = Server(quiet=True)
    srv.start()
    phones = [Device(srv.data, f"phone {i}") for i in range(8)]
    plans = {p.id: [batch(p, [report(p) for _ in range(rng.randint(5, 40))])
                    for _ in range(30)] for p in phones}
    acked = {p.id: {} for p in phones}   # batch index -> results
    port = {"now": srv.port}
    done = threading.Event()

    def phone(p):
        i = 0
        while i < len(plans[p.id]) and not done.is_set():
            try:
                st, r = push(port["now"], p, plans[p.id][i])
            except OSError:
                time.sleep(0.02)  # the server is down: retry, as a phone does
                continue
            if st != 200:
                time.sleep(0.02)
                continue
            statuses = [x.status for x in r.results]
            assert set(statuses) <= {APPLIED, DUPLICATE}, statuses
            acked[p.id][i] = statuses
            i += 1

    threads = [threading.Thread(target=phone, args=(p,)) for p in phones]
    for t in threads:
        t.start()
    kills = 0
    while kills < 20:
        time.sleep(rng.uniform(0.02, 0.25))
        srv.kill()
        kills += 1
        # the store opens cleanly after every crash
        srv.start()
        port["now"] = srv.port
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    done.set()
    want = 0
    for p in phones:
        assert len(acked[p.id]) == 30
        want += sum(len(pbatch_changes(b)) for b in plans[p.id])
    entries, _, records, _ = store_state(srv.data)
    assert entries == records == want, (entries, records, want)  # exactly once
    _, out, _ = cli("verify", "--data", srv.data)
    assert "hash chain intact" in out
    # exports before and after a crash agree
    _, before, _ = cli("export", "--data", srv.data, "--format", "ndjson", "--quiet")
    srv.kill()
    srv.start()
    _, after, _ = cli("export", "--data", srv.data, "--format", "ndjson", "--quiet")
    assert before == after and before.count("\n") == want
    assert srv.stop() == 0
    srv.tmp.cleanup()


def pbatch_changes(body):
    from harness import pb
    b = pb.PushBatch()
    b.ParseFromString(body)
    return b.changes


def test_disk_full_507_then_recovers():
    mnt = tempfile_dir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", mnt], check=True)
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        raise AssertionError(f"this test mounts a small tmpfs (needs root): {e}")
    try:
        data = os.path.join(mnt, "data")
        filler = os.path.join(mnt, "filler")
        with open(filler, "wb") as f:
            f.write(b"\0" * (5 << 20))
        with Server(data=data, args=["--map-size", "64M"], quiet=True) as s:
            p = Device(s.data, "phone")
            admin = Device(s.data, "admin", role="admin")
            acked = 0
            st = 200
            while st == 200:
                st, r = push(s.port, p, batch(p, [report(p) for _ in range(100)]))
                if st == 200:
                    acked += 100
            assert st == 507 and r["error"] == "storage_full", (st, r)
            assert acked > 0
            # the server stays up and serves reads
            assert request(s.port, "GET", "/healthz")[0] == 200
            st, h, b = request(s.port, "GET", "/v1/status",
                               headers={"Authorization": f"Bearer {admin.token}"})
            assert st == 200
            entries, _, records, _ = store_state(s.data)
            assert entries == records == acked  # nothing acknowledged was lost
            # space returns: the same server accepts again
            os.remove(filler)
            for _ in range(5):
                st, r = push(s.port, p, batch(p, [report(p) for _ in range(100)]))
                assert st == 200, r
            entries, _, records, _ = store_state(s.data)
            assert records == acked + 500
    finally:
        subprocess.run(["umount", "-l", mnt], check=False)
        os.rmdir(mnt)


def tempfile_dir():
    import tempfile
    return tempfile.mkdtemp(prefix="shahidi-tmpfs-")


if __name__ == "__main__":
    run_tests(globals())
