"""Exports read back with Python's csv module (a real CSV reader) equal
the merged records; v1 and v2 records side by side; sensitive fields left
out; 100,000 records exported in constant memory."""
import csv
import io
import json
import os
import random
import resource
import subprocess
import tempfile
import re
import time
import uuid
import zlib

from harness import (BUILD, CLI, SRC, Device, Server, assign, batch, cli, edit, pb, push, report,
                     request, run_tests, value)

V2 = os.path.join(SRC, "tests", "fixtures", "incident_report.v2.json")


def schema():
    with open(os.path.join(SRC, "schema", "incident_report.v1.json")) as f:
        v1 = json.load(f)
    with open(V2) as f:
        v2 = json.load(f)
    return v1, v2


def labels(form):
    out = {}
    for fd in form["fields"]:
        if "vocabulary" in fd:
            out[fd["name"]] = dict(form["vocabularies"][fd["vocabulary"]])
    return out


def test_csv_equals_the_merged_records():
    v1, v2 = schema()
    lab = labels(v2)
    rng = random.Random(11)
    with Server(args=["--forms", V2]) as s:
        a, b = Device(s.data, "A"), Device(s.data, "B")
        admin = Device(s.data, "admin", role="admin")
        expected = {}
        tricky = ['plain', 'with, comma', 'with "quotes"', 'line\nbreak', 'Nyeri – Murang\'a ✓',
                  '=HYPERLINK("x")', ' padded ']
        recs = []
        for i in range(60):
            county = rng.choice(["042", "047", "001"])
            text = tricky[i % len(tricky)]
            r = report(a, county=county, narrative="narrative " + text)
            r.fields.add(field=142, value=value("text", text))       # caseworker
            r.fields.add(field=60, value=value("choices", ["beating", "burns"]))
            r.fields.add(field=31, value=value("text", "Secret Name"))  # sensitive
            if i % 5 == 0:
                r.form_version = 2
                r.fields.add(field=75, value=value("text", "rifle, pistol"))
            recs.append(r)
            row = {"incident_county": lab["incident_county"][county], "caseworker": text,
                   "methods": "Beating; Burns", "survivor_code": "SV-0001-042",
                   "violation_types": "Torture", "status": "Submitted",
                   "perpetrator_weapon": "rifle, pistol" if i % 5 == 0 else "",
                   "form_version": "2" if i % 5 == 0 else "1", "conflict": "no",
                   "deleted": "no"}
            expected[str(uuid.UUID(bytes=r.record_id))] = row
        for k in range(0, 60, 20):
            st, r_ = push(s.port, a, batch(a, recs[k:k + 20]))
            assert st == 200 and all(x.status == 1 for x in r_.results), r_
        # B edits some, deletes one, and makes one conflict
        edits = []
        for i in (3, 4, 5, 6):
            assign(s.data, recs[i].record_id, b)
        for i in (3, 4):
            r = recs[i]
            edits.append(edit(b, r.record_id, 140, "choice", "urgent", []))
            expected[str(uuid.UUID(bytes=r.record_id))]["risk_level"] = "Urgent"
        gone = recs[5]
        d = pb.Change(change_id=b.next_change, record_id=gone.record_id, form_id="incident_report",
                      form_version=1, hlc=b.hlc())
        b.next_change += 1
        d.deletion.deleted = True
        d.deletion.seen.add(hlc=gone.hlc, device=a.id)  # what B had seen of it
        edits.append(d)
        expected[str(uuid.UUID(bytes=gone.record_id))]["deleted"] = "yes"
        c = recs[6]
        edits.append(edit(b, c.record_id, 142, "text", "Bea", [(c.hlc, a.id)]))
        st, _ = push(s.port, b, batch(b, edits))
        assert st == 200
        a.clock = max(a.clock, b.clock)  # A's stamp later, even in the same millisecond
        st, _ = push(s.port, a, batch(a, [edit(a, c.record_id, 142, "text", "Ann", [(c.hlc, a.id)])]))
        row6 = expected[str(uuid.UUID(bytes=c.record_id))]
        row6["conflict"] = "yes"
        # the later stamp (A's, pushed last) is shown
        row6["caseworker"] = "Ann"

        path = os.path.join(s.tmp.name, "out.csv")
        cli("export", "--data", s.data, "--forms", V2, "--format", "csv", "--quiet", "--out", path)
        with open(path, "rb") as f:
            raw = f.read()
        assert raw.count(b"\r\n") == 60  # RFC 4180 line ends (the header + 59 rows)
        assert raw.startswith(b"\xef\xbb\xbf")  # a BOM: Excel reads it as UTF-8
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
        assert "survivor_name" not in rows[0] and "narrative" not in rows[0]
        cols = list(rows[0].keys())
        # form order, v2's field right after the one it follows
        assert cols[:8] == ["record_id", "form_id", "form_version", "first_received",
                            "last_changed", "devices", "deleted", "conflict"]
        assert cols.index("perpetrator_weapon") == cols.index("perpetrator_involvement") + 1
        assert len(rows) == 59  # the deleted one is left out
        for row in rows:
            want = expected[row["record_id"]]
            for k, v in want.items():
                got = row[k]
                if k == "caseworker" and v.startswith("="):
                    v = "'" + v  # spreadsheets must not run it as a formula
                assert got == v, (row["record_id"], k, got, v)
        # with the deleted, and the sensitive fields
        _, out, _ = cli("export", "--data", s.data, "--forms", V2, "--format", "csv",
                        "--include-deleted", "--include-sensitive", "--quiet")
        rows = list(csv.DictReader(io.StringIO(out.lstrip("\ufeff"), newline="")))
        assert len(rows) == 60 and all(r["survivor_name"] == "Secret Name" for r in rows)
        assert sum(r["deleted"] == "yes" for r in rows) == 1
        # filters
        _, out, _ = cli("export", "--data", s.data, "--forms", V2, "--format", "csv",
                        "--county", "042", "--quiet")
        rows42 = list(csv.DictReader(io.StringIO(out.lstrip("\ufeff"), newline="")))
        assert rows42 and all(r["incident_county"] == "Kisumu" for r in rows42)
        _, out, _ = cli("export", "--data", s.data, "--forms", V2, "--format", "csv",
                        "--since", "2999-01-01", "--quiet")
        assert len(out.splitlines()) == 1  # the header only
        # NDJSON: the same records, typed values and codes
        _, nd, _ = cli("export", "--data", s.data, "--forms", V2, "--format", "ndjson", "--quiet")
        objs = [json.loads(l) for l in nd.splitlines()]
        assert len(objs) == 59
        o = next(o for o in objs if o["form_version"] == 2)
        assert o["fields"]["methods"] == ["beating", "burns"]
        assert o["fields"]["perpetrator_weapon"] == "rifle, pistol"
        assert "narrative" not in o["fields"]
        # over HTTP, an admin gets the same bytes (streamed)
        st, h, body = request(s.port, "GET", "/v1/export?format=ndjson",
                              headers={"Authorization": f"Bearer {admin.token}"})
        assert st == 200 and body.decode() == nd
        _, audit, _ = cli("audit", "--data", s.data)
        assert audit.count('"action":"export"') == 6 and '"records":59' in audit


def get(s, path, token, **headers):
    return request(s.port, "GET", path, headers={"Authorization": f"Bearer {token}", **headers})


def test_csv_for_excel_and_coordinators():
    """CSV opens in Excel as UTF-8 (a BOM), downloads with a file name,
    travels compressed when the client accepts gzip; coordinators export
    their own counties without sensitive fields, and nothing more."""
    with Server() as s:
        a47, a42 = Device(s.data, "nairobi", "047"), Device(s.data, "kisumu", "042")
        admin = Device(s.data, "admin", role="admin")
        coord = Device(s.data, "kisumu coordinator", "042", role="coordinator")
        for d, county in [(a47, "047"), (a42, "042")]:
            recs = [report(d, county=county, narrative="Wanjirũ narrative " * 20) for _ in range(30)]
            for r in recs:
                r.fields.add(field=31, value=value("text", "Wanjirũ Secret"))  # sensitive
            assert push(s.port, d, batch(d, recs))[0] == 200

        # the CLI's CSV starts with a UTF-8 BOM; NDJSON does not
        _, out, _ = cli("export", "--data", s.data, "--format", "csv", "--quiet")
        assert out.startswith("\ufeffrecord_id,"), out[:20]
        _, nd, _ = cli("export", "--data", s.data, "--format", "ndjson", "--quiet")
        assert nd.startswith("{")

        # over HTTP: the same bytes, a file name, gzip when accepted
        st, h, plain = get(s, "/v1/export?format=csv", admin.token)
        assert st == 200 and plain.decode() == out.replace("\n", "\r\n"), (st, plain[:40])
        assert "content-encoding" not in h
        cd = h.get("content-disposition", "")
        assert re.fullmatch(r'attachment; filename="shahidi-incident_report-\d{8}T\d{6}Z\.csv"', cd), h
        assert h["content-type"] == "text/csv; charset=utf-8"
        st, h, gz = get(s, "/v1/export?format=csv", admin.token, **{"Accept-Encoding": "gzip"})
        assert st == 200 and h.get("content-encoding") == "gzip", h
        assert "accept-encoding" in h.get("vary", "").lower(), h
        assert zlib.decompress(gz, 31) == plain
        print(f"   CSV of 60 records over HTTP: {len(plain)} bytes, gzip {len(gz)} bytes")
        assert len(gz) < len(plain) / 3
        st, h, df = get(s, "/v1/export?format=ndjson", admin.token, **{"Accept-Encoding": "deflate"})
        assert st == 200 and h.get("content-encoding") == "deflate", h
        assert zlib.decompress(df).decode() == nd
        assert h["content-disposition"].endswith('.ndjson"'), h

        # a coordinator: its counties, no sensitive fields
        st, h, body = get(s, "/v1/export?format=csv", coord.token)
        assert st == 200, (st, body)
        rows = list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"), newline="")))
        assert len(rows) == 30 and {r["incident_county"] for r in rows} == {"Kisumu"}
        assert "survivor_name" not in rows[0] and "narrative" not in rows[0]
        assert b"Secret" not in body
        st, h, body = get(s, "/v1/export?format=ndjson&county=042", coord.token)
        assert st == 200 and body.count(b"\n") == 30
        for q in ["county=047", "county=042,047", "include_sensitive=1",
                  "county=042&include_sensitive=1"]:
            st, h, body = get(s, f"/v1/export?format=csv&{q}", coord.token)
            assert st == 403, (q, st, body)
            assert json.loads(body)["error"] == "forbidden", body
        # unknown counties are refused, for admins too
        for tok in [admin.token, coord.token]:
            st, h, body = get(s, "/v1/export?format=csv&county=099", tok)
            j = json.loads(body)
            assert st == 400 and j["error"] == "unknown_county", (st, body)
            assert len(j["counties"]) == 47 and j["counties"]["047"] == "Nairobi City", j
        # a phone still cannot
        assert get(s, "/v1/export?format=csv", a42.token)[0] == 403
        # (its enrolment by the CLI is audited too: keep what it did itself)
        # The end entry is committed once the last byte has left: it may
        # come just after the client has the whole body (wait, bounded).
        deadline = time.monotonic() + 10
        while True:
            _, audit, _ = cli("audit", "--data", s.data)
            mine = [json.loads(l) for l in audit.splitlines()
                    if f'"actor":"device:{coord.hex}"' in l]
            if len(mine) >= 4 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        # each export: its entry before the first byte, its end after
        assert [e["action"] for e in mine] == ["export", "export_end"] * 2, audit
        assert mine[0]["counties"] == ["042"] and mine[1]["records"] == 30, mine[:2]
        assert not mine[0]["include_sensitive"]


def peak_rss(cmd):
    out = subprocess.run(["/usr/bin/env", "python3", "-c",
                          "import resource,subprocess,sys;"
                          "p=subprocess.run(sys.argv[1:],stdout=subprocess.DEVNULL,check=True);"
                          "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)",
                          *cmd], capture_output=True, text=True, check=True, timeout=300)
    return int(out.stdout)


def fill(data, n):
    """n synthetic reports, ingested in batches of 1000 as the server would."""
    _, out, _ = cli("device", "enroll", "--data", data, "--name", "filler", "--county", "047")
    dev = out.split()[1]
    with tempfile.TemporaryDirectory(prefix="shahidi-fill-") as d:
        files = []
        for i in range(n // 1000):
            f = os.path.join(d, f"b{i}.z")
            cli("sample", "--device", dev, "--count", 1000, "--seed", i + 1, "--batch-seq", i + 1,
                "--first-change", i * 1000 + 1, "--out", f)
            files.append(f)
        cli("ingest", "--data", data, "--quiet", *files, timeout=600)


def test_filters_and_formula_escaping_over_http():
    with Server() as s:
        a = Device(s.data, "A")
        admin = Device(s.data, "admin", role="admin")
        texts = ["=1+2", "+254700000000", "-2", "@SUM(A1)", "\tTab", "\rCR", "plain", "a=b"]
        early = []
        for i, t in enumerate(texts):
            r = report(a, county="042" if i % 2 else "047")
            r.fields.add(field=142, value=value("text", t))  # caseworker, not sensitive
            early.append(r)
        gone = report(a)
        push(s.port, a, batch(a, early + [gone]))
        d = pb.Change(change_id=a.next_change, record_id=gone.record_id,
                      form_id="incident_report", form_version=1, hlc=a.hlc())
        a.next_change += 1
        d.deletion.deleted = True
        push(s.port, a, batch(a, [d]))
        time.sleep(0.05)
        since = int(time.time() * 1000)
        time.sleep(0.05)
        late = [report(a, county="047") for _ in range(3)]
        push(s.port, a, batch(a, late))

        def export(query):
            st, h, body = request(s.port, "GET", "/v1/export?" + query,
                                  headers={"Authorization": f"Bearer {admin.token}"})
            assert st == 200, (query, st, body)
            return list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"), newline="")))

        def ids(rows):
            return {row["record_id"] for row in rows}

        def rid(r):
            return str(uuid.UUID(bytes=r.record_id))
        rows = export("format=csv")
        assert ids(rows) == {rid(r) for r in early + late}  # the deleted one left out
        # a text a spreadsheet would run gets a leading ', others stay as written
        cw = {row["record_id"]: row["caseworker"] for row in rows}
        for r, t in zip(early, texts):
            want = t if t[0] not in "=+-@\t\r" else "'" + t
            assert cw[rid(r)] == want, (t, cw[rid(r)])
        assert "narrative" not in rows[0]  # sensitive: left out by default
        rows = export("format=csv&include_deleted=1")
        assert ids(rows) == {rid(r) for r in early + late + [gone]}
        assert [row["deleted"] for row in rows if row["record_id"] == rid(gone)] == ["yes"]
        rows = export("format=csv&county=042")
        assert ids(rows) == {rid(r) for i, r in enumerate(early) if i % 2}
        rows = export("format=csv&county=042,047")
        assert len(rows) == len(early) + len(late)
        rows = export(f"format=csv&since={since}")
        assert ids(rows) == {rid(r) for r in late}, (since, rows)
        rows = export("format=csv&form=incident_report&county=047&since=" + str(since))
        assert ids(rows) == {rid(r) for r in late}
        st, _, body = request(s.port, "GET", "/v1/export?format=csv&form=no_such_form",
                              headers={"Authorization": f"Bearer {admin.token}"})
        assert st == 404 and b"no_such_form" in body, (st, body)
        st, _, body = request(s.port, "GET", "/v1/export?format=csv&since=yesterday",
                              headers={"Authorization": f"Bearer {admin.token}"})
        assert st == 400, (st, body)


def test_100k_records_in_constant_memory():
    with tempfile.TemporaryDirectory(prefix="shahidi-big-") as d:
        small, big = os.path.join(d, "10k"), os.path.join(d, "100k")
        fill(small, 10000)
        fill(big, 100000)
        out = os.path.join(d, "out.csv")
        rss_small = peak_rss([CLI, "export", "--data", small, "--format", "csv", "--quiet",
                              "--out", out])
        rss_big = peak_rss([CLI, "export", "--data", big, "--format", "csv", "--quiet",
                            "--out", out])
        print(f"   peak RSS of export: 10k records {rss_small} KiB, 100k records {rss_big} KiB")
        # flat: ten times the records, (nearly) the same memory
        assert rss_big < rss_small * 1.3 + 4096, (rss_small, rss_big)
        with open(out, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 100000 and len({r["record_id"] for r in rows}) == 100000
        # pages are rendered on several threads: byte for byte what one gives
        one = os.path.join(d, "one.csv")
        cli("export", "--data", big, "--format", "csv", "--quiet", "--threads", 1, "--out", one)
        with open(out, "rb") as a, open(one, "rb") as b:
            assert a.read() == b.read()

        # every row is a well-formed record: a county label, a survivor code
        v1, _ = schema()
        counties = set(dict(v1["vocabularies"]["county"]).values())
        assert all(r["incident_county"] in counties for r in rows)
        assert all(r["survivor_code"].startswith("SV-") for r in rows)
        # and agrees with the NDJSON export record by record on a sample
        _, nd, _ = cli("export", "--data", big, "--format", "ndjson", "--quiet")
        _, nd5, _ = cli("export", "--data", big, "--format", "ndjson", "--quiet", "--threads", 5)
        assert nd5 == nd and nd.count("\n") == 100000
        lab = labels(v1)
        byid = {r["record_id"]: r for r in rows}
        for line in random.Random(3).sample(nd.splitlines(), 300):
            o = json.loads(line)
            r = byid[o["record_id"]]
            for k, v in o["fields"].items():
                if isinstance(v, list):
                    v = "; ".join(lab[k][c] for c in v)
                elif k in lab:
                    v = lab[k][v]
                elif isinstance(v, bool):
                    v = "yes" if v else "no"
                assert r[k] == str(v), (k, r[k], v)


def audit_entries(data):
    """The exports' entries (the CLI's enrolments are in the log too)."""
    _, out, _ = cli("audit", "--data", data)
    entries = [json.loads(line) for line in out.splitlines() if line.strip()]
    return [e for e in entries if e["action"] in ("export", "export_end")]


def test_an_export_is_audited_first_and_its_end_after():
    """The audit entry of an export is written before its first byte (who,
    filters, sensitive or not), and its end after: records sent, complete
    or cut. A client that reads part of a large export and hangs up leaves
    both, and the end says cut."""
    import socket
    import struct
    import time
    with tempfile.TemporaryDirectory(prefix="shahidi-cut-") as d:
        data = os.path.join(d, "data")
        fill(data, 10000)
        with Server(data=data) as s:
            admin = Device(s.data, "admin", role="admin")
            c = socket.create_connection(("127.0.0.1", s.port), timeout=10)
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            c.sendall(b"GET /v1/export?format=ndjson&include_sensitive=1 HTTP/1.1\r\n"
                      b"Host: x\r\nAuthorization: Bearer " + admin.token.encode() + b"\r\n\r\n")
            got = b""
            while len(got) < 1 << 20:
                chunk = c.recv(65536)
                assert chunk, "the export ended early"
                got += chunk
            # the start entry was written before the first byte
            entries = audit_entries(s.data)
            assert len(entries) == 1, entries
            start = entries[0]
            assert start["action"] == "export" and start["actor"] == "device:" + admin.hex
            assert start["include_sensitive"] is True and start["format"] == "ndjson"
            assert start["counties"] == [] and start["export_id"]
            # hang up mid-export (RST)
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
            for _ in range(100):
                entries = audit_entries(s.data)
                if len(entries) == 2:
                    break
                time.sleep(0.1)
            assert len(entries) == 2, entries
            end = entries[1]
            assert end["action"] == "export_end" and end["export_id"] == start["export_id"]
            assert end["outcome"] == "cut" and 0 <= end["records"] < 10000, end
            # a complete one says so, with every record
            st, h, body = request(s.port, "GET", "/v1/export?format=csv",
                                  headers={"Authorization": f"Bearer {admin.token}"})
            assert st == 200 and body.count(b"\n") > 10000
            # export_end is written once the last byte has left, which may
            # be a moment after the client has it all: wait for it
            for _ in range(100):
                entries = audit_entries(s.data)
                if len(entries) == 4:
                    break
                time.sleep(0.1)
            assert [e["action"] for e in entries] == ["export", "export_end"] * 2
            assert entries[2]["include_sensitive"] is False
            assert entries[3]["outcome"] == "complete" and entries[3]["records"] == 10000, entries


def test_head_sends_no_body_and_sensitive_files_are_private():
    """HEAD /v1/export answers the headers alone and exports nothing;
    `shahidi export --include-sensitive --out F` writes F 0600, even over
    a file that was 0644."""
    import socket
    with Server() as s:
        a = Device(s.data, "phone")
        admin = Device(s.data, "admin", role="admin")
        push(s.port, a, batch(a, [report(a) for _ in range(20)]))
        c = socket.create_connection(("127.0.0.1", s.port), timeout=10)
        c.sendall(b"HEAD /v1/export?format=csv HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                  + admin.token.encode() + b"\r\n\r\n")
        got = b""
        while True:
            chunk = c.recv(65536)
            if not chunk:
                break
            got += chunk
        c.close()
        head, _, rest = got.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"text/csv" in head, got[:300]
        assert rest == b"", rest[:100]
        assert audit_entries(s.data) == []
        with tempfile.TemporaryDirectory(prefix="shahidi-out-") as d:
            out = os.path.join(d, "sensitive.csv")
            with open(out, "w") as f:
                f.write("old")
            os.chmod(out, 0o644)
            cli("export", "--data", s.data, "--include-sensitive", "--quiet", "--out", out)
            assert os.stat(out).st_mode & 0o777 == 0o600, oct(os.stat(out).st_mode)
            new = os.path.join(d, "new.csv")
            old = os.umask(0o022)
            try:
                cli("export", "--data", s.data, "--include-sensitive", "--quiet", "--out", new)
            finally:
                os.umask(old)
            assert os.stat(new).st_mode & 0o777 == 0o600, oct(os.stat(new).st_mode)
            with open(new) as f:
                assert len(f.read().splitlines()) == 21
        # the CLI's exports are audited as the server's are: first, then their end
        entries = audit_entries(s.data)
        assert [e["action"] for e in entries] == ["export", "export_end"] * 2, entries
        assert entries[0]["actor"].startswith("cli:") and entries[0]["include_sensitive"] is True
        assert entries[1]["export_id"] == entries[0]["export_id"]
        assert entries[1]["outcome"] == "complete" and entries[1]["records"] == 20


if __name__ == "__main__":
    run_tests(globals())
