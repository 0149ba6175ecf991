"""`shahidi restore BACKUP --data DIR`, the inverse of `shahidi backup`: it
verifies the backup first (the hash chain and every record made again from
it, as `shahidi verify` does; each attachment against its hash), never
writes into a store a server holds, refuses a non-empty DIR unless --force
(which moves what was there aside), restores the attachments, and says what
it did. And `shahidi backup --progress`."""
import hashlib
import os
import pty
import subprocess
import tempfile

import lmdb

from harness import (APPLIED, CLI, Device, Server, batch, cli, push, report, run_tests,
                     store_state)
import store_pb2 as spb  # noqa: E402  (beside shahidi_pb2, in the build)


def make_backup(s, d, name="bk"):
    """A store with two reports and one attachment file, and its backup."""
    a = Device(s.data, "A")
    assert push(s.port, a, batch(a, [report(a), report(a)]))[0] == 200
    # an attachment as the upload code leaves it: DATA/files/sha256/HASH
    blob = os.urandom(20000)
    sha = hashlib.sha256(blob).hexdigest()
    os.makedirs(os.path.join(s.data, "files", "sha256"), exist_ok=True)
    with open(os.path.join(s.data, "files", "sha256", sha), "wb") as f:
        f.write(blob)
    bk = os.path.join(d, name)
    cli("backup", "--data", s.data, bk)
    return a, bk, sha, blob


def restore(*args, check=False):
    return cli("restore", *args, check=check)


def listing(d):
    return sorted(os.listdir(d)) if os.path.exists(d) else None


def test_restore_into_a_new_directory_then_serve_it():
    with tempfile.TemporaryDirectory(prefix="shahidi-restore-") as d, Server() as s:
        a, bk, sha, blob = make_backup(s, d)
        want = store_state(s.data)
        target = os.path.join(d, "restored")
        rc, out, err = restore(bk, "--data", target)
        assert rc == 0, out + err
        # the backup as it was: no lock file of restore's owner left in it
        assert listing(bk) == ["data.mdb", "files"], listing(bk)
        assert store_state(target) == want
        assert "hash chain intact" in out and "restored" in out and "1 attachment" in out, out
        made = [n for n in listing(target) if n != "lock.mdb"]  # lock.mdb: verify's
        assert made == ["data.mdb", "files", "server.lock"], made
        assert "moved what was" not in out, out
        with open(os.path.join(target, "files", "sha256", sha), "rb") as f:
            assert f.read() == blob
        st = os.stat(target)
        assert st.st_mode & 0o777 == 0o700, oct(st.st_mode)
        assert os.stat(os.path.join(target, "data.mdb")).st_mode & 0o077 == 0
        # a copy, not a link into the backup: the backup can go elsewhere
        assert os.stat(os.path.join(target, "files", "sha256", sha)).st_ino != \
            os.stat(os.path.join(bk, "files", "sha256", sha)).st_ino
        s.stop()
        with Server(data=target) as s2:
            # the phone's token works, and what it sent before is known
            a.next_batch = 1
            st, r = push(s2.port, a, batch(a, [report(a)]))
            assert st != 200 and r["error"] == "batch_seq_reused", (st, r)
            st, r = push(s2.port, a, batch(a, [report(a)]))
            assert st == 200 and r.results[0].status == APPLIED, r
    # an empty existing directory (systemd's StateDirectory) is fine too
    with tempfile.TemporaryDirectory(prefix="shahidi-restore-") as d, Server() as s:
        _, bk, _, _ = make_backup(s, d)
        target = os.path.join(d, "empty")
        os.mkdir(target)
        # what a restore killed half-way leaves: its staging folder, removed
        os.makedirs(os.path.join(target, ".restoring-99999", "files"))
        if os.geteuid() == 0:  # as root into the service user's directory (CI is root)
            os.chown(target, 65534, 65534)
        rc, out, err = restore(bk, "--data", target)
        assert rc == 0 and store_state(target) == store_state(s.data), out + err
        if os.geteuid() == 0:
            for p in ("data.mdb", "server.lock", "files", "files/sha256"):
                assert os.stat(os.path.join(target, p)).st_uid == 65534, p
        assert not os.path.exists(os.path.join(target, ".restoring-99999"))


def test_refuses_a_live_store_and_a_non_empty_directory_unless_forced():
    with tempfile.TemporaryDirectory(prefix="shahidi-restore-") as d, Server() as s:
        _, bk, _, _ = make_backup(s, d)
        b = Device(s.data, "B")
        assert push(s.port, b, batch(b, [report(b)]))[0] == 200
        live = store_state(s.data)
        before = listing(s.data)
        # the server holds DATA/server.lock: never, not even with --force
        for extra in ([], ["--force"]):
            rc, out, err = restore(bk, "--data", s.data, *extra)
            assert rc == 1 and "a shahidi-server" in err and "stop it first" in err, err
            assert listing(s.data) == before and store_state(s.data) == live
        s.stop()
        # stopped: a store is there, so --force is needed
        rc, out, err = restore(bk, "--data", s.data)
        assert rc == 1 and "is not empty" in err and "--force" in err, err
        assert listing(s.data) == before and store_state(s.data) == live
        # --force: what was there is moved aside, not deleted
        rc, out, err = restore(bk, "--data", s.data, "--force")
        assert rc == 0, out + err
        assert store_state(s.data) != live
        aside = [n for n in os.listdir(s.data) if n.startswith("replaced-")]
        assert len(aside) == 1 and f"moved what was in {s.data} to" in out, (aside, out)
        assert store_state(os.path.join(s.data, aside[0])) == live
        rc, _, _ = cli("verify", "--data", s.data, check=False)
        assert rc == 0


def test_refuses_a_backup_that_does_not_verify_and_writes_nothing():
    with tempfile.TemporaryDirectory(prefix="shahidi-restore-") as d, Server() as s:
        _, bk, sha, _ = make_backup(s, d)
        s.stop()
        target = os.path.join(d, "target")
        # not a backup at all
        rc, _, err = restore(os.path.join(d, "nothing"), "--data", target)
        assert rc == 1 and "holds no Shahidi store" in err, err
        rc, _, err = restore("--data", target)
        assert rc == 2 and "needs the backup" in err, err
        rc, _, err = restore(bk, "--data", bk)
        assert rc == 1 and "into itself" in err, err
        # an attachment whose bytes changed
        p = os.path.join(bk, "files", "sha256", sha)
        good = open(p, "rb").read()
        with open(p, "r+b") as f:
            f.write(bytes([good[0] ^ 0xFF]))  # changed whatever it was ("X" was it 1 in 256)
        rc, out, err = restore(bk, "--data", target)
        assert rc == 1 and f"attachment {sha} does not match its hash" in err, err
        assert listing(target) in (None, []), listing(target)
        with open(p, "wb") as f:
            f.write(good)
        # a log entry altered: the chain breaks
        env = lmdb.open(bk, subdir=True, max_dbs=32, map_size=1 << 32)
        with env.begin(write=True, db=env.open_db(b"log")) as t:
            k, v = list(t.cursor())[0]
            e = spb.LogEntry.FromString(v)
            e.batch_seq += 1
            t.put(k, e.SerializeToString())
        env.close()
        rc, out, err = restore(bk, "--data", target)
        assert rc == 1 and "hash chain breaks at log entry 1" in err and "not restored" in err, \
            out + err
        assert listing(target) in (None, []), listing(target)


def set_format(store, text):
    env = lmdb.open(store, subdir=True, max_dbs=32, map_size=1 << 32)
    with env.begin(write=True, db=env.open_db(b"meta")) as t:
        t.put(b"format", text)
    env.close()


def test_a_backup_of_an_older_format_is_restored_and_merged_again_by_the_server():
    """A backup taken before a format upgrade: restore checks its chain,
    leaves its records to be merged again from the log (their rule was
    older), and the server does that when it opens it. A backup of a newer
    format than this program reads is refused."""
    with tempfile.TemporaryDirectory(prefix="shahidi-restore-") as d, Server() as s:
        a, bk, _, _ = make_backup(s, d)
        want = store_state(s.data)
        s.stop()
        set_format(bk, b"3")
        target = os.path.join(d, "target")
        rc, out, err = restore(bk, "--data", target)
        assert rc == 0 and "store format 3" in out and "merged again" in out, out + err
        with Server(data=target) as s2:
            log = s2.logtext()
        assert "store format 3 -> 8" in log, log
        assert store_state(target) == want
        set_format(bk, b"99")
        rc, out, err = restore(bk, "--data", os.path.join(d, "t2"))
        assert rc == 1 and "holds store format '99'" in err, out + err
        assert not os.path.exists(os.path.join(d, "t2"))


def test_backup_progress():
    with tempfile.TemporaryDirectory(prefix="shahidi-restore-") as d, Server() as s:
        make_backup(s, d)
        # not a terminal and no --progress: nothing on stderr
        rc, out, err = cli("backup", "--data", s.data, os.path.join(d, "b1"))
        assert rc == 0 and err == "", err
        rc, out, err = cli("backup", "--progress", "--data", s.data, os.path.join(d, "b2"))
        assert rc == 0 and "backup: copied " in err and " of at most " in err, err
        assert "1 attachment" in err, err
        assert store_state(os.path.join(d, "b2")) == store_state(s.data)
        # stderr a terminal: progress without --progress, one line redrawn
        master, slave = pty.openpty()
        p = subprocess.run([CLI, "backup", "--data", s.data, os.path.join(d, "b3")],
                           stdout=subprocess.PIPE, stderr=slave, timeout=120)
        os.close(slave)
        got = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the terminal's other end is closed
                break
            if not chunk:
                break
            got += chunk
        os.close(master)
        assert p.returncode == 0 and b"\rbackup: copied " in got, got


run_tests(globals())
