"""Repeat groups (issue 12) end to end: a v3 incident with 3 victims, 4
perpetrators, 5 acts and their involvements, edited offline on three phones
at once, pushed in different orders to three servers started from copies of
one store, converges (same `shahidi verify` digest) and exports as tables
an analyst joins by ids alone (Python's csv module, no pandas)."""
import csv
import io
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
import zipfile
import zlib

from harness import (Device, Server, batch, cli, pb, push, request, run_tests, store_state, uuid7,
                     value)

V3 = 3


def change(dev, record_id, create=False):
    c = pb.Change(change_id=dev.next_change, record_id=record_id, form_id="incident_report",
                  form_version=V3, hlc=dev.hlc(), create=create)
    dev.next_change += 1
    return c


def put(c, field, kind, v, inst=None, seen=()):
    fw = c.fields.add(field=field, value=value(kind, v))
    if inst is not None:
        fw.instance = inst
    for h, d in seen:
        fw.supersedes.add(hlc=h, device=d)
    return fw


def remove(c, inst, seen):
    """Removes an instance that its phone had seen with the stamps seen."""
    fw = c.fields.add(field=0, value=value("boolean", True), instance=inst)
    for h, d in seen:
        fw.seen.add(hlc=h, device=d)


def incident(dev):
    """The v3 incident: 3 victims, 4 perpetrators, 5 acts (act i on victim
    i % 3), each act carried out by perpetrator i % 4 (5 involvements)."""
    rid = uuid7()
    c = change(dev, rid, create=True)
    for field, kind, v in [(1, "choice", "submitted"), (10, "choice", "survivor"),
                           (11, "choice", "signed"), (12, "date", "2026-11-20"),
                           (13, "boolean", True), (51, "choice", "exact"),
                           (53, "choice", "047"), (62, "text", "Three taken from the market.")]:
        put(c, field, kind, v)
    ids = {"victims": [uuid7() for _ in range(3)], "perpetrators": [uuid7() for _ in range(4)],
           "acts": [uuid7() for _ in range(5)], "involvements": [uuid7() for _ in range(5)],
           "referrals": [uuid7()]}
    for i, v in enumerate(ids["victims"]):
        put(c, 200, "text", f"V-{i + 1}", v)
        put(c, 204, "choice", ["female", "male", "female"][i], v)
        put(c, 210, "integer", i, v)
    for i, p in enumerate(ids["perpetrators"]):
        put(c, 220, "choice", ["kps", "aps", "dci", "kps"][i], p)
        put(c, 222, "text", f"Officer {i + 1}, service no. 10{i}", p)  # sensitive
    for i, a in enumerate(ids["acts"]):
        put(c, 240, "choice", ["torture", "arbitrary_detention", "extortion", "threats",
                               "excessive_force"][i], a)
        put(c, 242, "date", "2026-11-1%d" % i, a)
        put(c, 244, "link", ids["victims"][i % 3], a)
    for i, n in enumerate(ids["involvements"]):
        put(c, 260, "link", ids["acts"][i], n)
        put(c, 261, "link", ids["perpetrators"][i % 4], n)
        put(c, 262, "choice", "carried_out", n)
    r = ids["referrals"][0]
    put(c, 280, "link", ids["victims"][0], r)
    put(c, 281, "choice", "medical", r)
    return rid, c, ids


def digest(data):
    return store_state(data)[3]


def read(path):
    with open(path, encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def test_three_phones_converge_and_export_joinable():
    base = tempfile.mkdtemp(prefix="shahidi-groups-")
    try:
        with Server(os.path.join(base, "seed")) as s:
            p1, p2, p3 = (Device(s.data, f"phone {i}") for i in (1, 2, 3))
            admin = Device(s.data, "admin", role="admin")
            c47 = Device(s.data, "nairobi coordinator", "047", role="coordinator")
            c42 = Device(s.data, "kisumu coordinator", "042", role="coordinator")
            rid, create, ids = incident(p1)
            st, resp = push(s.port, p1, batch(p1, [create]))
            assert st == 200 and resp.results[0].status == pb.ChangeResult.APPLIED, resp
            for d in (p2, p3):
                cli("assign", "--data", s.data, str(uuid.UUID(bytes=rid)), d.hex)
        made = (create.hlc, p1.id)  # every value of the incident has this stamp

        # Offline, at once. p1 and p2 both change perpetrator 1's institution
        # (a conflict on that instance's field); p1 adds a perpetrator and
        # links it to act 1; p2 adds a victim and removes act 5 and its
        # involvement, having seen them; p3, not having seen that removal,
        # corrects act 5's date (the record is flagged) and adds a
        # perpetrator.
        perp1, act5, inv5 = ids["perpetrators"][0], ids["acts"][4], ids["involvements"][4]
        new_p1, new_inv, new_v, new_p3 = uuid7(), uuid7(), uuid7(), uuid7()
        c1 = change(p1, rid)
        put(c1, 220, "choice", "aps", perp1, seen=[made])
        put(c1, 220, "choice", "kdf", new_p1)
        put(c1, 260, "link", ids["acts"][0], new_inv)
        put(c1, 261, "link", new_p1, new_inv)
        put(c1, 262, "choice", "ordered", new_inv)
        c2a = change(p2, rid)
        put(c2a, 220, "choice", "dci", perp1, seen=[made])
        put(c2a, 200, "text", "V-4", new_v)
        c2b = change(p2, rid)
        remove(c2b, act5, [made])
        remove(c2b, inv5, [made])
        c3 = change(p3, rid)
        put(c3, 242, "date", "2026-11-19", act5, seen=[made])
        put(c3, 220, "choice", "unknown", new_p3)
        batches = {"p1": (p1, batch(p1, [c1])), "p2a": (p2, batch(p2, [c2a])),
                   "p2b": (p2, batch(p2, [c2b])), "p3": (p3, batch(p3, [c3]))}
        orders = [["p1", "p2a", "p2b", "p3"], ["p3", "p2b", "p2a", "p1"],
                  ["p2b", "p3", "p1", "p2a", "p3", "p1"]]  # the last resends two
        digests, dirs, zipped = [], [], None
        for k, order in enumerate(orders):
            d = os.path.join(base, f"server{k}")
            shutil.copytree(os.path.join(base, "seed"), d)
            with Server(d) as s:
                for name in order:
                    dev, body = batches[name]
                    st, resp = push(s.port, dev, body)
                    assert st == 200, (st, resp)
                    assert all(r.status in (pb.ChangeResult.APPLIED, pb.ChangeResult.DUPLICATE)
                               for r in resp.results), (name, resp)
                if k == 0:
                    st, h, zipped = request(s.port, "GET", "/v1/export?format=csvzip", headers={
                        "Authorization": f"Bearer {admin.token}", "Accept-Encoding": "gzip"})
                    assert st == 200 and h["content-type"] == "application/zip", (st, h)
                    assert "content-encoding" not in h and h["content-disposition"].endswith('.zip"')
                    # coordinators: their counties, never the sensitive columns
                    auth = lambda d: {"Authorization": f"Bearer {d.token}"}
                    st, h, z47 = request(s.port, "GET", "/v1/export?format=csvzip", headers=auth(c47))
                    assert st == 200, (st, z47[:200])
                    zc = zipfile.ZipFile(io.BytesIO(z47))
                    perps_c = zc.read("perpetrators.csv").decode("utf-8-sig")
                    assert "perpetrator_identifiers" not in perps_c and "Officer" not in perps_c
                    assert len(perps_c.splitlines()) == 1 + 6
                    st, h, z42 = request(s.port, "GET", "/v1/export?format=csvzip", headers=auth(c42))
                    zc = zipfile.ZipFile(io.BytesIO(z42))
                    assert st == 200 and all(len(zc.read(n).splitlines()) == 1
                                             for n in zc.namelist() if n != "codebook.csv")
                    st, h, b = request(s.port, "GET", "/v1/export?format=csvzip&include_sensitive=1",
                                       headers=auth(c47))
                    assert st == 403, (st, b)
            digests.append(digest(d))
            dirs.append(d)
        print(f"   digests of 3 orders: {[x[:12] for x in digests]}")
        assert len(set(digests)) == 1, digests

        # The long format, from each server: group tables equal byte for byte
        tables = ["victims", "perpetrators", "acts", "involvements", "referrals", "sources"]
        outs = []
        for k, d in enumerate(dirs):
            out = os.path.join(base, f"export{k}", "tables")  # made if missing
            cli("export", "--data", d, "--format", "csv", "--out", out, "--quiet")
            assert sorted(os.listdir(out)) == sorted(["records.csv", "codebook.csv"] +
                                                     [t + ".csv" for t in tables])
            outs.append(out)
        for t in tables:
            first = open(os.path.join(outs[0], t + ".csv"), "rb").read()
            for o in outs[1:]:
                assert open(os.path.join(o, t + ".csv"), "rb").read() == first, t

        out = outs[0]
        recs = read(os.path.join(out, "records.csv"))
        assert len(recs) == 1 and recs[0]["deleted"] == "no" and recs[0]["conflict"] == "yes"
        # the record's own fields only: no group column leaks into records.csv
        for col in ["victim_code", "perpetrator_institution", "act_violation",
                    "involvement_act", "referral_type", "source_kind"]:
            assert col not in recs[0], col
        victims = read(os.path.join(out, "victims.csv"))
        perps = read(os.path.join(out, "perpetrators.csv"))
        acts = read(os.path.join(out, "acts.csv"))
        invs = read(os.path.join(out, "involvements.csv"))
        refs = read(os.path.join(out, "referrals.csv"))
        assert (len(victims), len(perps), len(acts), len(invs), len(refs)) == (4, 6, 4, 5, 1)
        assert "perpetrator_identifiers" not in perps[0]  # sensitive: not asked for
        assert "removed" not in acts[0]
        assert {p["perpetrator_institution"] for p in perps} >= {"Kenya Defence Forces", "Unknown"}
        # the join an analyst makes: victim <- act <- involvement -> perpetrator
        vby = {v["instance_id"]: v for v in victims}
        aby = {a["instance_id"]: a for a in acts}
        pby = {p["instance_id"]: p for p in perps}
        assert all(x["record_id"] == recs[0]["record_id"] for x in victims + perps + acts + invs)
        joined = [(vby[aby[i["involvement_act"]]["act_victim"]]["victim_code"],
                   aby[i["involvement_act"]]["act_violation"],
                   pby[i["involvement_perpetrator"]]["perpetrator_institution"], i["involvement_degree"])
                  for i in invs]
        print(f"   joined victim-act-perpetrator rows: {len(joined)}")
        assert len(joined) == 5
        assert ("V-1", "Torture", "Kenya Defence Forces", "Gave orders") in joined
        assert sum(1 for j in joined if j[0] == "V-1") == 3  # acts 1 and 4, act 1 twice
        assert refs[0]["parent_instance_id"] == refs[0]["referral_victim"] == \
            str(uuid.UUID(bytes=ids["victims"][0]))

        # removed instances on request, marked; sensitive columns on request
        full = os.path.join(base, "full")
        cli("export", "--data", dirs[1], "--format", "csv", "--out", full, "--quiet",
            "--include-deleted", "--include-sensitive")
        acts = read(os.path.join(full, "acts.csv"))
        assert len(acts) == 5 and [a["removed"] for a in acts].count("yes") == 1
        gone = next(a for a in acts if a["removed"] == "yes")
        assert gone["instance_id"] == str(uuid.UUID(bytes=act5)) and gone["act_date"] == "2026-11-19"
        assert len(read(os.path.join(full, "involvements.csv"))) == 6
        assert "perpetrator_identifiers" in read(os.path.join(full, "perpetrators.csv"))[0]

        # the codebook: every exported column of every table
        book = read(os.path.join(out, "codebook.csv"))
        row = next(b for b in book if b["table"] == "perpetrators" and
                   b["column"] == "perpetrator_institution")
        assert row["field_number"] == "220" and row["type"] == "choice" and row["sensitive"] == "no"
        assert "kdf=Kenya Defence Forces" in row["choices"]
        assert not any(b["column"] == "perpetrator_identifiers" for b in book)
        assert any(b["table"] == "referrals" and b["column"] == "parent_instance_id" for b in book)
        assert any(b["table"] == "records" and b["column"] == "incident_county" for b in book)

        # a single file as before when --out names a .csv: the record, not
        # hidden by an instance's removal, without group columns
        one = os.path.join(base, "one.csv")
        cli("export", "--data", dirs[2], "--format", "csv", "--out", one, "--quiet")
        rows = read(one)
        assert len(rows) == 1 and rows[0]["deleted"] == "no" and "victim_code" not in rows[0]

        # over HTTP, format=csvzip: the same tables in one zip (CRCs checked)
        zf = zipfile.ZipFile(io.BytesIO(zipped))
        assert zf.testzip() is None
        assert zf.namelist() == ["records.csv"] + [t + ".csv" for t in tables] + ["codebook.csv"]
        for name in zf.namelist():
            assert zf.read(name) == open(os.path.join(out, name), "rb").read(), name
        if shutil.which("unzip"):  # another reader than Python's
            zpath = os.path.join(base, "export.zip")
            open(zpath, "wb").write(zipped)
            t = subprocess.run(["unzip", "-tq", zpath], capture_output=True, text=True, timeout=60)
            assert t.returncode == 0, t.stdout + t.stderr
        print(f"   csvzip of the incident: {len(zipped)} bytes")

        # NDJSON nests each group's instances, with their ids, under its name
        _, nd, _ = cli("export", "--data", dirs[0], "--format", "ndjson", "--quiet")
        o = json.loads(nd)
        assert "victim_code" not in o["fields"] and o["fields"]["incident_county"] == "047"
        assert [len(o[g]) for g in tables[:5]] == [4, 6, 4, 5, 1] and "sources" not in o
        assert {v["victim_code"] for v in o["victims"]} == {"V-1", "V-2", "V-3", "V-4"}
        assert all(set(p) >= {"instance_id", "removed"} and "perpetrator_identifiers" not in p
                   for p in o["perpetrators"])
        assert {i["instance_id"] for i in o["involvements"]} == {r["instance_id"] for r in invs}
        _, nd, _ = cli("export", "--data", dirs[0], "--format", "ndjson", "--quiet",
                       "--include-deleted")
        acts = json.loads(nd)["acts"]
        assert len(acts) == 5 and [a["removed"] for a in acts].count(True) == 1

        # Conflicts name the instance, with the group's label, in the CLI
        # and over HTTP; the removal flag is its own kind; both resolve.
        P1, A5 = str(uuid.UUID(bytes=perp1)), str(uuid.UUID(bytes=act5))
        RID = str(uuid.UUID(bytes=rid))
        _, text, _ = cli("conflicts", "--data", dirs[0])
        print("   " + "\n   ".join(text.splitlines()[:8]))
        assert f"perpetrators[{P1}].perpetrator_institution" in text
        assert "Perpetrators: Institution" in text
        assert f"acts[{A5}]" in text and "had not seen the removal" in text
        assert "still linked to by a live value" in text  # the removed involvement's link
        with Server(dirs[0]) as s:
            st, h, b = request(s.port, "GET", "/v1/conflicts",
                               headers={"Authorization": f"Bearer {admin.token}"})
            assert st == 200, (st, b)
            rec = json.loads(b)["records"][0]
            cs = {(c.get("group"), c["field"]): c for c in rec["conflicts"]}
            c = cs[("perpetrators", "perpetrator_institution")]
            assert c["instance_id"] == P1 and c["group_label"] == "Perpetrators"
            assert c["path"] == f"perpetrators[{P1}].perpetrator_institution"
            assert c["label"] == "Perpetrators: Institution" and len(c["values"]) == 2
            flags = {c["kind"]: c for c in rec["conflicts"] if c["field"] == "_removed"}
            f = flags["removed_instance_edited"]
            assert f["instance_id"] == A5 and f["removed_by"] == p2.hex
            assert f["path"] == f"acts[{A5}]" and f["group_label"] == "Acts"
            # the removed involvement still names act 5 (see the merge rule)
            assert flags["link_to_removed_instance"]["instance_id"] == A5
            assert ("perpetrators", "perpetrator_identifiers") not in cs
            # resolved over HTTP: p2's institution, for that instance only
            body = json.dumps({"record_id": RID, "field": "perpetrator_institution",
                               "instance": P1, "take": p2.hex}).encode()
            st, h, b = request(s.port, "POST", "/v1/conflicts/resolve", body, headers={
                "Authorization": f"Bearer {admin.token}", "Content-Type": "application/json"})
            assert st == 200, (st, b)
            # without the instance, the record's own field is not in conflict
            body = json.dumps({"record_id": RID, "field": "perpetrator_institution",
                               "take": p2.hex}).encode()
            st, h, b = request(s.port, "POST", "/v1/conflicts/resolve", body, headers={
                "Authorization": f"Bearer {admin.token}", "Content-Type": "application/json"})
            assert st == 409, (st, b)
        # the removal flag, from the CLI: the removal confirmed, having seen
        # the late edit
        cli("conflicts", "resolve", "--data", dirs[0], "--as", admin.hex, RID, "--instance", A5,
            "--deleted", "yes")
        _, js, _ = cli("show", "--data", dirs[0], "--json", RID)
        o = json.loads(js)
        print(f"   after both resolutions: open_conflicts {o['open_conflicts']}, "
              f"{[c.get('kind') or c['field'] for c in o['conflicts']]}")
        assert not [c for c in o["conflicts"] if c.get("instance_id") == P1 or
                    c.get("kind") == "removed_instance_edited"], o["conflicts"]
        inst = {p["instance_id"]: p for p in o["groups"]["perpetrators"]}
        assert inst[P1]["fields"]["perpetrator_institution"]["value"] == "dci"
        assert next(a for a in o["groups"]["acts"] if a["instance_id"] == A5)["removed"] is True
        assert "victim_code" not in o["fields"]
        # the custody trail names instances too
        _, hj, _ = cli("history", "--data", dirs[0], "--json", RID)
        names = {(f["name"], f["value"]) for e in json.loads(hj)["history"] for f in e["fields"]}
        assert (f"acts[{A5}]", "removed") in names, sorted(names)[:5]
        assert (f"perpetrators[{P1}].perpetrator_institution", "DCI") in names
        assert (f"acts[{A5}].act_date", "2026-11-19") in names
        _, ht, _ = cli("history", "--data", dirs[0], RID)
        assert f"victims[{str(uuid.UUID(bytes=new_v))}].victim_code" in ht
        _, audit, _ = cli("audit", "--data", dirs[0])
        assert audit.count(f'"instance":"{P1}"') == 1 and audit.count(f'"instance":"{A5}"') == 1
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_sample_v3_fills_every_group_with_valid_links():
    """`shahidi sample --form-version 3`: 0-3 instances per group (at least
    the group's min), every link naming an instance of its report; the
    server applies them all; the export's tables join."""
    with Server() as s:
        dev = Device(s.data, "sampler")
        path = os.path.join(s.tmp.name, "v3.z")
        cli("sample", "--device", dev.hex, "--count", 200, "--seed", 7, "--form-version", 3,
            "--out", path)
        raw = zlib.decompress(open(path, "rb").read())
        b = pb.PushBatch()
        b.ParseFromString(raw)
        counts = {}
        for c in b.changes:
            assert c.form_version == 3
            per = {}
            for fw in c.fields:
                if fw.instance:
                    per.setdefault(fw.field // 20, set()).add(fw.instance)
            for k, ids in per.items():
                counts.setdefault(k, []).append(len(ids))
        # field numbers 200.., 220.., 240.., 260.., 280.., 300..: the groups
        assert sorted(counts) == [10, 11, 12, 13, 14, 15], sorted(counts)
        assert all(1 <= n <= 3 for n in counts[10]) and all(1 <= n <= 3 for n in counts[12])
        assert all(n <= 3 for v in counts.values() for n in v)
        assert max(counts[11]) == 3 and max(counts[13]) == 3
        st, resp = push(s.port, dev, raw, encoding="identity")
        assert st == 200 and all(r.status == pb.ChangeResult.APPLIED for r in resp.results), \
            [r.reason for r in resp.results if r.status != pb.ChangeResult.APPLIED][:3]
        out = os.path.join(s.tmp.name, "tables")
        cli("export", "--data", s.data, "--format", "csv", "--out", out, "--quiet")
        t = {n: read(os.path.join(out, n + ".csv")) for n in
             ["records", "victims", "perpetrators", "acts", "involvements", "referrals"]}
        assert len(t["records"]) == 200
        ids = {n: {(r["record_id"], r["instance_id"]) for r in rows} for n, rows in t.items()
               if n != "records"}
        links = [("acts", "act_victim", "victims"), ("involvements", "involvement_act", "acts"),
                 ("involvements", "involvement_perpetrator", "perpetrators"),
                 ("referrals", "referral_victim", "victims")]
        for table, col, to in links:
            for r in t[table]:
                assert (r["record_id"], r[col]) in ids[to], (table, col, r)
        assert all(r["parent_instance_id"] == r["referral_victim"] for r in t["referrals"])
        print("   200 v3 samples: " + ", ".join(f"{n} {len(rows)}" for n, rows in t.items()))


def fill_v3(data, n, step=2000):
    _, out, _ = cli("device", "enroll", "--data", data, "--name", "filler", "--county", "047")
    dev = out.split()[1]
    with tempfile.TemporaryDirectory(prefix="shahidi-fill-") as d:
        files = []
        for i in range(n // step):
            f = os.path.join(d, f"b{i}.z")
            cli("sample", "--device", dev, "--count", step, "--seed", i + 1, "--batch-seq", i + 1,
                "--first-change", i * step + 1, "--form-version", 3, "--out", f)
            files.append(f)
        cli("ingest", "--data", data, "--quiet", *files, timeout=600)


def peak_rss(cmd):
    out = subprocess.run(["/usr/bin/env", "python3", "-c",
                          "import resource,subprocess,sys;"
                          "p=subprocess.run(sys.argv[1:],stdout=subprocess.DEVNULL,check=True);"
                          "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)",
                          *cmd], capture_output=True, text=True, check=True, timeout=300)
    return int(out.stdout)


def test_long_format_in_constant_memory():
    """The long format's peak memory does not grow with the store: 4k and
    40k v3 records (about 10 rows each across the tables)."""
    base = tempfile.mkdtemp(prefix="shahidi-groups-mem-")
    try:
        small, big = os.path.join(base, "small"), os.path.join(base, "big")
        fill_v3(small, 4000)
        fill_v3(big, 40000)
        cli_path = os.path.join(os.environ["SHAHIDI_BUILD"], "tools", "shahidi")
        rss = {}
        for name, d in [("small", small), ("big", big)]:
            out = os.path.join(base, "out-" + name)
            t0 = time.time()
            rss[name] = peak_rss([cli_path, "export", "--data", d, "--format", "csv", "--out", out,
                                  "--quiet"])
            secs = time.time() - t0
            rows = sum(sum(1 for _ in open(os.path.join(out, f), encoding="utf-8-sig")) - 1
                       for f in os.listdir(out) if f != "codebook.csv")
            print(f"   {name}: {rows} rows in {secs:.2f} s ({rows / secs:.0f} rows/s), "
                  f"peak RSS {rss[name]} KiB")
        assert rows > 40000 * 5
        # Under AddressSanitizer freed memory sits in its quarantine (up to
        # 256 MiB): the sanitizers' own memory is not ours.
        if "ASAN_OPTIONS" not in os.environ:
            assert rss["big"] < rss["small"] * 1.3 + 4096, rss
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    run_tests(globals())
