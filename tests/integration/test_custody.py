"""Tamper evidence that reaches what is served: `shahidi verify` makes every
record again from the log and names the first that differs; a rewrite that
recomputes the whole chain is caught by a head pinned outside the store or
by a signed checkpoint; the server refuses to start on a store whose last
links do not verify. The attacker here edits data.mdb with LMDB itself."""
import hashlib
import os
import re
import struct
import subprocess
import tempfile

import lmdb

from harness import (SERVER, Device, Server, batch, cli, edit, pb, push, report, run_tests)
import store_pb2 as spb  # noqa: E402  (beside shahidi_pb2, in the build)


def open_env(data):
    return lmdb.open(data, subdir=True, max_dbs=32, map_size=1 << 32)


def be64(n):
    return struct.pack(">Q", n)


def verify(data, *args):
    return cli("verify", "--data", data, *args, check=False)


def make_store(s):
    """Three reports of phone A, the second edited (a full record); the
    others point at their change."""
    a = Device(s.data, "A")
    recs = [report(a, narrative=f"Taken from the market, account {i}.") for i in range(3)]
    assert push(s.port, a, batch(a, recs))[0] == 200
    e = edit(a, recs[1].record_id, 62, "text", "Beaten at the post, edited account.",
             [(recs[1].hlc, a.id)])
    assert push(s.port, a, batch(a, [e]))[0] == 200
    return a, recs


def test_verify_names_a_forged_record_and_a_moved_pointer():
    with Server() as s:
        a, recs = make_store(s)
        assert s.stop() == 0
        rc, out, _ = verify(s.data)
        assert rc == 0 and "each made again from the log: all equal" in out, out
        env = open_env(s.data)
        recs_db = env.open_db(b"recs")
        # a forged narrative written into the merged record
        with env.begin(write=True, db=recs_db) as t:
            for k, v in t.cursor():
                if b"edited account" in v:
                    t.put(k, v.replace(b"Beaten at the post", b"Kicked at the post"))
                    break
            else:
                raise AssertionError("no full record found")
        rc, out, _ = verify(s.data)
        rid1 = str(__import__("uuid").UUID(bytes=recs[1].record_id))
        assert rc == 1 and f"BROKEN: record {rid1} differs" in out, out
        # put it back, then move a pointer record to another report's change
        with env.begin(write=True, db=recs_db) as t:
            for k, v in t.cursor():
                if b"Kicked at the post" in v:
                    t.put(k, v.replace(b"Kicked at the post", b"Beaten at the post"))
        assert verify(s.data)[0] == 0
        with env.begin(write=True, db=recs_db) as t:
            pointers = []
            for k, v in t.cursor():
                r = spb.Record.FromString(v)
                if r.log_seq:
                    pointers.append((k, r))
            (k0, r0), (_, r1) = pointers[0], pointers[1]
            r0.log_seq = r1.log_seq
            t.put(k0, r0.SerializeToString())
        env.close()
        rc, out, _ = verify(s.data)
        assert rc == 1 and "BROKEN: record" in out and "another record" in out, out


def rewrite_history(data, text_from, text_to):
    """What a capable attacker does: edit a report in the log, recompute its
    digest, every chain link after it and the stored head."""
    env = open_env(data)
    log_db, meta_db = env.open_db(b"log"), env.open_db(b"meta")
    with env.begin(write=True) as t:
        prev = bytes(32)
        for k, v in t.cursor(db=log_db):
            e = spb.LogEntry.FromString(v)
            seq = struct.unpack(">Q", k)[0]
            if text_from.encode() in e.change:
                ch = pb.Change.FromString(e.change)
                for fw in ch.fields:
                    if fw.value.text and text_from in fw.value.text:
                        fw.value.text = fw.value.text.replace(text_from, text_to)
                e.change = ch.SerializeToString()
                e.change_digest = hashlib.blake2b(e.change, digest_size=32).digest()
            e.hash = hashlib.blake2b(prev + be64(seq) + be64(e.received_ms) + be64(e.device) +
                                     be64(e.batch_seq) + be64(e.record_seq) + e.change_digest,
                                     digest_size=32).digest()
            prev = e.hash
            t.put(k, e.SerializeToString(), db=log_db)
        c = spb.Counters.FromString(t.get(b"counters", db=meta_db))
        c.head_hash = prev
        t.put(b"counters", c.SerializeToString(), db=meta_db)
    env.close()


def test_a_recomputed_chain_is_caught_by_what_was_pinned_outside():
    with Server() as s, tempfile.TemporaryDirectory(prefix="shahidi-keys-") as keys:
        make_store(s)
        assert s.stop() == 0
        rc, out, _ = verify(s.data)
        head = re.search(r"head ([0-9a-f]{64})", out).group(1)
        # the admin's key lives outside the data directory
        key = os.path.join(keys, "checkpoint.key")
        _, out, _ = cli("checkpoint", "keygen", "--out", key)
        pub = re.search(r"public key ([0-9a-f]{64})", out).group(1)
        assert oct(os.stat(key).st_mode & 0o777) == "0o600"
        _, line, _ = cli("checkpoint", "sign", "--data", s.data, "--key", key)
        saved = os.path.join(keys, "checkpoints")
        with open(saved, "w") as f:
            f.write(line)
        rc, out, _ = verify(s.data, "--expect-head", head, "--checkpoint-key", pub)
        assert rc == 0 and "expected head found" in out and "1 signed by this key" in out, out

        rewrite_history(s.data, "account 0", "account X")
        # the chain alone cannot tell: it was recomputed
        rc, out, _ = verify(s.data)
        assert rc == 0, out
        rc, out, _ = verify(s.data, "--expect-head", head)
        assert rc == 1 and "does not pass through the expected head" in out, out
        rc, out, _ = verify(s.data, "--checkpoint-key", pub)
        assert rc == 1 and "does not match the chain" in out, out
        # and when the attacker also drops the checkpoint from the audit log,
        # the line saved outside still catches it
        env = open_env(s.data)
        with env.begin(write=True, db=env.open_db(b"audit")) as t:
            for k, v in t.cursor():
                if b'"checkpoint"' in v:
                    t.delete(k)
        env.close()
        rc, out, _ = verify(s.data, "--checkpoint-key", pub)
        assert rc == 1 and "no checkpoint signed by this key" in out, out
        rc, out, _ = verify(s.data, "--checkpoint-key", pub, "--checkpoint-file", saved)
        assert rc == 1 and "does not match the chain" in out, out


def test_the_server_refuses_a_store_whose_last_links_break():
    with Server() as s:
        make_store(s)
        assert s.stop() == 0
        env = open_env(s.data)
        log_db = env.open_db(b"log")
        with env.begin(write=True, db=log_db) as t:
            k, v = list(t.cursor())[-1]
            e = spb.LogEntry.FromString(v)
            e.batch_seq += 1  # its link no longer verifies
            t.put(k, e.SerializeToString())
        env.close()
        p = subprocess.run([SERVER, "--data", s.data, "--listen", "127.0.0.1:0"],
                           capture_output=True, timeout=30)
        assert p.returncode == 1 and b"refusing to serve it" in p.stderr, p.stderr
        assert b"--i-know-the-store-is-damaged" in p.stderr
        s.args = ["--i-know-the-store-is-damaged"]
        s.start()
        assert "do NOT verify: serving a damaged store" in s.logtext()
        assert s.stop() == 0


if __name__ == "__main__":
    run_tests(globals())
