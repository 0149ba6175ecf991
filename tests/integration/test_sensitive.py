"""Least privilege for sensitive fields outside exports (the fields the
form marks "sensitive": the survivor's name, phone and ID, the narrative,
a victim's name...). An export gives them to admins only; so do the
record's custody trail (GET /v1/history) and the conflicts list
(GET /v1/conflicts): a coordinator sees that such a field was written or
is in conflict (which field, by whom, when, its stamps and chain hash) but
not the value, which is replaced by "withheld": "sensitive". Resolving a
sensitive field's conflict is an admin's: a coordinator is refused with
403 sensitive_field_admin_only and nothing is stored. Admins and the CLI
(whoever holds the data directory) see everything, as before."""
import json
import uuid

from harness import (get_json, post_json, APPLIED, Device, Server, assign, batch, cli, edit, pb, push, report, request,
                     run_tests, store_state, uuid7)
from test_groups import change, put

SECRET = "Wanjiku-SECRET-4417"        # the survivor's name
SECRET_B = "Wanjiku-OTHER-8820"       # another phone's spelling of it
VICTIM = "Achieng-VICTIM-3391"        # a victim's name (form v3, repeat group)


def rid_of(rec):
    return str(uuid.UUID(bytes=rec.record_id))


def writes(h, name):
    """Every write of field name in a history, oldest first."""
    return [f for e in h["history"] for f in e["fields"] if f["name"] == name]


def v3_create(dev, rid):
    """A form-v3 report's create in county 047, its required fields set."""
    c = change(dev, rid, create=True)
    for field, kind, v in [(1, "choice", "submitted"), (10, "choice", "survivor"),
                           (11, "choice", "signed"), (12, "date", "2026-11-20"),
                           (13, "boolean", True), (51, "choice", "exact"),
                           (53, "choice", "047"), (62, "text", "Taken from the market.")]:
        put(c, field, kind, v)
    return c


def test_history_withholds_sensitive_values_from_coordinators():
    with Server() as s:
        a = Device(s.data, "A")
        coord = Device(s.data, "coordinator", "047", role="coordinator")
        admin = Device(s.data, "admin", role="admin")
        rec = report(a, narrative="Taken from the market by two officers.")
        rec.fields.add(field=31, value=pb.Value(text=SECRET))          # survivor_name: sensitive
        rec.fields.add(field=142, value=pb.Value(text="Caseworker Otieno"))  # not sensitive
        st, r = push(s.port, a, batch(a, [rec]))
        assert st == 200 and r.results[0].status == APPLIED, r
        rid = rid_of(rec)

        st, h = get_json(s.port, f"/v1/history?record={rid}", coord.token)
        assert st == 200, h
        body = json.dumps(h)
        assert SECRET not in body and "two officers" not in body, body
        e = h["history"][0]
        # the write itself stays in the trail: who, when, stamps, chain hash
        assert e["pushed_by"] == a.hex and e["received"] and e["stamp"], e
        assert len(e["hash"]) == 64 and e["log_seq"] >= 1, e
        (name,) = writes(h, "survivor_name")
        assert name == {"field": 31, "name": "survivor_name", "label": "Name", "supersedes": 0,
                        "withheld": "sensitive"}, name
        (narr,) = writes(h, "narrative")
        assert "value" not in narr and narr["withheld"] == "sensitive", narr
        # the other fields as before
        (cw,) = writes(h, "caseworker")
        assert cw["value"] == "Caseworker Otieno" and "withheld" not in cw, cw
        assert writes(h, "survivor_code")[0]["value"] == "SV-0001-042"

        # an admin sees the values
        st, h = get_json(s.port, f"/v1/history?record={rid}", admin.token)
        assert st == 200 and writes(h, "survivor_name")[0]["value"] == SECRET, h
        assert not any("withheld" in f for e in h["history"] for f in e["fields"]), h
        # so does the CLI, run by whoever holds the data directory
        _, out, _ = cli("history", "--data", s.data, "--json", rid)
        assert writes(json.loads(out), "survivor_name")[0]["value"] == SECRET, out
        _, out, _ = cli("history", "--data", s.data, rid)
        assert SECRET in out, out
        # the server's log has no value
        assert SECRET not in s.logtext()
        assert s.stop() == 0


def test_history_withholds_repeat_group_instance_values():
    """Form v3: a victim's name is a sensitive field of a repeat-group
    instance; its write keeps its path, group and instance id."""
    with Server() as s:
        a = Device(s.data, "A")
        coord = Device(s.data, "coordinator", "047", role="coordinator")
        admin = Device(s.data, "admin", role="admin")
        rid, victim = uuid7(), uuid7()
        c = v3_create(a, rid)
        put(c, 200, "text", "V-1", victim)       # victim_code: not sensitive
        put(c, 201, "text", VICTIM, victim)      # victim_name: sensitive
        st, r = push(s.port, a, batch(a, [c]))
        assert st == 200 and r.results[0].status == APPLIED, r
        rs, vs = str(uuid.UUID(bytes=rid)), str(uuid.UUID(bytes=victim))

        st, h = get_json(s.port, f"/v1/history?record={rs}", coord.token)
        assert st == 200 and VICTIM not in json.dumps(h), h
        (vn,) = writes(h, f"victims[{vs}].victim_name")
        assert "value" not in vn and vn["withheld"] == "sensitive", vn
        assert vn["field"] == 201 and vn["instance_id"] == vs and vn["group"] == "victims", vn
        (vc,) = writes(h, f"victims[{vs}].victim_code")
        assert vc["value"] == "V-1" and "withheld" not in vc, vc

        st, h = get_json(s.port, f"/v1/history?record={rs}", admin.token)
        assert writes(h, f"victims[{vs}].victim_name")[0]["value"] == VICTIM, h
        _, out, _ = cli("history", "--data", s.data, "--json", rs)
        assert writes(json.loads(out), f"victims[{vs}].victim_name")[0]["value"] == VICTIM
        assert s.stop() == 0


def conflicted(s, a, b, field, v1, v2):
    """A report of A, assigned to B; both set field having seen only the
    report: a conflict. Returns the report."""
    rec = report(a)
    assert push(s.port, a, batch(a, [rec]))[0] == 200
    assign(s.data, rec.record_id, b)
    seen = [(rec.hlc, a.id)]
    for d, v in ((a, v1), (b, v2)):
        st, r = push(s.port, d, batch(d, [edit(d, rec.record_id, field, "text", v, seen)]))
        assert st == 200 and r.results[0].status == APPLIED, r
    return rec


def record_in(j, rid):
    return next(r for r in j["records"] if r["record_id"] == rid)


def test_conflicts_on_sensitive_fields_are_the_admins():
    with Server() as s:
        a, b = Device(s.data, "A"), Device(s.data, "B")
        coord = Device(s.data, "coordinator", "047", role="coordinator")
        admin = Device(s.data, "admin", role="admin")
        sens = conflicted(s, a, b, 31, SECRET, SECRET_B)      # survivor_name
        plain = conflicted(s, a, b, 142, "Otieno", "Wafula")  # caseworker
        rs, rp = rid_of(sens), rid_of(plain)

        # the coordinator sees the conflict: record, field, devices, stamps
        st, j = get_json(s.port, "/v1/conflicts", coord.token)
        assert st == 200 and j["open_conflicts"] == 2, j
        body = json.dumps(j)
        assert SECRET not in body and SECRET_B not in body, body
        (c,) = record_in(j, rs)["conflicts"]
        assert c["field"] == "survivor_name" and c["number"] == 31 and c["label"] == "Name", c
        assert c["withheld"] == "sensitive", c
        assert sorted(v["device"] for v in c["values"]) == sorted([a.hex, b.hex]), c
        for v in c["values"]:
            assert set(v) == {"device", "stamp", "hlc", "withheld"}, v
            assert v["withheld"] == "sensitive", v
        assert sorted(record_in(j, rs)["devices"]) == sorted([a.hex, b.hex])
        # a field that is not sensitive: as before
        (c,) = record_in(j, rp)["conflicts"]
        assert "withheld" not in c and {v["value"] for v in c["values"]} == {"Otieno", "Wafula"}, c

        # and may not resolve it, by taking a value or writing one
        before = store_state(s.data)
        audit_before = cli("audit", "--data", s.data)[1]
        for how in ({"take": b.hex}, {"value": "Someone Else"}):
            st, e = post_json(s.port, "/v1/conflicts/resolve", coord.token,
                              dict(record_id=rs, field="survivor_name", **how))
            assert st == 403 and e["error"] == "sensitive_field_admin_only", (how, st, e)
            assert "admin" in e["message"], e
            st, e = post_json(s.port, "/v1/conflicts/resolve", coord.token,
                              dict(record_id=rs, field=31, **how))
            assert st == 403 and e["error"] == "sensitive_field_admin_only", (how, st, e)
        assert store_state(s.data) == before
        assert cli("audit", "--data", s.data)[1] == audit_before
        # the CLI acting as the coordinator's device: the same refusal
        rc, _, err = cli("conflicts", "resolve", "--data", s.data, "--as", coord.hex, rs,
                         "survivor_name", "--take", b.hex, check=False)
        assert rc == 1 and "only an admin" in err and "sensitive_field_admin_only" in err, (rc, err)
        assert store_state(s.data) == before
        assert cli("audit", "--data", s.data)[1] == audit_before
        st, j = get_json(s.port, "/v1/conflicts", coord.token)
        assert rs in {r["record_id"] for r in j["records"]}, j
        # a field that is not sensitive: the coordinator resolves it
        st, r = post_json(s.port, "/v1/conflicts/resolve", coord.token,
                          {"record_id": rp, "field": "caseworker", "take": b.hex})
        assert st == 200 and r["resolved"], r

        # the admin sees both values and resolves it
        st, j = get_json(s.port, "/v1/conflicts", admin.token)
        (c,) = record_in(j, rs)["conflicts"]
        assert "withheld" not in c and {v["value"] for v in c["values"]} == {SECRET, SECRET_B}, c
        assert {v["text"] for v in c["values"]} == {SECRET, SECRET_B}, c
        st, r = post_json(s.port, "/v1/conflicts/resolve", admin.token,
                          {"record_id": rs, "field": "survivor_name", "take": b.hex})
        assert st == 200 and r["resolved"], r
        st, j = get_json(s.port, "/v1/conflicts", admin.token)
        assert j["open_conflicts"] == 0, j
        # the audit entry names the field, not the value (as before)
        _, out, _ = cli("audit", "--data", s.data)
        assert '"field":"survivor_name"' in out and SECRET not in out and SECRET_B not in out
        # the resolution is in the trail: withheld for the coordinator
        st, h = get_json(s.port, f"/v1/history?record={rs}", coord.token)
        last = h["history"][-1]
        assert last["pushed_by"] == admin.hex and last["fields"][0]["withheld"] == "sensitive", last
        assert SECRET_B not in json.dumps(h)
        assert SECRET not in s.logtext() and SECRET_B not in s.logtext()
        assert s.stop() == 0


def test_instance_conflicts_on_sensitive_fields():
    """Form v3: two phones spell a victim's name differently."""
    with Server() as s:
        a, b = Device(s.data, "A"), Device(s.data, "B")
        coord = Device(s.data, "coordinator", "047", role="coordinator")
        admin = Device(s.data, "admin", role="admin")
        rid, victim = uuid7(), uuid7()
        c = v3_create(a, rid)
        put(c, 200, "text", "V-1", victim)
        assert push(s.port, a, batch(a, [c]))[0] == 200
        assign(s.data, rid, b)
        made = [(c.hlc, a.id)]
        for d, name in ((a, VICTIM), (b, SECRET_B)):
            e = change(d, rid)
            put(e, 201, "text", name, victim, seen=made)
            st, r = push(s.port, d, batch(d, [e]))
            assert st == 200 and r.results[0].status == APPLIED, r
        rs, vs = str(uuid.UUID(bytes=rid)), str(uuid.UUID(bytes=victim))

        st, j = get_json(s.port, "/v1/conflicts", coord.token)
        assert VICTIM not in json.dumps(j) and SECRET_B not in json.dumps(j), j
        (cf,) = record_in(j, rs)["conflicts"]
        assert cf["path"] == f"victims[{vs}].victim_name" and cf["instance_id"] == vs, cf
        assert cf["withheld"] == "sensitive" and len(cf["values"]) == 2, cf
        assert all("value" not in v and "text" not in v for v in cf["values"]), cf
        before = store_state(s.data)
        st, e = post_json(s.port, "/v1/conflicts/resolve", coord.token,
                          {"record_id": rs, "field": "victim_name", "instance": vs, "take": a.hex})
        assert st == 403 and e["error"] == "sensitive_field_admin_only", e
        assert store_state(s.data) == before

        st, j = get_json(s.port, "/v1/conflicts", admin.token)
        (cf,) = record_in(j, rs)["conflicts"]
        assert {v["value"] for v in cf["values"]} == {VICTIM, SECRET_B}, cf
        st, r = post_json(s.port, "/v1/conflicts/resolve", admin.token,
                          {"record_id": rs, "field": "victim_name", "instance": vs, "take": a.hex})
        assert st == 200 and r["resolved"], r
        assert s.stop() == 0


if __name__ == "__main__":
    run_tests(globals())
