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
import uuid

import lmdb
import zstandard

from harness import (SERVER, Device, Server, assign, batch, cli, edit, pb, pull, push, report,
                     request, run_tests)
import store_pb2 as spb  # noqa: E402  (beside shahidi_pb2, in the build)


def open_env(data):
    return lmdb.open(data, subdir=True, max_dbs=32, map_size=1 << 32)


def be64(n):
    return struct.pack(">Q", n)


def change_of(e):
    """A LogEntry's change as received: kept as a zstd frame when that was
    smaller (store format 7)."""
    if e.change_zstd:
        return zstandard.ZstdDecompressor().decompress(e.change_zstd)
    return e.change


def set_change(e, raw):
    """What an attacker writes: the change as plain bytes."""
    e.change = raw
    e.ClearField("change_zstd")


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
            if text_from.encode() in change_of(e):
                ch = pb.Change.FromString(change_of(e))
                for fw in ch.fields:
                    if fw.value.text and text_from in fw.value.text:
                        fw.value.text = fw.value.text.replace(text_from, text_to)
                set_change(e, ch.SerializeToString())
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
        # a format this program does not know is refused too, whatever the flag
        env = open_env(s.data)
        with env.begin(write=True, db=env.open_db(b"meta")) as t:
            fmt = t.get(b"format")
            t.put(b"format", b"99")
        env.close()
        p = subprocess.run([SERVER, "--data", s.data, "--listen", "127.0.0.1:0",
                            "--i-know-the-store-is-damaged"], capture_output=True, timeout=30)
        assert p.returncode == 1 and b"format '99'" in p.stderr, p.stderr
        env = open_env(s.data)
        with env.begin(write=True, db=env.open_db(b"meta")) as t:
            t.put(b"format", fmt)
        env.close()
        s.args = ["--i-know-the-store-is-damaged"]
        s.start()
        assert "do NOT verify: serving a damaged store" in s.logtext()
        assert s.stop() == 0
        # said again on every start, not only the first
        s.start()
        assert s.logtext().count("do NOT verify: serving a damaged store") == 2, s.logtext()
        assert s.stop() == 0


def test_erasure_leaves_no_copy_and_keeps_the_trail():
    secret = "Wanjiru-SECRET-7731 was taken to Kilimani post"
    with Server() as s:
        a, b = Device(s.data, "A"), Device(s.data, "B")
        admin = Device(s.data, "admin", role="admin")
        rec = report(a, narrative=secret)
        keep = report(a, narrative="Another account, kept.")
        assert push(s.port, a, batch(a, [rec, keep]))[0] == 200
        assign(s.data, rec.record_id, b)
        e = edit(b, rec.record_id, 142, "text", "Caseworker SECRET-7731", [(rec.hlc, a.id)])
        assert push(s.port, b, batch(b, [e]))[0] == 200
        rid = str(uuid.UUID(bytes=rec.record_id))
        cursor_b = pull(s.port, b).next_cursor
        # refused while the server runs: erasure rewrites the store file
        rc, _, err = cli("erase", "--data", s.data, "--as", admin.hex, "--record", rid,
                         "--reason", "data subject's request", check=False)
        assert rc == 1 and "stop it first" in err, err
        assert s.stop() == 0
        rc, _, err = cli("erase", "--data", s.data, "--as", a.hex, "--record", rid,
                         "--reason", "x", check=False)
        assert rc == 1 and "not an admin" in err, err  # a phone may not
        _, out, _ = cli("erase", "--data", s.data, "--as", admin.hex, "--record", rid,
                        "--reason", "data subject's request, ref DPA-2026-14")
        assert "content of 2 change(s) dropped" in out, out
        with open(os.path.join(s.data, "data.mdb"), "rb") as f:
            assert b"SECRET-7731" not in f.read()
        backup = os.path.join(s.tmp.name, "backup")
        cli("backup", "--data", s.data, backup)
        with open(os.path.join(backup, "data.mdb"), "rb") as f:
            data = f.read()
            assert b"SECRET-7731" not in data and b"Another account, kept." in data
        # the chain still verifies, every record is what its log makes
        rc, out, _ = verify(s.data)
        assert rc == 0 and "all equal" in out and "erased: 1 record(s)" in out, out
        # history, export and audit work on the erased record
        _, out, _ = cli("history", "--data", s.data, "--json", rid)
        h = __import__("json").loads(out)
        assert [x.get("erased", False) for x in h["history"]] == [True, True, True], h
        assert "SECRET" not in out
        _, out, _ = cli("export", "--data", s.data, "--format", "ndjson", "--include-deleted",
                        "--include-sensitive", "--quiet")
        assert "SECRET" not in out and rid in out and "Another account" in out
        _, out, _ = cli("audit", "--data", s.data)
        assert '"action":"erase"' in out and "DPA-2026-14" in out
        _, out, _ = cli("status", "--data", s.data, "--json")
        st = __import__("json").loads(out)
        assert "SECRET" not in out and st, out[:300]
        rc, _, err = cli("erase", "--data", s.data, "--as", admin.hex, "--record", rid,
                         "--reason", "again", check=False)
        assert rc == 1 and "erased before" in err
        # the holders pull the erasure (and nothing of what was erased)
        s.start()
        st, _, body = request(s.port, "GET", "/v1/status",
                              headers={"Authorization": f"Bearer {admin.token}"})
        assert st == 200 and b"SECRET" not in body, (st, body[:300])
        st, _, body = request(s.port, "GET", "/v1/history?record=" + rid,
                              headers={"Authorization": f"Bearer {admin.token}"})
        assert st == 200 and b"SECRET" not in body and b"erased" in body, (st, body[:300])
        p = pull(s.port, b, cursor=cursor_b)
        assert len(p.changes) == 1 and p.changes[0].change.erased, p
        assert p.changes[0].change.deletion.deleted and not p.changes[0].change.fields
        p = pull(s.port, a)
        assert all("SECRET" not in str(c) for c in p.changes)
        assert any(c.change.erased for c in p.changes), p


def test_every_checkpoint_is_read():
    """Checkpoints signed daily for months: verify reads every one of them,
    the newest too (it read the first 64 and silently dropped the rest, so
    a rewrite covered only by a later checkpoint passed)."""
    with Server() as s, tempfile.TemporaryDirectory(prefix="shahidi-keys-") as keys:
        a, _ = make_store(s)
        assert s.stop() == 0
        key = os.path.join(keys, "checkpoint.key")
        _, out, _ = cli("checkpoint", "keygen", "--out", key)
        pub = re.search(r"public key ([0-9a-f]{64})", out).group(1)
        saved = os.path.join(keys, "checkpoints")
        with open(saved, "w") as f:
            for _ in range(70):
                f.write(cli("checkpoint", "sign", "--data", s.data, "--key", key)[1])
        s.start()
        late = report(a, narrative="A late account, signed for on day 71.")
        assert push(s.port, a, batch(a, [late]))[0] == 200
        assert s.stop() == 0
        with open(saved, "a") as f:
            f.write(cli("checkpoint", "sign", "--data", s.data, "--key", key)[1])
        rc, out, _ = verify(s.data, "--checkpoint-key", pub, "--checkpoint-file", saved)
        assert rc == 0 and "142 signed by this key" in out, out
        # the late report rewritten, the chain recomputed: only the 71st
        # checkpoint covers it
        rewrite_history(s.data, "A late account", "A forged account")
        rc, out, _ = verify(s.data, "--checkpoint-key", pub)
        assert rc == 1 and "does not match the chain" in out, out
        rc, out, _ = verify(s.data, "--checkpoint-key", pub, "--checkpoint-file", saved)
        assert rc == 1 and "does not match the chain" in out, out


def test_content_dropped_without_an_erasure_is_caught():
    """Erasure keeps each change's digest, so the chain and the checkpoints
    still verify when content is dropped. An attacker who drops an edit's
    content the same way, and merges the record again from what is left
    (`shahidi rebuild`), must not pass verify: content may be gone only
    from a record that was erased, before its erasure's change."""
    with Server() as s, tempfile.TemporaryDirectory(prefix="shahidi-keys-") as keys:
        a, recs = make_store(s)
        assert s.stop() == 0
        key = os.path.join(keys, "checkpoint.key")
        _, out, _ = cli("checkpoint", "keygen", "--out", key)
        pub = re.search(r"public key ([0-9a-f]{64})", out).group(1)
        cli("checkpoint", "sign", "--data", s.data, "--key", key)
        env = open_env(s.data)
        with env.begin(write=True, db=env.open_db(b"log")) as t:
            for k, v in t.cursor():
                e = spb.LogEntry.FromString(v)
                if b"edited account" in change_of(e):
                    set_change(e, b"")
                    e.erased = True
                    t.put(k, e.SerializeToString())
                    break
            else:
                raise AssertionError("no edit found")
        env.close()
        cli("rebuild", "--data", s.data)
        _, out, _ = cli("show", "--data", s.data, str(uuid.UUID(bytes=recs[1].record_id)))
        assert "edited account" not in out, out  # the edit is gone from what is served
        rc, out, _ = verify(s.data, "--checkpoint-key", pub)
        rid1 = str(uuid.UUID(bytes=recs[1].record_id))
        assert rc == 1 and f"BROKEN: record {rid1}" in out and "not erased" in out, out


def test_a_phone_cannot_mark_a_change_erased():
    """Change.erased is the server's (shahidi erase): a phone's change that
    sets it is rejected, not relayed to the record's holders (whose apps
    would remove the record while the server keeps it)."""
    with Server() as s:
        a, b = Device(s.data, "A"), Device(s.data, "B")
        rec = report(a)
        assert push(s.port, a, batch(a, [rec]))[0] == 200
        assign(s.data, rec.record_id, b)
        cursor_b = pull(s.port, b).next_cursor
        d = edit(a, rec.record_id, 62, "text", "x", [(rec.hlc, a.id)])
        del d.fields[:]
        d.deletion.deleted = True
        d.deletion.seen.add(hlc=rec.hlc, device=a.id)
        d.erased = True
        st, r = push(s.port, a, batch(a, [d]))
        assert st == 200 and r.results[0].status == pb.ChangeResult.REJECTED, r
        assert r.results[0].code == "erased_not_allowed", r
        assert not pull(s.port, b, cursor=cursor_b).changes


def test_the_checkpoint_key_stays_out_of_the_data_directory():
    """The signing key must not live beside what it pins (whoever can
    rewrite the store could then sign the rewrite, and backups would carry
    it): keygen refuses to write it into the data directory, sign refuses
    a key read from there; nothing is written either way."""
    with Server() as s, tempfile.TemporaryDirectory(prefix="shahidi-keys-") as keys:
        make_store(s)
        assert s.stop() == 0
        inside = os.path.join(s.data, "checkpoint.key")
        rc, _, err = cli("checkpoint", "keygen", "--data", s.data, "--out", inside, check=False)
        assert rc == 2 and "outside the data directory" in err, err
        assert not os.path.exists(inside)
        os.mkdir(os.path.join(s.data, "sub"))
        rc, _, err = cli("checkpoint", "keygen", "--data", s.data + "/",
                         "--out", os.path.join(s.data, "sub", "..", "sub", "k"), check=False)
        assert rc == 2 and "outside the data directory" in err, err
        key = os.path.join(keys, "checkpoint.key")
        cli("checkpoint", "keygen", "--data", s.data, "--out", key)
        with open(key) as f, open(inside, "w") as g:
            g.write(f.read())
        _, before, _ = cli("audit", "--data", s.data)
        rc, _, err = cli("checkpoint", "sign", "--data", s.data, "--key", inside, check=False)
        assert rc == 2 and "outside the data directory" in err, err
        assert cli("audit", "--data", s.data)[1] == before
        # a key kept outside signs
        assert cli("checkpoint", "sign", "--data", s.data, "--key", key)[0] == 0


if __name__ == "__main__":
    run_tests(globals())
