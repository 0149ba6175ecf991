"""Exports analysts open (issue 14): XLSX read back with openpyxl, Stata
.dta with pandas (value labels with StataReader.value_labels()), SPSS .sav
with GNU PSPP. Each holds one table per repeat group that joins to the
records by record id, choice labels, dates as dates, GPS as four columns,
device names beside ids; a survivor's accented name round-trips; a
formula-looking text stays text; sensitive fields are absent unless asked;
a coordinator's export holds only its counties."""
import csv
import datetime
import io
import json
import os
import re
import socket
import stat
import subprocess
import tempfile
import time
import uuid
import zipfile

import openpyxl
import pandas as pd

from harness import (CLI, Device, Server, batch, cli, iolog_env, pb, push, read_response, request,
                     run_tests, value)
from test_export import fill, peak_rss
from test_groups import incident, put

NAME = "Wanjirũ Kamau-Njoroge"       # a survivor's name: sensitive
PHONE = "Simu ya Wanjirũ"             # a phone's name: shown beside its id
FORMULA = "=HYPERLINK(\"http://x\",\"y\")"
# a narrative longer than a Stata str# holds (2045 bytes): a strL there
NARRATIVE = "Alitekwa sokoni na polisi; Wanjirũ aliona. " * 150


def make(s, county="047", dev=None):
    """A v3 incident (3 victims, ...) with a name, a formula-looking
    caseworker, a GPS point, a date; pushed by dev. Returns its id, ids."""
    rid, c, ids = incident(dev)
    for fw in c.fields:
        if fw.field == 53:
            fw.value.choice = county
        if fw.field == 62:
            fw.value.text = NARRATIVE
    put(c, 201, "text", NAME, ids["victims"][0])                    # victim_name
    put(c, 142, "text", FORMULA)                                    # caseworker
    put(c, 140, "choice", "urgent")                                 # risk_level
    pt = pb.Value()
    pt.geopoint.latitude, pt.geopoint.longitude = -1.2921, 36.8219
    pt.geopoint.altitude, pt.geopoint.accuracy = 1795.5, 4.0
    c.fields.add(field=56, value=pt)                                # incident_location
    st, resp = push(s.port, dev, batch(dev, [c]))
    assert st == 200 and resp.results[0].status == pb.ChangeResult.APPLIED, resp
    return str(uuid.UUID(bytes=rid)), {k: [str(uuid.UUID(bytes=i)) for i in v]
                                       for k, v in ids.items()}


def sheet(wb, name):
    rows = list(wb[name].iter_rows(values_only=True))
    return [dict(zip(rows[0], r)) for r in rows[1:]]


def every_text(wb):
    return " ".join(str(c.value) for ws in wb.worksheets for row in ws.iter_rows() for c in row
                    if c.value is not None)


def test_xlsx_read_by_openpyxl():
    with Server() as s:
        p = Device(s.data, PHONE)
        rid, ids = make(s, dev=p)
        out = os.path.join(s.tmp.name, "out.xlsx")
        cli("export", "--data", s.data, "--format", "xlsx", "--out", out, "--quiet")
        assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
        wb = openpyxl.load_workbook(out)
        assert wb.sheetnames == ["records", "victims", "perpetrators", "acts", "involvements",
                                 "referrals", "sources", "codebook"], wb.sheetnames
        recs = sheet(wb, "records")
        assert len(recs) == 1
        r = recs[0]
        assert r["record_id"] == rid and r["form_version"] == 3
        assert r["incident_county"] == "Nairobi City" and r["risk_level"] == "Urgent"
        assert r["status"] == "Submitted"
        assert r["devices"] == p.hex and r["device_names"] == PHONE, r
        # dates are dates, date-times date-times, yes/no booleans
        assert r["consent_date"] == datetime.datetime(2026, 11, 20), r["consent_date"]
        assert isinstance(r["first_received"], datetime.datetime)
        assert abs(r["first_received"] - datetime.datetime.utcnow()) < datetime.timedelta(minutes=5)
        assert r["consent_documentation"] is True and r["deleted"] is False
        # a formula-looking text is a text cell, not a formula
        c = next(c for c in wb["records"][2] if c.value == FORMULA)
        assert c.data_type == "s", c.data_type
        # sensitive fields are absent by default: columns and values
        assert "narrative" not in r and "incident_location_latitude" not in r
        vic = sheet(wb, "victims")
        assert len(vic) == 3 and "victim_name" not in vic[0]
        assert NAME not in every_text(wb) and "Officer 1" not in every_text(wb)
        # repeat groups join to the records by record id; nested by instance
        assert {v["record_id"] for v in vic} == {rid}
        assert sorted(v["instance_id"] for v in vic) == sorted(ids["victims"])
        assert sorted(v["victim_sex"] for v in vic) == ["Female", "Female", "Male"]
        refs = sheet(wb, "referrals")
        assert refs[0]["parent_instance_id"] == ids["victims"][0], refs
        acts = sheet(wb, "acts")
        assert len(acts) == 5 and {a["act_victim"] for a in acts} == set(ids["victims"])
        # the codebook: every column, choice codes and labels
        cb = sheet(wb, "codebook")
        county = next(x for x in cb if x["table"] == "records" and x["column"] == "incident_county")
        assert county["field_number"] == 53 and county["type"] == "choice"
        assert county["label"] == "County" and "047=Nairobi City" in county["choices"]
        assert any(x["column"] == "device_names" for x in cb)
        methods = next(x for x in cb if x["column"] == "act_methods")  # several choices
        assert methods["type"] == "choices" and "beating=Beating" in methods["choices"], methods

        # asked for: the name round-trips, GPS in four number columns
        cli("export", "--data", s.data, "--format", "xlsx", "--out", out, "--quiet",
            "--include-sensitive")
        wb = openpyxl.load_workbook(out)
        r = sheet(wb, "records")[0]
        assert (r["incident_location_latitude"], r["incident_location_longitude"],
                r["incident_location_altitude"], r["incident_location_accuracy"]) == \
            (-1.2921, 36.8219, 1795.5, 4.0), r
        assert r["narrative"] == NARRATIVE
        names = [v["victim_name"] for v in sheet(wb, "victims")]
        assert NAME in names, names
        # nothing left behind in the data directory
        assert not [f for f in os.listdir(s.data) if f.startswith(".export")]


def test_dta_read_by_pandas():
    with Server() as s:
        p = Device(s.data, PHONE)
        rid, ids = make(s, dev=p)
        d = os.path.join(s.tmp.name, "stata")
        cli("export", "--data", s.data, "--format", "dta", "--out", d, "--quiet")
        assert sorted(os.listdir(d)) == sorted(["records.dta", "victims.dta", "perpetrators.dta",
                                                "acts.dta", "involvements.dta", "referrals.dta",
                                                "sources.dta", "codebook.csv"])
        with pd.io.stata.StataReader(os.path.join(d, "records.dta")) as rd:
            df = rd.read(convert_categoricals=False)
            labels = rd.value_labels()
            vlab = rd.variable_labels()
        r = df.iloc[0]
        assert r["record_id"] == rid and r["device_names"] == PHONE
        # a choice: the code itself when codes are numbers (counties), else
        # its place in the form's list; the labels travel as value labels
        assert r["incident_county"] == 47 and labels["incident_county"][47] == "Nairobi City"
        assert r["risk_level"] == 4 and labels["risk_level"][4] == "Urgent"
        assert labels["status"][2] == "Submitted" and r["status"] == 2
        assert vlab["incident_county"] == "County" and vlab["risk_level"] == "Risk level", vlab
        assert r["consent_date"] == pd.Timestamp("2026-11-20")
        assert r["consent_documentation"] == 1 and labels["yesno"][1] == "Yes"
        assert r["caseworker"] == FORMULA
        assert "narrative" not in df.columns and "incident_location_latitude" not in df.columns
        with pd.io.stata.StataReader(os.path.join(d, "victims.dta")) as rd:
            vic = rd.read()  # categoricals: labels
        assert list(vic["record_id"].unique()) == [rid] and len(vic) == 3
        assert sorted(vic["victim_sex"]) == ["Female", "Female", "Male"]
        assert "victim_name" not in vic.columns

        cli("export", "--data", s.data, "--format", "dta", "--out", d, "--quiet",
            "--include-sensitive")
        vic = pd.read_stata(os.path.join(d, "victims.dta"))
        assert NAME in list(vic["victim_name"]), list(vic["victim_name"])
        rec = pd.read_stata(os.path.join(d, "records.dta"))
        assert rec["narrative"][0] == NARRATIVE and len(NARRATIVE.encode()) > 2045
        assert rec["incident_location_latitude"][0] == -1.2921
        assert rec["incident_location_accuracy"][0] == 4.0


def pspp(sps):
    """GNU PSPP runs the syntax sps; its output as CSV (only: no text tables)."""
    with tempfile.TemporaryDirectory(prefix="shahidi-pspp-") as d:
        out = os.path.join(d, "out.csv")
        p = subprocess.run(["pspp", "-o", out, "-"], input=sps, capture_output=True, text=True,
                           timeout=60)
        with open(out, encoding="utf-8") as f:
            text = f.read()
    assert p.returncode == 0 and "error" not in text.lower(), text + p.stdout + p.stderr
    return text


def test_sav_read_by_pspp():
    with Server() as s:
        p = Device(s.data, PHONE)
        rid, ids = make(s, dev=p)
        d = os.path.join(s.tmp.name, "spss")
        cli("export", "--data", s.data, "--format", "sav", "--out", d, "--quiet",
            "--include-sensitive")
        out = pspp(f"GET FILE='{d}/records.sav'.\n"
                   "DISPLAY DICTIONARY /VARIABLES=incident_county risk_level consent_date.\n"
                   "LIST /VARIABLES=record_id incident_county risk_level consent_date "
                   "device_names caseworker incident_location_latitude.\n")
        assert re.search(r"^incident_county,\d+,County,Nominal,", out, re.M), out
        assert ",47,Nairobi City" in out and ",4,Urgent" in out, out
        assert f"{rid},47,4,20-NOV-2026,{PHONE}," in out, out
        assert FORMULA.replace('"', '""') in out and "-1.29" in out, out
        out = pspp(f"GET FILE='{d}/victims.sav'.\n"
                   "LIST /VARIABLES=record_id instance_id victim_name victim_sex.\n")
        assert NAME in out and out.count(rid) == 3, out
        cb = open(os.path.join(d, "codebook.csv"), encoding="utf-8-sig").read()
        assert "records,incident_county,incident_county,53,choice,County," in cb, cb[:500]
        rows = list(csv.DictReader(io.StringIO(cb, newline="")))
        county = next(x for x in rows if x["column"] == "incident_county")
        assert "047=Nairobi City" in county["choices"] and "47=047" in county["values"]
        risk = next(x for x in rows if x["column"] == "risk_level")
        assert risk["values"] == "1=low; 2=medium; 3=high; 4=urgent", risk
        methods = next(x for x in rows if x["column"] == "act_methods")
        assert "beating=Beating" in methods["choices"] and methods["values"] == "", methods


def test_coordinator_over_http_and_audit():
    with Server() as s:
        a47, a42 = Device(s.data, "nairobi", "047"), Device(s.data, "kisumu", "042")
        admin = Device(s.data, "admin", role="admin")
        coord = Device(s.data, "kisumu coordinator", "042", role="coordinator")
        r47, _ = make(s, "047", a47)
        r42, _ = make(s, "042", a42)
        hdr = {"Authorization": f"Bearer {coord.token}"}
        st, h, body = request(s.port, "GET", "/v1/export?format=xlsx", headers=hdr)
        assert st == 200, (st, body[:200])
        assert h["content-type"] == \
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", h
        assert h["content-disposition"].endswith('.xlsx"'), h
        wb = openpyxl.load_workbook(io.BytesIO(body))
        recs = sheet(wb, "records")
        assert [r["record_id"] for r in recs] == [r42], recs
        assert {v["record_id"] for v in sheet(wb, "victims")} == {r42}
        assert NAME not in every_text(wb)
        st, _, body = request(s.port, "GET", "/v1/export?format=xlsx&include_sensitive=1",
                              headers=hdr)
        assert st == 403, (st, body)
        st, _, body = request(s.port, "GET", "/v1/export?format=dta&county=047", headers=hdr)
        assert st == 403, (st, body)
        # Stata over HTTP: a zip of the files
        st, h, body = request(s.port, "GET", "/v1/export?format=dta", headers=hdr)
        assert st == 200 and h["content-type"] == "application/zip", (st, h)
        assert h["content-disposition"].endswith('.dta.zip"'), h
        z = zipfile.ZipFile(io.BytesIO(body))
        assert "records.dta" in z.namelist() and "codebook.csv" in z.namelist()
        rec = pd.read_stata(io.BytesIO(z.read("records.dta")))
        assert list(rec["record_id"]) == [r42] and list(rec["incident_county"]) == ["Kisumu"]
        st, h, body = request(s.port, "GET", "/v1/export?format=sav",
                              headers={"Authorization": f"Bearer {admin.token}"})
        assert st == 200 and zipfile.ZipFile(io.BytesIO(body)).testzip() is None
        st, _, body = request(s.port, "GET", "/v1/export?format=xls", headers=hdr)
        assert st == 400 and b"xlsx" in body, body
        # audited as CSV is: the start before the first byte, the end after
        deadline = time.monotonic() + 10
        while True:
            _, audit, _ = cli("audit", "--data", s.data)
            mine = [json.loads(x) for x in audit.splitlines()
                    if f'"actor":"device:{coord.hex}"' in x]
            if len(mine) >= 4 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert [e["action"] for e in mine] == ["export", "export_end"] * 2, mine
        assert mine[0]["format"] == "xlsx" and mine[0]["counties"] == ["042"], mine[0]
        assert mine[1]["records"] == 1 and mine[1]["outcome"] == "complete", mine[1]
        assert mine[2]["format"] == "dta"
        assert not [f for f in os.listdir(s.data) if f.startswith(".export")]


def test_csv_gps_columns_and_device_names():
    """CSV too: GPS as four number columns after the old "lat,lon" one (kept
    for old readers), device names after the first eight columns (which
    stay where they were)."""
    with Server() as s:
        p = Device(s.data, PHONE)
        rid, _ = make(s, dev=p)
        _, out, _ = cli("export", "--data", s.data, "--format", "csv", "--quiet",
                        "--include-sensitive")
        rows = list(csv.DictReader(io.StringIO(out.lstrip("\ufeff"), newline="")))
        cols = list(rows[0].keys())
        assert cols[:9] == ["record_id", "form_id", "form_version", "first_received",
                            "last_changed", "devices", "deleted", "conflict", "device_names"], cols
        r = rows[0]
        assert r["device_names"] == PHONE and r["devices"] == p.hex
        at = cols.index("incident_location")
        assert cols[at:at + 5] == ["incident_location", "incident_location_latitude",
                                   "incident_location_longitude", "incident_location_altitude",
                                   "incident_location_accuracy"], cols
        assert r["incident_location"] == "-1.292100,36.821900"  # as before
        assert [float(r["incident_location_" + k]) for k in
                ("latitude", "longitude", "altitude", "accuracy")] == [-1.2921, 36.8219, 1795.5, 4.0]
        # without sensitive fields: none of the five
        _, out, _ = cli("export", "--data", s.data, "--format", "csv", "--quiet")
        assert "incident_location" not in out and "-1.2921" not in out
        # the long format's records.csv: the same columns
        d = os.path.join(s.tmp.name, "long")
        cli("export", "--data", s.data, "--format", "csv", "--out", d, "--quiet",
            "--include-sensitive")
        with open(os.path.join(d, "records.csv"), encoding="utf-8-sig", newline="") as f:
            lr = list(csv.DictReader(f))
        assert lr[0]["device_names"] == PHONE and lr[0]["incident_location_accuracy"] == "4"
        assert list(lr[0].keys())[:9] == cols[:9]
        with open(os.path.join(d, "codebook.csv"), encoding="utf-8-sig", newline="") as f:
            cb = {(x["table"], x["column"]) for x in csv.DictReader(f)}
        assert ("records", "incident_location_latitude") in cb and ("records", "device_names") in cb
        # NDJSON: the names beside the ids
        _, nd, _ = cli("export", "--data", s.data, "--format", "ndjson", "--quiet")
        j = json.loads(nd.splitlines()[0])
        assert j["devices"] == [p.hex] and j["device_names"] == [PHONE], j
        # a name is typed at enrolment: one that looks like a formula stays text
        q = Device(s.data, "=cmd|' /C calc'!A0")
        r2, _ = make(s, dev=q)
        _, out, _ = cli("export", "--data", s.data, "--format", "csv", "--quiet")
        rows = {r["record_id"]: r for r in csv.DictReader(io.StringIO(out.lstrip("\ufeff"),
                                                                      newline=""))}
        assert rows[r2]["device_names"] == "'=cmd|' /C calc'!A0", rows[r2]
        cli("export", "--data", s.data, "--format", "csv", "--out", d, "--quiet")
        with open(os.path.join(d, "records.csv"), encoding="utf-8-sig", newline="") as f:
            lr = {r["record_id"]: r for r in csv.DictReader(f)}
        assert lr[r2]["device_names"] == "'=cmd|' /C calc'!A0", lr[r2]


def test_one_whole_file_export_at_a_time():
    """An XLSX, SAV or DTA export holds a thread of the pool while its file
    is made: a second one waits its turn (503, Retry-After); CSV does not."""
    with Server() as s:
        fill(s.data, 20000)
        admin = Device(s.data, "admin", role="admin")
        auth = {"Authorization": f"Bearer {admin.token}"}
        first = socket.create_connection(("127.0.0.1", s.port), timeout=120)
        try:
            first.sendall(b"GET /v1/export?format=xlsx HTTP/1.1\r\nHost: x\r\n"
                          b"Authorization: Bearer " + admin.token.encode() +
                          b"\r\nConnection: close\r\n\r\n")
            time.sleep(0.3)  # the first is making its file (seconds for 20k)
            st, h, body = request(s.port, "GET", "/v1/export?format=dta", headers=auth)
            assert st == 503 and h.get("retry-after") == "60", (st, h, body[:200])
            assert json.loads(body)["error"] == "busy"
            st, _, body = request(s.port, "GET", "/v1/export?format=csv", headers=auth)
            assert st == 200 and body.count(b"\r\n") == 20001
            st, h, body, _ = read_response(first)
        finally:
            first.close()
        assert st == 200, (st, body[:200])
        wb = openpyxl.load_workbook(io.BytesIO(body), read_only=True)
        assert wb["records"].max_row == 20001
        # its turn over, the next one runs
        st, _, body = request(s.port, "GET", "/v1/export?format=dta", headers=auth)
        assert st == 200 and zipfile.ZipFile(io.BytesIO(body)).testzip() is None


def test_the_next_whole_file_export_may_start_at_the_last_byte():
    """A whole-file export's turn ends with its last byte, not when its end
    entry reaches the audit trail (a commit later): a client that has read
    the whole file and asks for the next one gets it, not 503. Each commit
    here is held 400 ms after its meta page (tests/shim/iolog.c), so the
    end entry comes well after the last byte."""
    with tempfile.TemporaryDirectory(prefix="shahidi-exportturn-") as d:
        srv = Server(args=["--commit-window-ms", "0"])
        srv.env = iolog_env(os.path.join(d, "io.log"), stall_ms=400)
        with srv as s:
            fill(s.data, 1000)
            admin = Device(s.data, "admin", role="admin")
            auth = {"Authorization": f"Bearer {admin.token}"}
            for fmt in ("xlsx", "dta", "sav"):
                st, h, body = request(s.port, "GET", f"/v1/export?format={fmt}", headers=auth)
                assert st == 200, (fmt, st, h, body[:200])
            # and the trail still has each export's end entry
            deadline = time.monotonic() + 10
            while True:
                _, out, _ = cli("audit", "--data", s.data)
                if out.count('"complete"') >= 3 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert out.count('"complete"') >= 3, out[-2000:]


def test_memory_stays_flat():
    """XLSX, SAV and DTA: the peak memory of an export of 20,000 records is
    that of 2,000 (constant-memory sheets, spooled rows), within 8 MB."""
    with Server() as s:
        fill(s.data, 2000)
        out = os.path.join(s.tmp.name, "m")

        def peaks():
            got = {}
            for fmt in ("xlsx", "sav", "dta"):
                path = out + ".xlsx" if fmt == "xlsx" else out + "-" + fmt
                got[fmt] = peak_rss([CLI, "export", "--data", s.data, "--format", fmt,
                                     "--out", path, "--quiet"])
            return got

        small = peaks()
        _, o, _ = cli("device", "enroll", "--data", s.data, "--name", "filler 2", "--county", "042")
        dev = o.split()[1]
        with tempfile.TemporaryDirectory(prefix="shahidi-fill-") as d:
            files = []
            for i in range(18):
                f = os.path.join(d, f"b{i}.z")
                cli("sample", "--device", dev, "--count", 1000, "--seed", 100 + i, "--batch-seq",
                    i + 1, "--first-change", i * 1000 + 1, "--out", f)
                files.append(f)
            cli("ingest", "--data", s.data, "--quiet", *files, timeout=600)
        big = peaks()
        print(f"   peak RSS (KB) 2k: {small}, 20k: {big}")
        # the sanitizers' own memory (ASan's quarantine of freed blocks) is not ours
        for fmt in small if "ASAN_OPTIONS" not in os.environ else ():
            assert big[fmt] < small[fmt] + 8 * 1024, (fmt, small, big)
        wb = openpyxl.load_workbook(out + ".xlsx", read_only=True)
        assert wb["records"].max_row == 20001


def test_cli_refusals():
    with Server() as s:
        rc, _, err = cli("export", "--data", s.data, "--format", "xlsx", check=False)
        assert rc == 2 and "--out FILE.xlsx" in err, (rc, err)
        rc, _, err = cli("export", "--data", s.data, "--format", "sav", check=False)
        assert rc == 2 and "--out DIR" in err, (rc, err)
        rc, _, err = cli("export", "--data", s.data, "--format", "xlsx", "--form", "nope",
                         "--out", os.path.join(s.tmp.name, "x.xlsx"), check=False)
        assert rc != 0 and "nope" in err and not os.path.exists(os.path.join(s.tmp.name, "x.xlsx"))
        # --out FILE.xlsx alone: a workbook, not a folder of CSVs named so
        cli("export", "--data", s.data, "--out", os.path.join(s.tmp.name, "y.xlsx"), "--quiet")
        assert openpyxl.load_workbook(os.path.join(s.tmp.name, "y.xlsx")).sheetnames[0] == "records"
        _, audit, _ = cli("audit", "--data", s.data)
        assert json.loads(audit.splitlines()[-2])["format"] == "xlsx", audit


if __name__ == "__main__":
    run_tests(globals())
