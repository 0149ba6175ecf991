"""Acting from the status page (GET /), in headless Chromium against the
real server, at desktop (1366 px) and phone (390 px) widths: resolving a
real conflict made by two phones (then the CLI shows it resolved and the
audit log names who did it), a coordinator's resolve of a record that left
its counties (the refusal is on the page, nothing is written), a record's
custody trail, an export downloaded with the token in a header (the file
is the API's export), the county filter, sort and empty counties, and the
pushes-per-day sparklines.

Screenshots of both widths go to BUILD/status-page/actions-*.png for a
person to compare in review.

The sparkline test needs pushes on two server days. The server counts by
its own UTC day and has no test-only clock; so the test writes an earlier
day's count into the stopped server's "days" table (key layout at the top
of server/core/store.c), restarts it, pushes today, and checks the page
draws both days where the API puts them."""
import json
import os
import struct
import tempfile
import time
import uuid

import lmdb

from harness import APPLIED, BUILD, Device, Server, cli, edit, report, request, run_tests
from test_status_page import LAYOUT, Chromium, Dom, attention, pushed, setup

SHOTS = os.path.join(BUILD, "status-page")
DAY_MS = 86400000


def get_json(port, path, token):
    st, h, b = request(port, "GET", path, headers={"Authorization": f"Bearer {token}"})
    assert st == 200, (st, b)
    return json.loads(b)


def wait(br, expr, what, timeout=20):
    deadline = time.time() + timeout
    while True:
        v = br.eval(expr)
        if v:
            return v
        assert time.time() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.1)


def dom(br):
    return Dom(br.eval("document.documentElement.outerHTML"))


def q(sel):
    return json.dumps(sel)


def open_conflict_ids(data):
    _, out, _ = cli("conflicts", "--data", data, "--json")
    j = json.loads(out)
    return {r["record_id"] for r in (j["records"] if isinstance(j, dict) else j)}


def audit(data):
    _, out, _ = cli("audit", "--data", data)
    return [json.loads(ln) for ln in out.splitlines() if ln.strip()]


def resolve_form(rid, field):
    return f'form.resolve[data-record="{rid}"][data-field="{field}"]'


def test_resolve_from_the_page():
    with Server() as s:
        d = setup(s)
        admin, coord, k1, k2 = d["admin"], d["coord"], d["k1"], d["k2"]
        rid47 = str(uuid.UUID(bytes=d["rec"].record_id))
        rid42 = str(uuid.UUID(bytes=d["krec"].record_id))
        # a second conflict in 042: both phones set the caseworker
        krec2 = report(k1, "042")
        pushed(s, k1, [krec2], [APPLIED])
        cli("assign", "--data", s.data, str(uuid.UUID(bytes=krec2.record_id)), k2.hex)
        seen = [(krec2.hlc, k1.id)]
        pushed(s, k1, [edit(k1, krec2.record_id, 142, "text", "Achieng", seen)], [APPLIED])
        pushed(s, k2, [edit(k2, krec2.record_id, 142, "text", "Wafula", seen)], [APPLIED])
        rid42b = str(uuid.UUID(bytes=krec2.record_id))
        assert open_conflict_ids(s.data) == {rid47, rid42, rid42b}
        os.makedirs(SHOTS, exist_ok=True)

        br = Chromium()
        try:
            # An admin at 1366 px keeps phone 2's risk level: every value is
            # shown with its label, who wrote it (by name) and when.
            br.open(f"{s.url}/#token={admin.token}", 1366, 768)
            form = resolve_form(rid47, "risk_level")
            texts = br.eval(f"Array.from(document.querySelectorAll({q(form + ' ol.cvals > li')}))"
                            ".map(li => li.textContent)")
            assert len(texts) == 2 and any("High" in t and "Nairobi phone 1" in t for t in texts) \
                and any("Urgent" in t and "Nairobi phone 2" in t for t in texts), texts
            br.eval(f"document.querySelector({q(form)}).scrollIntoView()")
            br.eval(f"document.querySelector({q(form + ' input[data-take=' + json.dumps(d['n2'].hex) + ']')}).click()")
            br.screenshot(os.path.join(SHOTS, "actions-desktop-1366-resolve.png"))
            br.eval(f"document.querySelector({q(form + ' button[type=submit]')}).click()")
            wait(br, f"!document.querySelector({q(form)}) && !document.getElementById('conflicts-notice').hidden",
                 "the resolved conflict gone from the page")
            note = br.eval("document.getElementById('conflicts-notice').textContent")
            assert "Risk level" in note and rid47 in note and "Nairobi phone 2" in note, note
            lay = br.eval(LAYOUT)
            assert lay["docWidth"] <= lay["vw"], lay["docWidth"]
        finally:
            br.close()
        # the CLI shows it resolved, with the value kept; the audit names the admin
        assert open_conflict_ids(s.data) == {rid42, rid42b}
        hist = get_json(s.port, f"/v1/history?record={rid47}", admin.token)
        last = hist["history"][-1]
        assert last["pushed_by"] == admin.hex, last
        assert [(f["name"], f["value"]) for f in last["fields"]] == [("risk_level", "Urgent")], last
        a = [e for e in audit(s.data) if e.get("action") == "resolve"]
        assert len(a) == 1 and a[0]["actor"] == f"device:{admin.hex}", a
        assert a[0]["record_id"] == rid47 and a[0]["take"] == d["n2"].hex, a

        br = Chromium()
        try:
            # The 042 coordinator on a phone (390 px). Meanwhile Kisumu phone 1
            # moves its record to 047: the page still offers it, the server
            # refuses, and the page says so; nothing is written.
            br.open(f"{s.url}/#token={coord.token}", 390, 844, mobile=True)
            lay = br.eval(LAYOUT)
            assert lay["docWidth"] <= lay["vw"], lay["docWidth"]
            want = {x["id"] for x in get_json(s.port, "/v1/status", coord.token)["devices"]
                    if attention(x)}
            assert {x["id"] for x in lay["attention"]} == want
            assert min(x["top"] for x in lay["attention"]) < 2 * lay["vh"], lay["attention"]
            pushed(s, k1, [edit(k1, d["krec"].record_id, 53, "choice", "047",
                                [(d["krec"].hlc, k1.id)])], [APPLIED])
            before = len(audit(s.data))
            form = resolve_form(rid42, "caseworker")
            br.eval(f"document.querySelector({q(form + ' input[data-take=' + json.dumps(k2.hex) + ']')}).click()")
            br.eval(f"document.querySelector({q(form + ' button[type=submit]')}).click()")
            wait(br, f"document.querySelector({q(form)}).dataset.result", "the refusal")
            assert br.eval(f"document.querySelector({q(form)}).dataset.result") == "refused"
            msg = br.eval(f"document.querySelector({q(form + ' p.rmsg')}).textContent")
            assert "no such record" in msg and "no_such_record" in msg and "404" in msg, msg
            assert "not in your counties" in msg, msg
            br.eval(f"document.querySelector({q(form)}).scrollIntoView()")
            br.screenshot(os.path.join(SHOTS, "actions-phone-390-refused.png"))
            assert len(audit(s.data)) == before
            assert rid42 in open_conflict_ids(s.data)

            # A value typed by the coordinator, on its own county's record.
            form = resolve_form(rid42b, "caseworker")
            br.eval(f"""(() => {{ const f = document.querySelector({q(form)});
                const i = f.querySelector('input.other'); i.value = 'Otieno Wafula';
                i.dispatchEvent(new Event('input')); }})()""")
            assert br.eval(f"document.querySelector({q(form + ' input.other-pick')}).checked")
            br.eval(f"document.querySelector({q(form + ' button[type=submit]')}).click()")
            wait(br, f"!document.querySelector({q(form)})", "the typed resolution")
            br.screenshot(os.path.join(SHOTS, "actions-phone-390-resolved.png"))
        finally:
            br.close()
        assert open_conflict_ids(s.data) == {rid42}
        a = [e for e in audit(s.data) if e.get("action") == "resolve"]
        assert len(a) == 2 and a[1]["actor"] == f"device:{coord.hex}", a
        assert a[1]["record_id"] == rid42b and a[1]["how"] == "value", a
        hist = get_json(s.port, f"/v1/history?record={rid42b}", admin.token)
        assert hist["history"][-1]["fields"][0]["value"] == "Otieno Wafula", hist
        for t in [admin.token, coord.token]:
            assert t not in s.logtext()
        assert s.stop() == 0


def test_history_export_counties_and_charts():
    with Server() as s:
        d = setup(s)
        admin, coord = d["admin"], d["coord"]
        rid47 = str(uuid.UUID(bytes=d["rec"].record_id))
        rid42 = str(uuid.UUID(bytes=d["krec"].record_id))
        # an earlier day for 047: 5 pushes 3 days ago (see the module's comment)
        assert s.stop() == 0
        day0 = int(time.time() * 1000) // DAY_MS
        env = lmdb.open(s.data, max_dbs=32, subdir=True)
        with env.begin(write=True, db=env.open_db(b"days")) as t:
            t.put(b"047" + struct.pack(">I", day0 - 3), struct.pack(">QQQ", 5, 9, 0))
        env.close()
        s.start()
        n1 = d["n1"]
        pushed(s, n1, [report(n1, "047")], [APPLIED])
        m1 = Device(s.data, "Mombasa phone", county="001")  # a quiet, healthy county
        pushed(s, m1, [report(m1, "001")], [APPLIED])
        daily = get_json(s.port, "/v1/status/daily", admin.token)
        c47 = next(c for c in daily["counties"] if c["county"] == "047")
        if int(time.time() * 1000) // DAY_MS != day0:
            return  # midnight passed: the day arithmetic below would be off by one
        # today: setup's 5 pushes in 047 and one more
        assert c47["batches"][-4] == 5 and c47["batches"][-1] == 6 and c47["total"] == 11, c47
        os.makedirs(SHOTS, exist_ok=True)
        downloads = tempfile.TemporaryDirectory(prefix="shahidi-dl-")

        br = Chromium()
        try:
            br.call("Browser.setDownloadBehavior", behavior="allow", downloadPath=downloads.name)
            br.open(f"{s.url}/#token={admin.token}", 1366, 768)
            page = dom(br)
            # the sparkline: the API's days, 30 bars, two of them tall
            assert page.v("daily.047.batches") == ",".join(map(str, c47["batches"]))
            assert page.text("daily.047.batches") == "11"
            bars = br.eval("""Array.from(document.querySelectorAll('tr[data-county="047"] svg.spark rect'))
                .map(r => ({z: r.classList.contains('z'), h: +r.getAttribute('height'),
                            t: r.textContent}))""")
            assert len(bars) == 30 and [i for i, b in enumerate(bars) if not b["z"]] == [26, 29], bars
            assert 1 < bars[26]["h"] < bars[29]["h"] == 26 and bars[29]["t"].endswith(": 6 pushes"), bars
            assert bars[26]["t"].endswith(": 5 pushes") and bars[0]["t"].endswith(": 0 pushes"), bars
            assert bars[29]["t"].startswith(daily["to"]), (bars[29], daily["to"])
            br.eval("document.getElementById('counties-box').scrollIntoView()")
            br.screenshot(os.path.join(SHOTS, "actions-desktop-1366-counties.png"))

            # sorted by what needs attention first (open conflicts, silent
            # phones, rejections, unsent): 042 and 047 have a conflict each,
            # 042 a rejection; 001 nothing. Then the other orders.
            rows = "Array.from(document.querySelectorAll('#t-counties tbody tr')).map(t => t.dataset.county)"
            assert br.eval(rows) == ["042", "047", "001"], br.eval(rows)
            for how, want in [("code", ["001", "042", "047"]), ("name", ["042", "001", "047"]),
                              ("quiet", ["001", "042", "047"]), ("attention", ["042", "047", "001"])]:
                br.eval("(() => { const s = document.getElementById('county-sort'); s.value = '%s';"
                        " s.dispatchEvent(new Event('change')); })()" % how)
                assert br.eval(rows) == want, (how, br.eval(rows))
            # filter: 047 only, in the counties, the devices and the conflicts
            br.eval("(() => { const s = document.getElementById('county-filter'); s.value = '047';"
                    " s.dispatchEvent(new Event('change')); })()")
            shown = br.eval("""({c: Array.from(document.querySelectorAll('#t-counties tbody tr:not([hidden])')).map(t => t.dataset.county),
                d: Array.from(document.querySelectorAll('#t-devices tbody tr:not([hidden])')).map(t => t.dataset.device),
                r: Array.from(document.querySelectorAll('#conflicts li.conflict:not([hidden])')).map(t => t.dataset.record)})""")
            assert shown["c"] == ["047"] and shown["r"] == [rid47], shown
            assert set(shown["d"]) == {d[k].hex for k in ["n1", "n2", "n3"]}, shown
            br.eval("(() => { const s = document.getElementById('county-filter'); s.value = '';"
                    " s.dispatchEvent(new Event('change')); })()")
            # empty counties: hidden at first, all 47 (and "no county" if any) with the toggle
            assert br.eval("document.querySelectorAll('#t-counties tbody tr').length") == 3
            br.eval("document.getElementById('county-empty').click()")
            wait(br, "document.querySelectorAll('#t-counties tbody tr').length >= 47", "empty counties")
            lay = br.eval(LAYOUT)
            assert lay["docWidth"] <= lay["vw"], lay["docWidth"]
            for tid, t in lay["tables"].items():
                assert t["scroll"] <= t["client"] + 1, (tid, t["scroll"], t["client"])
            br.eval("document.getElementById('county-empty').click()")
            wait(br, "document.querySelectorAll('#t-counties tbody tr').length === 3", "empty hidden again")

            # custody trail: from a conflict's button
            br.eval(f"document.querySelector('button[data-history=\"{rid47}\"]').click()")
            wait(br, "document.getElementById('history').dataset.state === 'ready'", "the history")
            api = get_json(s.port, f"/v1/history?record={rid47}", admin.token)
            page = dom(br)
            assert page.v("history.record_id") == rid47
            assert page.num("history.changes") == api["changes"] == len(api["history"]) == 3
            for i, e in enumerate(api["history"]):
                assert page.v(f"history.{i}.pushed_by") == e["pushed_by"]
                assert page.v(f"history.{i}.received") == e["received"]
            assert "Nairobi phone 1" in page.text("history.0.pushed_by")
            assert "Nairobi phone 2" in page.text("history.2.pushed_by")
            assert page.v("history.2.0.value") == "risk_level" and page.text("history.2.0.value") == "Urgent"
            br.screenshot(os.path.join(SHOTS, "actions-desktop-1366-history.png"))

            # export: CSV, downloaded; the file is the API's export
            br.eval("document.getElementById('export-form').scrollIntoView()")
            br.eval("document.getElementById('export-go').click()")
            wait(br, "document.getElementById('export-msg').dataset.result", "the export")
            assert br.eval("document.getElementById('export-msg').dataset.result") == "ok", \
                br.eval("document.getElementById('export-msg').textContent")
            page = dom(br)
            name = page.v("export.filename")
            assert name.startswith("shahidi-incident_report-") and name.endswith(".csv"), name
            path = os.path.join(downloads.name, name)
            deadline = time.time() + 20
            while not os.path.exists(path) and time.time() < deadline:
                time.sleep(0.1)
            with open(path, "rb") as f:
                got = f.read()
            st, h, want = request(s.port, "GET", "/v1/export?format=csv",
                                  headers={"Authorization": f"Bearer {admin.token}"})
            assert st == 200 and got == want and int(page.v("export.bytes")) == len(want), (len(got), len(want))
            assert got.count(b"\n") == 12, got.count(b"\n")  # header + 11 records
            br.screenshot(os.path.join(SHOTS, "actions-desktop-1366-export.png"))
            # a refused export (a county code the form does not know, as a
            # hand-edited request would send) is said on the page
            br.eval("""(() => { const s = document.getElementById('export-county');
                const o = document.createElement('option'); o.value = '099'; o.textContent = '099';
                s.appendChild(o); s.value = '099'; document.getElementById('export-go').click(); })()""")
            wait(br, "document.getElementById('export-msg').dataset.result === 'refused'", "the refusal")
            text = br.eval("document.getElementById('export-msg').textContent")
            assert "unknown county 099" in text and "unknown_county" in text and "047" in text, text
        finally:
            br.close()

        br = Chromium()
        try:
            br.call("Browser.setDownloadBehavior", behavior="allow", downloadPath=downloads.name)
            br.open(f"{s.url}/#token={coord.token}", 390, 844, mobile=True)
            lay = br.eval(LAYOUT)
            assert lay["docWidth"] <= lay["vw"], lay["docWidth"]
            assert min(x["top"] for x in lay["attention"]) < 2 * lay["vh"], lay["attention"]
            page = dom(br)
            assert "daily.047.batches" not in page.k and "daily.042.batches" in page.k
            # no sensitive fields offered to a coordinator
            assert br.eval("document.getElementById('export-sensitive-box').hidden")
            # a record of another county: refused as absent, said on the page
            br.eval(f"""(() => {{ document.getElementById('history-id').value = '{rid47}';
                document.querySelector('#history-form button').click(); }})()""")
            wait(br, "document.getElementById('history').dataset.state === 'refused'", "the refusal")
            text = br.eval("document.getElementById('history').textContent")
            assert "No such record in your counties" in text and "no_such_record" in text, text
            br.eval(f"""(() => {{ document.getElementById('history-id').value = '{rid42}';
                document.querySelector('#history-form button').click(); }})()""")
            wait(br, "document.getElementById('history').dataset.state === 'ready'", "its own record")
            # its export: its counties, no sensitive fields
            br.eval("(() => { const s = document.getElementById('export-format'); s.value = 'ndjson'; })()")
            br.eval("document.getElementById('export-go').click()")
            wait(br, "document.getElementById('export-msg').dataset.result", "the export")
            page = dom(br)
            name = page.v("export.filename")
            assert name.endswith(".ndjson"), name
            path = os.path.join(downloads.name, name)
            deadline = time.time() + 20
            while not os.path.exists(path) and time.time() < deadline:
                time.sleep(0.1)
            with open(path, "rb") as f:
                rows = [json.loads(ln) for ln in f.read().splitlines()]
            st, h, want = request(s.port, "GET", "/v1/export?format=ndjson",
                                  headers={"Authorization": f"Bearer {coord.token}"})
            assert [json.loads(ln) for ln in want.splitlines()] == rows
            assert len(rows) == 3, rows
            br.eval("document.getElementById('s-export').scrollIntoView()")
            br.screenshot(os.path.join(SHOTS, "actions-phone-390-export.png"))
        finally:
            br.close()
        exports = [e for e in audit(s.data) if e.get("action") == "export"]
        assert [e["actor"] for e in exports] == [f"device:{admin.hex}", f"device:{admin.hex}",
                                                 f"device:{coord.hex}", f"device:{coord.hex}"], exports
        assert exports[2]["counties"] == ["042"] and exports[2]["include_sensitive"] is False, exports[2]
        log = s.logtext()
        for t in [admin.token, coord.token]:
            assert t not in log
        downloads.cleanup()
        assert s.stop() == 0


def test_sensitive_values_withheld_on_the_page():
    """A coordinator's page: a sensitive field's conflict lists who wrote
    when, says "withheld" for each value and offers no resolve form; the
    record's trail lists the write, value withheld. An admin's page shows
    the values and the form. The secret is in no page of the coordinator."""
    secret_a, secret_b = "Akinyi-SECRET-5150", "Akinyi-OTHER-6260"
    with Server() as s:
        d = setup(s)
        admin, coord, k1, k2 = d["admin"], d["coord"], d["k1"], d["k2"]
        krec = d["krec"]  # 042, assigned to k2, a caseworker conflict already
        rid42 = str(uuid.UUID(bytes=krec.record_id))
        seen = [(krec.hlc, k1.id)]
        pushed(s, k1, [edit(k1, krec.record_id, 31, "text", secret_a, seen)], [APPLIED])
        pushed(s, k2, [edit(k2, krec.record_id, 31, "text", secret_b, seen)], [APPLIED])
        name_vals = f'li.conflict[data-record="{rid42}"] li[data-field="survivor_name"] ol.cvals > li'
        withheld = f"Array.from(document.querySelectorAll({q(name_vals + ' .cval')})).map(e => [e.dataset.withheld || '', e.textContent])"
        os.makedirs(SHOTS, exist_ok=True)

        br = Chromium()
        try:
            br.open(f"{s.url}/#token={coord.token}", 1366, 768)
            wait(br, f"document.querySelectorAll({q(name_vals)}).length === 2", "the sensitive conflict")
            assert br.eval(withheld) == [["sensitive", "withheld (sensitive field)"]] * 2, br.eval(withheld)
            texts = br.eval(f"Array.from(document.querySelectorAll({q(name_vals)})).map(li => li.textContent)")
            assert any("Kisumu phone 1" in t for t in texts) and any("Kisumu phone 2" in t for t in texts), texts
            # no form, no radios: only an admin resolves it
            assert not br.eval(f"document.querySelector({q(resolve_form(rid42, 'survivor_name'))})")
            assert not br.eval(f"document.querySelector({q(name_vals + ' input')})")
            note = br.eval(f"document.querySelector('p.withheld-note[data-record=\"{rid42}\"]').textContent")
            assert "only an admin" in note, note
            br.eval(f"document.querySelector('p.withheld-note[data-record=\"{rid42}\"]').scrollIntoView({{block: 'center'}})")
            br.screenshot(os.path.join(SHOTS, "actions-desktop-1366-withheld-conflict.png"))
            # the field that is not sensitive, on the same record: as before
            assert br.eval(f"document.querySelector({q(resolve_form(rid42, 'caseworker'))})")
            # its trail: the writes are there, their values are not
            br.eval(f"document.querySelector('button[data-history=\"{rid42}\"]').click()")
            wait(br, "document.getElementById('history').dataset.state === 'ready'", "the history")
            trail = br.eval("Array.from(document.querySelectorAll('#history .cval[data-withheld]'))"
                            ".map(e => [e.dataset.v, e.textContent])")
            assert ["survivor_name", "withheld (sensitive field)"] in trail, trail
            assert ["narrative", "withheld (sensitive field)"] in trail, trail
            assert "undefined" not in br.eval("document.getElementById('history').textContent")
            br.screenshot(os.path.join(SHOTS, "actions-desktop-1366-withheld.png"))
            html = br.eval("document.documentElement.outerHTML")
            assert secret_a not in html and secret_b not in html
        finally:
            br.close()

        br = Chromium()
        try:
            br.open(f"{s.url}/#token={admin.token}", 1366, 768)
            wait(br, f"document.querySelectorAll({q(name_vals)}).length === 2", "the sensitive conflict")
            shown = sorted(t for _, t in br.eval(withheld))
            assert shown == sorted([secret_a, secret_b]), shown
            assert br.eval(f"document.querySelector({q(resolve_form(rid42, 'survivor_name'))})")
        finally:
            br.close()
        assert secret_a not in s.logtext() and secret_b not in s.logtext()
        assert s.stop() == 0


if __name__ == "__main__":
    run_tests(globals())
