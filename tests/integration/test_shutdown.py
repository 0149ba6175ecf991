"""SIGTERM (and SIGINT, Ctrl-C) while phones push: every phone either got its acknowledgement
(and the data is there after a restart) or got none (and its retry applies
the batch exactly once). The server exits 0 and the store opens cleanly."""
import random
import signal
import time

from harness import (APPLIED, DUPLICATE, Device, Server, batch, join_all, push, report,
                     run_tests, store_state, workers)


NB = 40


def test_sigterm_during_pushes():
    stop_during_pushes(signal.SIGTERM, 7)


def test_sigint_during_pushes():
    stop_during_pushes(signal.SIGINT, 8)


def stop_during_pushes(sig, seed):
    rng = random.Random(seed)
    srv = Server(quiet=True)
    srv.start()
    devs = [Device(srv.data, f"phone {i}") for i in range(6)]
    # Every phone has 40 batches of 25 new reports ready.
    plan = {d.id: [batch(d, [report(d) for _ in range(25)]) for _ in range(NB)] for d in devs}
    acked = {d.id: set() for d in devs}

    def phone(d):
        for i, body in enumerate(plan[d.id]):
            try:
                st, r = push(srv.port, d, body)
            except OSError:
                return  # the server went away: this batch is not acknowledged
            if st == 200:
                assert all(x.status == APPLIED for x in r.results), r
                acked[d.id].add(i)
            elif st != 503:
                raise AssertionError((st, r))
    threads = workers(phone, devs)  # an assertion in a phone fails the test
    # Stop once some batches are acknowledged, at a random moment after.
    while sum(len(v) for v in acked.values()) < 10:
        time.sleep(0.001)
    time.sleep(rng.uniform(0, 0.02))
    rc = srv.stop(sig)
    join_all(threads, timeout=60)
    assert rc == 0, srv.logtext()
    n_acked = sum(len(v) for v in acked.values())
    assert 0 < n_acked < 6 * NB, n_acked  # the stop really fell mid-way

    # Restart: everything acknowledged is there, and the store is intact.
    entries, _, records, _ = store_state(srv.data)
    assert records >= n_acked * 25 and entries == records
    srv.start()
    # The phones retry whatever they did not hear back about, and (as a
    # phone over a bad link would) some that they did.
    for d in devs:
        for i, body in enumerate(plan[d.id]):
            st, r = push(srv.port, d, body)
            assert st == 200, r
            want = {APPLIED} if i in acked[d.id] else {APPLIED, DUPLICATE}
            assert {x.status for x in r.results} <= want
    assert srv.stop() == 0
    entries, _, records, _ = store_state(srv.data)
    assert records == entries == 6 * NB * 25  # each change exactly once
    srv.tmp.cleanup()


if __name__ == "__main__":
    run_tests(globals())
