"""Durability you can see: the server runs under tests/shim/iolog.c (an
LD_PRELOAD shim) that records, in order, every write of the LMDB data file,
every fsync/fdatasync/msync of it, and every write on a socket. Phones push
concurrently; for every push answer, the commit before it (the last write
of a meta page) and every data-file write up to that commit must have
reached the disk first: written through an O_DSYNC descriptor, or followed
by a sync before the answer left. A store opened with MDB_NOSYNC fails."""
import os
import threading
import time

from harness import (APPLIED, Device, Server, batch, iolog_env, iolog_read, push, report,
                     run_tests, store_state)

META_END = 8192  # LMDB's two meta pages (4 KiB pages on this platform)


def check_acks_follow_syncs(events):
    """Returns (answers, commits, syncs, [ns from covering sync to answer]);
    raises AssertionError at the first answer sent before its commit was
    on disk."""
    dsync_fd = {}            # data fd -> opened with O_DSYNC
    last_nondurable = -1     # seq of the latest data write not yet on disk by itself
    need = -1                # at the latest commit: the write a sync must follow
    last_sync = (-1, 0)      # (seq, ns)
    answers = commits = syncs = 0
    margins = []
    for seq, ns, kind, fd, a1, a2, first in events:
        if kind == "open":
            dsync_fd[fd] = bool(a1)
        elif kind == "dwrite":
            if not dsync_fd.get(fd, False):
                last_nondurable = seq
            if 0 <= a1 < META_END:
                commits += 1
                need = last_nondurable
        elif kind in ("dsync", "msync"):
            syncs += 1
            last_sync = (seq, ns)
        elif kind == "swrite" and first.startswith(b"HTTP/1.1 200"):
            answers += 1
            assert commits > 0, f"answer #{seq} before any commit"
            assert need < last_sync[0], (
                f"answer #{seq} left while data write #{need} of its commit was not yet "
                f"synced (last sync #{last_sync[0]})")
            margins.append(ns - last_sync[1] if last_sync[0] >= 0 else 0)
    return answers, commits, syncs, margins


def test_every_ack_follows_the_sync_of_its_commit():
    srv = Server(quiet=True)
    log = os.path.join(srv.tmp.name, "iolog")
    srv.env = iolog_env(log)
    phones = []
    with srv:
        phones = [Device(srv.data, f"phone {i}") for i in range(6)]
        errors = []

        def run(d):
            try:
                for _ in range(10):
                    st, r = push(srv.port, d, batch(d, [report(d) for _ in range(10)]))
                    assert st == 200 and all(x.status == APPLIED for x in r.results), r
            except Exception as e:  # noqa: BLE001 (re-raised below)
                errors.append(e)
        t0 = time.time()
        threads = [threading.Thread(target=run, args=(d,)) for d in phones]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        took = time.time() - t0
        assert srv.stop() == 0
        assert store_state(srv.data)[2] == 600
        events = iolog_read(log)
    assert any(k == "open" for _, _, k, *_ in events), "the shim saw no data file opened"
    answers, commits, syncs, margins = check_acks_follow_syncs(events)
    # the shim saw what the test did: 60 answers, and commits that wrote
    assert answers == 60, answers
    assert commits >= 2 and syncs >= 1, (commits, syncs)
    margins.sort()
    print(f"   60 pushes in {took:.2f} s: {commits} commits, {syncs} syncs of the data file; "
          f"from covering sync to answer: median {margins[len(margins) // 2] / 1e3:.0f} us")


def test_the_check_catches_an_unsynced_ack():
    # The checker itself, on a hand-made trace: pages written, meta page
    # written (no O_DSYNC), answer sent, no sync: refused.
    trace = [(0, 0, "open", 5, 0, 0, b""), (1, 1, "dwrite", 5, 40960, 4096, b""),
             (2, 2, "dwrite", 5, 4096, 128, b""), (3, 3, "swrite", 9, 0, 60, b"HTTP/1.1 200 OK")]
    try:
        check_acks_follow_syncs(trace)
    except AssertionError:
        pass
    else:
        raise AssertionError("an ack before any sync passed the check")
    ok = trace[:2] + [(2, 2, "dsync", 5, 0, 0, b""), (3, 3, "open", 6, 1, 0, b""),
                      (4, 4, "dwrite", 6, 4096, 128, b""),
                      (5, 5, "swrite", 9, 0, 60, b"HTTP/1.1 200 OK")]
    assert check_acks_follow_syncs(ok)[:3] == (1, 1, 1)


if __name__ == "__main__":
    run_tests(globals())
