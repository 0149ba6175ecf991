"""The `shahidi` CLI on a real store: demo, conflicts resolve (take, value,
deleted), assign (and its audit entry), history, and verify catching a
change whose bytes were edited on disk."""
import json
import os
import re
import tempfile
import uuid

from harness import (Device, Server, assign, batch, cli, edit, pb, pull, push, report, run_tests,
                     store_state)


def rid_of(rec):
    return str(uuid.UUID(bytes=rec.record_id))


def test_demo():
    with tempfile.TemporaryDirectory(prefix="shahidi-demo-") as d:
        data = os.path.join(d, "data")
        _, out, _ = cli("demo", "--data", data)
        # both edits kept, one shown, the conflict listed
        assert "CONFLICT: 2 values" in out, out
        _, conf, _ = cli("conflicts", "--data", data)
        assert "1 record with open conflicts" in conf, conf
        entries, _, records, _ = store_state(data)
        assert records == 3 and entries == 5, (entries, records)


def test_resolve_assign_and_history():
    with Server() as s:
        a, b, c = Device(s.data, "A"), Device(s.data, "B"), Device(s.data, "C")
        coord = Device(s.data, "coordinator", "047", role="coordinator")
        r1, r2 = report(a), report(a)
        push(s.port, a, batch(a, [r1, r2]))
        for rec in (r1, r2):
            seen = [(rec.hlc, a.id)]
            push(s.port, a, batch(a, [edit(a, rec.record_id, 140, "choice", "high", seen)]))
            assign(s.data, rec.record_id, b)
            push(s.port, b, batch(b, [edit(b, rec.record_id, 140, "choice", "urgent", seen)]))
        _, out, _ = cli("conflicts", "--data", s.data)
        assert "2 records with open conflicts" in out, out
        # --take: phone B's value
        cli("conflicts", "resolve", "--data", s.data, "--as", coord.hex, rid_of(r1), "risk_level",
            "--take", b.hex)
        _, out, _ = cli("show", "--data", s.data, rid_of(r1))
        assert "Urgent" in out and "CONFLICT" not in out, out
        # --value: one nobody wrote
        cli("conflicts", "resolve", "--data", s.data, "--as", coord.hex, rid_of(r2), "140",
            "--value", '"low"')
        _, out, _ = cli("show", "--data", s.data, rid_of(r2))
        assert "Low" in out and "CONFLICT" not in out, out
        _, out, _ = cli("conflicts", "--data", s.data)
        assert "0 records with open conflicts" in out or "no open conflicts" in out.lower(), out
        # a wrong resolution is refused and changes nothing
        before = store_state(s.data)
        rc, _, err = cli("conflicts", "resolve", "--data", s.data, "--as", coord.hex, rid_of(r1),
                         "risk_level", "--take", a.hex, check=False)
        assert rc != 0 and store_state(s.data) == before, err
        # the phones pull the resolutions made by the CLI, server running
        got = pull(s.port, a)
        assert any(x.device == coord.id for x in got.changes), got

        # assign r1 to phone C: it pulls the whole history, and it is audited
        assert len(pull(s.port, c).changes) == 0
        cli("assign", "--data", s.data, rid_of(r1), c.hex)
        got = pull(s.port, c)
        assert {x.change.record_id for x in got.changes} == {r1.record_id}
        assert len(got.changes) == 4, got  # create, two edits, resolution
        _, out, _ = cli("audit", "--data", s.data)
        lines = [ln for ln in out.splitlines() if '"action":"assign"' in ln and c.hex in ln]
        assert len(lines) == 1 and rid_of(r1) in lines[0], out
        assert out.count('"action":"resolve"') == 2, out

        # history: every change, in order, with its device and batch
        _, out, _ = cli("history", "--data", s.data, "--json", rid_of(r1))
        h = json.loads(out)
        devs = [x["pushed_by"] for x in h["history"]]
        assert h["changes"] == 4 and devs[:3] == [a.hex, a.hex, b.hex], h
        assert devs[3] == coord.hex, h
        _, text, _ = cli("history", "--data", s.data, rid_of(r1))
        assert a.hex in text and b.hex in text and coord.hex in text, text


def test_verify_catches_edited_change_bytes():
    marker = "Edited-On-Disk-Narrative-0042"
    with Server() as s:
        a = Device(s.data, "A")
        push(s.port, a, batch(a, [report(a, narrative=marker) for _ in range(1)]
                              + [report(a) for _ in range(20)]))
        assert s.stop() == 0
        _, out, _ = cli("verify", "--data", s.data)
        assert "hash chain intact" in out
        path = os.path.join(s.data, "data.mdb")
        with open(path, "rb") as f:
            raw = f.read()
        n = raw.count(marker.encode())
        assert n >= 1, "the narrative is not stored as plain bytes"
        # the same length, one letter changed: the entry's digest and hash
        # are untouched, only the change's bytes differ
        with open(path, "r+b") as f:
            f.write(raw.replace(marker.encode(), marker.replace("Edited", "Edites").encode()))
        rc, out, err = cli("verify", "--data", s.data, check=False)
        assert rc == 1, (rc, out, err)
        assert "breaks at log entry 1:" in out + err, out + err
        print(f"   {n} copies of the text edited: verify says {(out + err).strip()[:120]!r}")


if __name__ == "__main__":
    run_tests(globals())
