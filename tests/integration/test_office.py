"""Coordinators and admins: status numbers, conflict review and resolution,
assignment, county scopes, roles, history, devices over HTTP, metrics,
backup under load and restore."""
import json
import os
import re
import subprocess
import tempfile
import threading
import time

from harness import (get_json, post_json, APPLIED, REJECTED, Device, Server, assign, batch, cli, edit, join_all, pb, pull,
                     push, report, request, run_tests, store_state, workers)


def push_unsent(port, dev, changes, unsent):
    b = pb.PushBatch(device=dev.id, batch_seq=dev.next_batch, app_version="2.1.0",
                     unsent=unsent, sent_hlc=dev.hlc())
    dev.next_batch += 1
    b.changes.extend(changes)
    st, r = push(port, dev, b.SerializeToString())
    assert st == 200, r
    return r


def test_status_counts_what_was_pushed():
    with Server() as s:
        n47 = [Device(s.data, f"nairobi {i}", "047") for i in range(3)]
        n42 = [Device(s.data, f"kisumu {i}", "042") for i in range(2)]
        admin = Device(s.data, "admin", role="admin")
        sent = {}
        for i, d in enumerate(n47 + n42):
            county = "047" if d in n47 else "042"
            recs = [report(d, county=county) for _ in range(i + 2)]
            push_unsent(s.port, d, recs, unsent=10 * i)
            sent[d.hex] = (len(recs), 10 * i, recs)
        # a bad change is counted as a rejection, with its reason
        bad = report(n42[0], county="042")
        bad.fields[0].value.choice = "lost"
        push_unsent(s.port, n42[0], [bad], unsent=0)
        sent[n42[0].hex] = (sent[n42[0].hex][0], 0, sent[n42[0].hex][2])
        # a conflict on a Nairobi record, and a duplicate batch
        rec = sent[n47[0].hex][2][0]
        seen = [(rec.hlc, n47[0].id)]
        push_unsent(s.port, n47[0], [edit(n47[0], rec.record_id, 140, "choice", "high", seen)], 0)
        assign(s.data, rec.record_id, n47[1])
        push_unsent(s.port, n47[1], [edit(n47[1], rec.record_id, 140, "choice", "urgent", seen)], 0)
        dup = batch(n47[2], [report(n47[2], county="047")], seq=99)
        push(s.port, n47[2], dup)
        push(s.port, n47[2], dup)

        st, j = get_json(s.port, "/v1/status", admin.token)
        assert st == 200, j
        devs = {d["id"]: d for d in j["devices"]}
        for d in n47 + n42:
            row = devs[d.hex]
            assert row["last_push"] and row["app_version"] in ("2.1.0", "test 1.0"), row
        assert devs[n42[1].hex]["unsent"] == 40 and devs[n42[1].hex]["batches"] == 1
        assert devs[n42[1].hex]["changes_applied"] == 6
        assert devs[n42[0].hex]["rejected"] == 1
        assert "choice_not_in_vocabulary" in devs[n42[0].hex]["last_rejection"]
        assert devs[n47[2].hex]["duplicates"] == 1 and devs[n47[2].hex]["changes_applied"] == 5
        # n47[0] wrote the record n47[1] edited: the edit waits for it to pull
        assert devs[n47[0].hex]["waiting_to_pull"] == 1
        assert devs[n47[0].hex]["open_conflicts"] == 1 and devs[n47[1].hex]["open_conflicts"] == 1
        assert devs[n42[0].hex]["open_conflicts"] == 0
        counties = {c["county"]: c for c in j["counties"]}
        assert counties["047"]["devices"] == 3 and counties["042"]["devices"] == 2
        assert counties["047"]["records"] == 2 + 3 + 4 + 1 and counties["042"]["records"] == 5 + 6
        assert counties["047"]["open_conflicts"] == 1 and counties["042"]["open_conflicts"] == 0
        assert counties["042"]["rejected"] == 1
        assert j["server"]["records"] == 21 and j["server"]["open_conflicts"] == 1
        assert j["server"]["log_entries"] == 23
        # the CLI reads the same numbers from the store
        _, out, _ = cli("status", "--data", s.data, "--json")
        cj = json.loads(out)
        for key in ("records", "open_conflicts", "log_entries"):
            assert cj["server"][key] == j["server"][key]
        assert {d["id"]: d["changes_applied"] for d in cj["devices"]} == \
            {d["id"]: d["changes_applied"] for d in j["devices"]}
        _, out, _ = cli("status", "--data", s.data)
        assert "047 Nairobi City" in out and "042 Kisumu" in out


def test_roles_and_county_scope():
    with Server() as s:
        a47, a42 = Device(s.data, "nairobi", "047"), Device(s.data, "kisumu", "042")
        coord42 = Device(s.data, "kisumu coordinator", "042", role="coordinator")
        admin = Device(s.data, "admin", role="admin")
        r47, r42 = report(a47, county="047"), report(a42, county="042")
        push(s.port, a47, batch(a47, [r47]))
        push(s.port, a42, batch(a42, [r42]))
        for rec, d, other in [(r47, a47, Device(s.data, "n2", "047")),
                              (r42, a42, Device(s.data, "k2", "042"))]:
            seen = [(rec.hlc, d.id)]
            push(s.port, d, batch(d, [edit(d, rec.record_id, 140, "choice", "high", seen)]))
            assign(s.data, rec.record_id, other)
            push(s.port, other, batch(other, [edit(other, rec.record_id, 140, "choice", "low", seen)]))

        # a device token: 403 on everything of the office
        for path in ["/v1/status", "/v1/conflicts", "/v1/export", "/v1/devices", "/metrics",
                     "/v1/history?record=00000000-0000-0000-0000-000000000001"]:
            st, _ = get_json(s.port, path, a47.token)
            assert st == 403, path
        # a coordinator: no device management, no metrics, no sensitive
        # fields or other counties in exports (test_export has the rest)
        for path in ["/v1/devices", "/metrics", "/v1/export?include_sensitive=1",
                     "/v1/export?county=047"]:
            assert get_json(s.port, path, coord42.token)[0] == 403, path
        # the Kisumu coordinator sees Kisumu only
        st, j = get_json(s.port, "/v1/status", coord42.token)
        assert st == 200 and j["scope"] == ["042"]
        assert {c["county"] for c in j["counties"]} == {"042"}
        assert a47.hex not in json.dumps(j) and "log_entries" not in j["server"]
        assert j["server"]["records"] == 1 and j["server"]["open_conflicts"] == 1
        st, j = get_json(s.port, "/v1/conflicts", coord42.token)
        rid42 = "%s" % __import__("uuid").UUID(bytes=r42.record_id)
        rid47 = "%s" % __import__("uuid").UUID(bytes=r47.record_id)
        assert [r["record_id"] for r in j["records"]] == [rid42]
        # only the values in conflict, none of the rest of the report
        assert j["records"][0]["fields"] == {} and "SV-0001-042" not in json.dumps(j)
        assert [c["field"] for c in j["records"][0]["conflicts"]] == ["risk_level"]
        assert isinstance(j["records"][0]["conflicts"][0]["values"][0]["hlc"], str)
        st, e = get_json(s.port, "/v1/status?silent_days=nan", coord42.token)
        assert st == 400 and e["error"] == "bad_query"
        st, _ = get_json(s.port, f"/v1/history?record={rid47}", coord42.token)
        assert st == 404  # out of scope looks absent
        st, h = get_json(s.port, f"/v1/history?record={rid42}", coord42.token)
        assert st == 200 and h["changes"] == 3 and h["history"][0]["pushed_by"] == a42.hex
        st, e = post_json(s.port, "/v1/conflicts/resolve", coord42.token,
                          {"record_id": rid47, "field": "risk_level", "value": "urgent"})
        assert st == 404, e
        st, e = post_json(s.port, "/v1/assign", coord42.token, {"record_id": rid42, "device": a47.hex})
        assert st == 404 and e["error"] == "no_such_device"
        # the admin sees both
        st, j = get_json(s.port, "/v1/conflicts", admin.token)
        assert st == 200 and j["open_conflicts"] == 2


def test_resolve_flows_to_the_phones():
    with Server() as s:
        a, b = Device(s.data, "A"), Device(s.data, "B")
        coord = Device(s.data, "coordinator", "047", role="coordinator")
        rec = report(a)
        push(s.port, a, batch(a, [rec]))
        seen = [(rec.hlc, a.id)]
        push(s.port, a, batch(a, [edit(a, rec.record_id, 140, "choice", "high", seen)]))
        assign(s.data, rec.record_id, b)
        push(s.port, b, batch(b, [edit(b, rec.record_id, 140, "choice", "urgent", seen)]))
        rid = str(__import__("uuid").UUID(bytes=rec.record_id))
        cursor_a = pull(s.port, a).next_cursor
        cursor_b = pull(s.port, b).next_cursor

        # wrong requests are refused with their reasons, nothing changes
        before = store_state(s.data)
        for body, code in [({"record_id": rid, "field": "incident_place", "value": "x"}, 409),
                           # a sensitive field: an admin's, asked first (test_sensitive)
                           ({"record_id": rid, "field": "narrative", "value": "x"}, 403),
                           ({"record_id": rid, "field": "risk_level", "value": "lost"}, 400),
                           ({"record_id": rid, "field": "risk_level", "take": "0" * 16}, 400),
                           ({"record_id": rid, "field": "no_such", "value": "x"}, 400),
                           ({"record_id": "nope", "field": "risk_level", "value": "x"}, 400)]:
            st, e = post_json(s.port, "/v1/conflicts/resolve", coord.token, body)
            assert st == code, (body, st, e)
        st, h, b_ = request(s.port, "POST", "/v1/conflicts/resolve", b"not json",
                            {"Authorization": f"Bearer {coord.token}"})
        assert st == 400 and b"bad_json" in b_
        assert store_state(s.data) == before

        st, r = post_json(s.port, "/v1/conflicts/resolve", coord.token,
                          {"record_id": rid, "field": "risk_level", "take": b.hex})
        assert st == 200 and r["resolved"], r
        st, j = get_json(s.port, "/v1/conflicts", coord.token)
        assert j["open_conflicts"] == 0
        # both phones pull the resolution: one change, by the coordinator,
        # superseding both values
        for d, cur in [(a, cursor_a), (b, cursor_b)]:
            p = pull(s.port, d, cursor=cur)
            assert len(p.changes) == 1, (d.name, p)
            ch = p.changes[0].change
            assert p.changes[0].device == coord.id and ch.fields[0].field == 140
            assert ch.fields[0].value.choice == "urgent"
            assert sorted(x.device for x in ch.fields[0].supersedes) == sorted([a.id, b.id])
        _, out, _ = cli("show", "--data", s.data, rid)
        assert "Urgent" in out and "CONFLICT" not in out
        _, out, _ = cli("audit", "--data", s.data)
        assert '"action":"resolve"' in out and coord.hex in out
        _, out, _ = cli("verify", "--data", s.data)
        assert "hash chain intact" in out


def test_resolve_with_a_written_value_and_with_deleted():
    with Server() as s:
        a, b = Device(s.data, "A"), Device(s.data, "B")
        coord = Device(s.data, "coordinator", "047", role="coordinator")
        admin = Device(s.data, "admin", role="admin")
        rec, gone = report(a), report(a)
        push(s.port, a, batch(a, [rec, gone]))
        seen = [(rec.hlc, a.id)]
        push(s.port, a, batch(a, [edit(a, rec.record_id, 140, "choice", "high", seen)]))
        assign(s.data, rec.record_id, b)
        assign(s.data, gone.record_id, b)
        push(s.port, b, batch(b, [edit(b, rec.record_id, 140, "choice", "urgent", seen)]))
        rid = str(__import__("uuid").UUID(bytes=rec.record_id))
        gid = str(__import__("uuid").UUID(bytes=gone.record_id))
        # a value neither phone wrote
        st, r = post_json(s.port, "/v1/conflicts/resolve", coord.token,
                          {"record_id": rid, "field": "risk_level", "value": "low"})
        assert st == 200 and r["resolved"], r
        _, out, _ = cli("show", "--data", s.data, rid)
        assert "Low" in out and "CONFLICT" not in out, out
        # phone A deletes a record that phone B edits without having seen
        # the deletion: an edit made while deleted
        d = pb.Change(change_id=a.next_change, record_id=gone.record_id, form_id="incident_report",
                      form_version=1, hlc=a.hlc())
        a.next_change += 1
        d.deletion.deleted = True
        push(s.port, a, batch(a, [d]))
        push(s.port, b, batch(b, [edit(b, gone.record_id, 140, "choice", "high",
                                       [(gone.hlc, a.id)])]))
        st, j = get_json(s.port, "/v1/conflicts", coord.token)
        kinds = {c.get("kind") for r_ in j["records"] if r_["record_id"] == gid
                 for c in r_["conflicts"]}
        assert "edited_while_deleted" in kinds, j
        st, r = post_json(s.port, "/v1/conflicts/resolve", coord.token,
                          {"record_id": gid, "field": "_deleted", "deleted": False})
        assert st == 200 and r["resolved"], r
        st, j = get_json(s.port, "/v1/conflicts", coord.token)
        assert j["open_conflicts"] == 0, j
        # undeleted: the record is exported without include_deleted
        st, h, body = request(s.port, "GET", "/v1/export?format=ndjson",
                              headers={"Authorization": f"Bearer {admin.token}"})
        assert st == 200 and gid.encode() in body, body[:500]
        _, out, _ = cli("audit", "--data", s.data)
        assert out.count('"action":"resolve"') == 2 and '"how":"value"' in out, out
        assert '"deleted":false' in out, out


def test_silent_devices():
    with Server() as s:
        a, b = Device(s.data, "quiet phone"), Device(s.data, "busy phone")
        gone = Device(s.data, "revoked phone")
        coord = Device(s.data, "coordinator", "047", role="coordinator")
        for d in (a, b, gone):
            push(s.port, d, batch(d, [report(d)]))
        cli("device", "revoke", "--data", s.data, gone.hex)
        time.sleep(1.2)
        push(s.port, b, batch(b, [report(b)]))
        # silent for more than 0.00001 days (0.86 s): phone A only (not the
        # phone that just pushed, not the revoked one, not the coordinator)
        st, j = get_json(s.port, "/v1/status?silent_days=0.00001", coord.token)
        assert st == 200, j
        silent = {d["id"] for d in j["devices"] if d["silent"]}
        assert silent == {a.hex}, (silent, j["devices"])
        c47 = [c for c in j["counties"] if c["county"] == "047"][0]
        assert c47["silent_devices"] == [a.hex], c47
        # by default (7 days) nobody is silent yet
        st, j = get_json(s.port, "/v1/status", coord.token)
        assert not any(d["silent"] for d in j["devices"]), j["devices"]
        _, out, _ = cli("status", "--data", s.data, "--silent-days", "0.00001")
        # one device row says so in its SILENT column: phone A's
        head = next(ln for ln in out.splitlines() if ln.startswith("DEVICE "))
        at = head.index(" SILENT ") + 1
        rows = [ln for ln in out.splitlines() if re.match(r"^[0-9a-f]{16} ", ln)]
        silent_rows = [ln for ln in rows if ln[at:at + 3] == "yes"]
        assert len(silent_rows) == 1 and silent_rows[0].startswith(a.hex), out


def test_sealed_values_merged_unread():
    """A sealed field's ciphertext is opaque: any bytes (here not even valid
    UTF-8 or protobuf) are kept as sent, merged by stamp like any value,
    handed back byte for byte, and only their size is checked."""
    with Server() as s:
        a, b = Device(s.data, "A"), Device(s.data, "B")
        coord = Device(s.data, "coordinator", "047", role="coordinator")
        rec = report(a)
        push(s.port, a, batch(a, [rec]))
        st, r = post_json(s.port, "/v1/assign", coord.token,
                          {"record_id": str(__import__("uuid").UUID(bytes=rec.record_id)),
                           "device": b.hex})
        assert st == 200, r
        seen = [(rec.hlc, a.id)]
        blobs = {a.id: b"\x00\xff\x0a\x80" + os.urandom(3000),
                 b.id: b"\xff\xfe" + os.urandom(5000) + b"\x00"}
        for d in (a, b):
            c = edit(d, rec.record_id, 143, "text", "x", seen)  # field 143: sealed_notes
            c.fields[0].value.Clear()
            c.fields[0].value.sealed.key_id = b"org-key-1"
            c.fields[0].value.sealed.ciphertext = blobs[d.id]
            st, r = push(s.port, d, batch(d, [c]))
            assert st == 200 and r.results[0].status == APPLIED, r
        # merged like any value: two concurrent writes, a conflict
        st, j = get_json(s.port, "/v1/conflicts", coord.token)
        assert [c["field"] for c in j["records"][0]["conflicts"]] == ["sealed_notes"], j
        # each phone pulls the other's ciphertext exactly as it was sent
        for d, other in ((a, b), (b, a)):
            got = [x.change for x in pull(s.port, d).changes if x.device == other.id]
            sealed = [f.value.sealed for ch in got for f in ch.fields if f.field == 143]
            assert len(sealed) == 1 and sealed[0].ciphertext == blobs[other.id], d.name
            assert sealed[0].key_id == b"org-key-1"
        # only the size is checked
        c = edit(a, rec.record_id, 143, "text", "x", seen)
        c.fields[0].value.Clear()
        c.fields[0].value.sealed.ciphertext = os.urandom(65536 + 200)  # + framing slack
        st, r = push(s.port, a, batch(a, [c]))
        assert st == 200 and r.results[0].status == REJECTED, r
        assert r.results[0].code == "sealed_too_long", r


def test_assign_gives_the_whole_history():
    with Server() as s:
        a, c = Device(s.data, "A"), Device(s.data, "C")
        coord = Device(s.data, "coordinator", "047", role="coordinator")
        rec = report(a)
        push(s.port, a, batch(a, [rec, report(a)]))
        push(s.port, a, batch(a, [edit(a, rec.record_id, 142, "text", "Otieno", [(rec.hlc, a.id)])]))
        assert len(pull(s.port, c).changes) == 0
        rid = str(__import__("uuid").UUID(bytes=rec.record_id))
        st, r = post_json(s.port, "/v1/assign", coord.token, {"record_id": rid, "device": c.hex})
        assert st == 200, r
        p = pull(s.port, c)
        assert [ch.change.change_id for ch in p.changes] == [1, 3]
        push(s.port, a, batch(a, [edit(a, rec.record_id, 140, "choice", "low")]))
        assert len(pull(s.port, c, cursor=p.next_cursor).changes) == 1
        # the assignment is in the audit log, with who made it and for whom
        _, out, _ = cli("audit", "--data", s.data)
        line = [ln for ln in out.splitlines() if '"action":"assign"' in ln]
        assert len(line) == 1 and coord.hex in line[0] and c.hex in line[0] and rid in line[0], out


def test_devices_over_http_and_metrics():
    with Server() as s:
        admin = Device(s.data, "admin", role="admin")
        st, r = post_json(s.port, "/v1/devices/enrol", admin.token,
                          {"name": "Garissa phone", "county": "007", "role": "device"})
        assert st == 200 and r["token"].startswith("shd_"), r
        phone = Device.__new__(Device)
        phone.id, phone.hex, phone.token = int(r["id"], 16), r["id"], r["token"]
        phone.next_change = phone.next_batch = 1
        phone.clock = 0
        assert push(s.port, phone, batch(phone, [report(phone, county="007")]))[0] == 200
        st, j = get_json(s.port, "/v1/devices", admin.token)
        assert any(d["id"] == phone.hex and d["county"] == "007" for d in j["devices"])
        assert "token" not in json.dumps(j)
        st, e = post_json(s.port, "/v1/devices/enrol", admin.token, {"name": "x", "county": "099"})
        assert st == 400
        st, r = post_json(s.port, "/v1/devices/revoke", admin.token, {"id": phone.hex})
        assert st == 200
        assert push(s.port, phone, batch(phone, [report(phone)]))[0] == 401
        st, h, m = request(s.port, "GET", "/metrics", headers={"Authorization": f"Bearer {admin.token}"})
        text = m.decode()
        assert st == 200 and 'shahidi_changes_total{outcome="applied"} 1' in text, text
        assert 'shahidi_requests_total{route="/v1/push",status="2xx"} 1' in text
        assert 'shahidi_requests_total{route="/v1/push",status="4xx"} 1' in text
        assert "shahidi_commit_seconds_bucket" in text and "shahidi_map_used_bytes" in text
        commit = float(re.search(r"^shahidi_commit_seconds_sum (\S+)$", text, re.M).group(1))
        apply = float(re.search(r"^shahidi_commit_apply_seconds_total (\S+)$", text,
                                re.M).group(1))
        assert 0 < apply < commit, text
        # the writer's CPU: applying is part of its CPU in commits, and no
        # more than the wall time applying took
        apply_cpu = float(re.search(r"^shahidi_commit_apply_cpu_seconds_total (\S+)$", text,
                                    re.M).group(1))
        cpu = float(re.search(r"^shahidi_commit_cpu_seconds_total (\S+)$", text, re.M).group(1))
        assert 0 < apply_cpu <= cpu and apply_cpu <= apply + 0.001, text
        _, out, _ = cli("audit", "--data", s.data)
        assert '"action":"enrol"' in out and '"action":"revoke"' in out


def test_backup_under_load_and_restore():
    with Server(quiet=True) as s, tempfile.TemporaryDirectory(prefix="shahidi-bk-") as d:
        phones = [Device(s.data, f"p{i}") for i in range(4)]
        stop = threading.Event()
        acked = []

        def load(dev):
            while not stop.is_set():
                st, r = push(s.port, dev, batch(dev, [report(dev) for _ in range(20)]))
                assert st == 200, (st, r)
                acked.append(20)
        threads = workers(load, phones)  # an assertion in a phone fails the test
        while sum(acked) < 400:
            assert all(t.is_alive() for t in threads), "a phone stopped"
            time.sleep(0.01)
        # every batch acked before the copy starts must be in it; batches acked
        # while it runs may or may not be (a slow sanitizer build acks many)
        n_before = sum(acked)
        cli("backup", "--data", s.data, os.path.join(d, "bk"))  # under load
        stop.set()
        join_all(threads, timeout=60)
        # the copy is consistent on its own: it verifies and exports
        _, out, _ = cli("verify", "--data", os.path.join(d, "bk"))
        assert "hash chain intact" in out
        entries, _, records, _ = store_state(os.path.join(d, "bk"))
        assert entries == records and n_before <= records <= sum(acked), (n_before, records)
        # restore: a server on the copy serves exactly what the copy holds
        _, exp_bk, _ = cli("export", "--data", os.path.join(d, "bk"), "--format", "ndjson",
                           "--quiet")
        with Server(data=os.path.join(d, "bk")) as s2:
            admin = Device(s2.data, "admin", role="admin")
            st, h, body = request(s2.port, "GET", "/v1/export?format=ndjson",
                                  headers={"Authorization": f"Bearer {admin.token}"})
            assert st == 200 and h.get("transfer-encoding") == "chunked"
            assert body == exp_bk.encode()
            assert exp_bk.count("\n") == records


if __name__ == "__main__":
    run_tests(globals())
