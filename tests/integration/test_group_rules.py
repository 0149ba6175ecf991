"""Repeat groups through HTTP (incident report v3): instances added offline
by two phones are both kept, an instance's removal flags an edit it had not
seen, and every refusal of a change that gets groups wrong says what it
is and stores nothing."""
import uuid

import json

from harness import (APPLIED, REJECTED, Device, Server, assign, batch, cli, pb, push, request,
                     run_tests, store_state, uuid7, value)


def report_v3(dev, county="047"):
    c = pb.Change(change_id=dev.next_change, record_id=uuid7(), form_id="incident_report",
                  form_version=3, hlc=dev.hlc(), create=True)
    dev.next_change += 1
    for field, kind, v in [(1, "choice", "submitted"), (10, "choice", "survivor"),
                           (11, "choice", "signed"), (12, "date", "2026-11-20"),
                           (13, "boolean", True), (51, "choice", "exact"),
                           (53, "choice", county)]:
        c.fields.add(field=field, value=value(kind, v))
    return c


def change_v3(dev, record_id):
    c = pb.Change(change_id=dev.next_change, record_id=record_id, form_id="incident_report",
                  form_version=3, hlc=dev.hlc())
    dev.next_change += 1
    return c


def put(c, inst, field, kind, v, seen=()):
    fw = c.fields.add(field=field)
    if inst is not None:
        fw.instance = inst
    if kind is not None:
        fw.value.CopyFrom(value(kind, v))
    for h, d in seen:
        fw.supersedes.add(hlc=h, device=d)
    return fw


def results(port, dev, changes):
    st, r = push(port, dev, batch(dev, changes))
    assert st == 200, r
    return [(x.status, x.code) for x in r.results]


def test_two_phones_add_perpetrators_offline_both_kept():
    with Server() as s:
        a, b = Device(s.data, "A"), Device(s.data, "B")
        rec = report_v3(a)
        put(rec, uuid7(), 200, "text", "V-001")  # a first victim, with the report
        assert results(s.port, a, [rec]) == [(APPLIED, "")]
        assign(s.data, rec.record_id, b)
        pa, pb_ = uuid7(), uuid7()
        ca, cb = change_v3(a, rec.record_id), change_v3(b, rec.record_id)
        put(ca, pa, 220, "choice", "kps")
        put(ca, pa, 222, "text", "Cpl. Otieno")
        put(cb, pb_, 220, "choice", "aps")
        assert results(s.port, a, [ca]) == [(APPLIED, "")]
        assert results(s.port, b, [cb]) == [(APPLIED, "")]
        _, out, _ = cli("show", "--data", s.data, str(uuid.UUID(bytes=rec.record_id)))
        assert "Cpl. Otieno" in out and "CONFLICT" not in out, out


def test_removal_flags_an_edit_it_had_not_seen():
    with Server() as s:
        a, b = Device(s.data, "A"), Device(s.data, "B")
        admin = Device(s.data, "admin", role="admin")
        rec = report_v3(a)
        v = uuid7()
        put(rec, v, 201, "text", "Achieng")
        assert results(s.port, a, [rec]) == [(APPLIED, "")]
        assign(s.data, rec.record_id, b)
        # B edits the victim offline; A removes it, having seen only its name
        cb = change_v3(b, rec.record_id)
        put(cb, v, 205, "integer", 34)
        ca = change_v3(a, rec.record_id)
        fw = put(ca, v, 0, "boolean", True)
        fw.seen.add(hlc=rec.hlc, device=a.id)
        assert results(s.port, a, [ca]) == [(APPLIED, "")]
        st, h, body = request(s.port, "GET", "/v1/status", headers={
            "Authorization": f"Bearer {admin.token}"})
        assert json.loads(body)["server"]["open_conflicts"] == 0
        assert results(s.port, b, [cb]) == [(APPLIED, "")]
        st, h, body = request(s.port, "GET", "/v1/status", headers={
            "Authorization": f"Bearer {admin.token}"})
        assert json.loads(body)["server"]["open_conflicts"] == 1


def test_what_gets_groups_wrong_is_refused():
    with Server() as s:
        a = Device(s.data, "A")
        rec = report_v3(a)
        v = uuid7()
        put(rec, v, 201, "text", "Achieng")
        assert results(s.port, a, [rec]) == [(APPLIED, "")]
        before = store_state(s.data)
        cases = []
        c = change_v3(a, rec.record_id)
        put(c, None, 201, "text", "no instance")            # a group's field needs one
        cases.append((c, "instance_required"))
        c = change_v3(a, rec.record_id)
        put(c, uuid7(), 62, "text", "x")                    # a record's field takes none
        cases.append((c, "not_in_group"))
        c = change_v3(a, rec.record_id)
        put(c, b"\x01" * 8, 201, "text", "x")               # 16 bytes
        cases.append((c, "bad_instance"))
        c = change_v3(a, rec.record_id)
        put(c, bytes(16), 201, "text", "x")                 # not nil
        cases.append((c, "bad_instance"))
        c = change_v3(a, rec.record_id)
        i = uuid7()
        put(c, i, 201, "text", "x")
        put(c, i, 222, "text", "y")                         # two groups in one instance
        cases.append((c, "instance_group_mismatch"))
        c = change_v3(a, rec.record_id)
        put(c, v, 222, "text", "y")                         # v is a victim already
        cases.append((c, "instance_group_mismatch"))
        c = change_v3(a, rec.record_id)
        put(c, uuid7(), 244, "link", bytes(16))             # a link names an instance
        cases.append((c, "bad_link"))
        c = change_v3(a, rec.record_id)
        put(c, v, 0, "text", "removed?")                    # a removal holds a boolean
        cases.append((c, "bad_removal"))
        c = change_v3(a, rec.record_id)
        put(c, v, 201, "text", "once")
        put(c, v, 201, "text", "twice")
        cases.append((c, "duplicate_field"))
        got = results(s.port, a, [c for c, _ in cases])
        assert got == [(REJECTED, code) for _, code in cases], got
        assert store_state(s.data) == before

        # at most 20 sources: the 21st added is refused, nothing of it stored
        c = change_v3(a, rec.record_id)
        sources = [uuid7() for _ in range(20)]
        for src in sources:
            put(c, src, 300, "choice", "witness")
        assert results(s.port, a, [c]) == [(APPLIED, "")]
        mid = store_state(s.data)
        extra = change_v3(a, rec.record_id)
        put(extra, uuid7(), 300, "choice", "media")
        assert results(s.port, a, [extra]) == [(REJECTED, "too_many_instances")]
        assert store_state(s.data) == mid
        # removing one makes room; editing one at the bound is fine
        c = change_v3(a, rec.record_id)
        put(c, sources[0], 0, "boolean", True)
        put(c, sources[1], 301, "choice", "high")
        assert results(s.port, a, [c]) == [(APPLIED, "")]
        extra.change_id = a.next_change
        a.next_change += 1
        assert results(s.port, a, [extra]) == [(APPLIED, "")]


if __name__ == "__main__":
    run_tests(globals())
