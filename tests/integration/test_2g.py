"""The field is 2G and lossy: phones sync through a seeded fault-injecting
proxy (50 kbit/s, 600 ms round trip, stalls, connections cut mid-request
and mid-response) with retries and backoff until done. Every change
arrives exactly once (the load generator verifies it in the store), and
the bytes on the wire per change and the time to sync 100 reports are
reported. SEED=n replays a run."""
import json
import os
import subprocess
import uuid

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


def sh(*cmd):
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)


def test_2g_bandwidth_by_tbf_in_a_network_namespace():
    """The same through the kernel's own shaper: the phones live in a
    network namespace made here, joined to this host by a veth pair with
    tbf at 50 kbit/s on both ends; the proxy on the host side adds delay,
    stalls and cuts but no bandwidth cap of its own."""
    ns = "shahidi-2g-" + uuid.uuid4().hex[:6]
    host_if, ns_if = "sh2g" + ns[-4:], "sh2n" + ns[-4:]
    try:
        sh("ip", "netns", "add", ns)
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        raise AssertionError(f"this test makes a network namespace (needs root): {e}")
    try:
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        sh("ip", "link", "set", ns_if, "netns", ns)
        sh("ip", "addr", "add", "10.77.0.1/24", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", "10.77.0.2/24", "dev", ns_if)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        for cmd in (["tc", "qdisc", "add", "dev", host_if],
                    ["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", ns_if]):
            sh(*cmd, "root", "tbf", "rate", "50kbit", "burst", "4kb", "latency", "500ms")
        with Server(quiet=True) as s:
            proxy = FaultProxy(s.port, seed=SEED, kbit=100000, delay_ms=300, stall_p=0.03,
                               stall_s=(0.3, 1.5), cut_p=0.01, cut_first=2,
                               host="10.77.0.1").start()
            try:
                p = subprocess.run(["ip", "netns", "exec", ns, LOADGEN,
                                    "--server", f"http://10.77.0.1:{proxy.port}",
                                    "--data", s.data, "--devices", "2", "--batch", "20",
                                    "--changes", "60", "--seed", str(SEED), "--retries", "60",
                                    "--timeout", "20", "--seconds", "240", "--json"],
                                   capture_output=True, text=True, timeout=300)
            finally:
                proxy.stop()
            assert p.returncode == 0, p.stdout + p.stderr
            r = json.loads(p.stdout)
            assert r["verify"]["ok"] and r["push"]["changes_acked"] == 120, r["verify"]
            secs = r["push"]["seconds"]
            up = r["wire"]["request_bytes"]
            # the kernel held the link to 50 kbit/s: it cannot have gone faster
            assert up * 8 / secs < 2 * 50000 * 1.2, (up, secs)
            print(f"   tbf 50 kbit/s + proxy faults: {r['wire']['bytes_per_change']:.0f} B/change, "
                  f"60 reports per phone in {secs:.1f} s ({up * 8 / secs / 1000:.1f} kbit/s up in all)")
            entries, _, _, _ = store_state(s.data)
            assert entries == 120
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


if __name__ == "__main__":
    run_tests(globals())
