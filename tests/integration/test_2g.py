"""The field is 2G and lossy: phones sync through a seeded fault-injecting
proxy (50 kbit/s, 600 ms round trip, stalls, connections cut mid-request
and mid-response) with retries and backoff until done. Every change
arrives exactly once (the load generator verifies it in the store), and
the bytes on the wire per change and the time to sync 100 reports are
reported. SEED=n replays a run."""
import json
import os
import subprocess

from faultproxy import FaultProxy
from harness import BUILD, Server, run_tests, store_state

LOADGEN = os.path.join(BUILD, "tools", "shahidi-loadgen")
SEED = int(os.environ.get("SEED", "11"))


def test_phones_on_a_2g_link():
    print(f"   seed {SEED} (replay with SEED={SEED})")
    with Server(quiet=True) as s:
        proxy = FaultProxy(s.port, seed=SEED, kbit=50, delay_ms=300, stall_p=0.03,
                           stall_s=(0.3, 1.5), cut_p=0.01, cut_first=3).start()
        try:
            p = subprocess.run([LOADGEN, "--server", f"http://127.0.0.1:{proxy.port}",
                                "--data", s.data, "--devices", "3", "--batch", "20",
                                "--changes", "100", "--seed", str(SEED), "--retries", "60",
                                "--timeout", "15", "--seconds", "240", "--json"],
                               capture_output=True, text=True, timeout=300)
        finally:
            proxy.stop()
        assert p.returncode == 0, p.stdout + p.stderr
        r = json.loads(p.stdout)
        assert r["verify"]["ok"], r["verify"]
        assert r["push"]["changes_acked"] == 300 and r["push"]["changes_unsent"] == 0
        st = proxy.stats
        print(f"   link: {st['connections']} connections, {st['cuts']} cut, {st['stalls']} stalls; "
              f"{r['push']['attempts']} push attempts for {r['push']['batches_acked']} batches")
        print(f"   {r['wire']['bytes_per_change']:.0f} bytes on the wire per change "
              f"({r['wire']['request_bytes_per_change']:.0f} up, "
              f"{r['wire']['response_bytes_per_change']:.0f} down); 100 reports per phone "
              f"synced in {r['push']['seconds']:.1f} s")
        assert st["cuts"] > 0, "the link must really cut connections"
        entries, _, records, _ = store_state(s.data)
        assert entries == 300  # exactly once, whatever the retries


if __name__ == "__main__":
    run_tests(globals())
