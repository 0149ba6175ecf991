"""The command lines as people type them: shahidi-server's option errors,
the CLI refusing what is not a store or not a county, `shahidi status`'s
table, `--version`, and a coordinator's scope in `conflicts resolve`."""
import json
import os
import re
import subprocess
import tempfile
import time
import unicodedata
import uuid

from harness import (CLI, SERVER, SRC, Device, assign, batch, cli, edit, pb, report, run_tests)
import harness

# Every flag of shahidi-server that takes a number, with a value it refuses.
NUMERIC_FLAGS = ["max-body", "max-inflated", "max-changes", "max-header", "header-timeout",
                 "body-timeout", "idle-timeout", "max-conns", "max-queue", "max-inflight",
                 "pull-limit", "map-size", "max-map", "max-skew", "auth-burst", "auth-refill",
                 "release-above"]


def server_refuses(args):
    with tempfile.TemporaryDirectory(prefix="shahidi-it-") as d:
        p = subprocess.run([SERVER, "--data", os.path.join(d, "data"), "--listen",
                            "127.0.0.1:0", *args], capture_output=True, timeout=30,
                           env={"PATH": "/usr/bin:/bin", "SECRET_MARKER": "do-not-print-me"})
        assert p.returncode == 2, (args, p.returncode, p.stderr)
        assert not os.path.exists(os.path.join(d, "data")), args
        return p.stderr.decode("utf-8")  # strict: a stray byte fails here


def test_server_names_the_flag_it_refuses():
    # --max-body 16X used to say "--X"; --pull-limit x read past the end of
    # "x" and printed part of the environment.
    for flag in NUMERIC_FLAGS:
        for bad in ["x", "16X", "-1", "nan", ""]:
            for form in ([f"--{flag}", bad], [f"--{flag}={bad}"]):
                err = server_refuses(form)
                assert err == f"shahidi-server: bad value '{bad}' for --{flag} (see --help)\n", \
                    (form, err)
    # an abbreviated flag is named in full
    err = server_refuses(["--pull-lim", "x"])
    assert err == "shahidi-server: bad value 'x' for --pull-limit (see --help)\n", err


def store_files(d):
    return sorted(os.listdir(d))


def test_cli_refuses_a_folder_that_is_not_a_store():
    with tempfile.TemporaryDirectory(prefix="shahidi-it-") as d:
        empty = os.path.join(d, "empty")
        os.mkdir(empty, 0o755)
        with open(os.path.join(empty, "notes.txt"), "w") as f:
            f.write("not a store\n")
        out = os.path.join(d, "out.csv")
        rid = str(uuid.uuid4())
        for args in [["export", "--data", empty, "--format", "csv"],
                     ["export", "--data", empty, "--format", "ndjson", "--out", out],
                     ["conflicts", "resolve", "--data", empty, "--as", "00000000000000aa", rid,
                      "risk_level", "--value", "high"],
                     ["conflicts", "resolve", "--data", empty, "--as", "00000000000000aa", rid,
                      "--deleted", "yes"]]:
            rc, so, se = cli(*args, check=False)
            assert rc == 1, (args, rc, so, se)
            assert so == "", (args, so)
            assert "holds no Shahidi store" in se, (args, se)
            assert store_files(empty) == ["notes.txt"], (args, store_files(empty))
            assert os.stat(empty).st_mode & 0o777 == 0o755
            assert not os.path.exists(out)
        missing = os.path.join(d, "missing")
        rc, so, se = cli("export", "--data", missing, check=False)
        assert rc == 1 and not os.path.exists(missing), (rc, se)


def test_unknown_counties_are_refused():
    with tempfile.TemporaryDirectory(prefix="shahidi-it-") as d:
        data = os.path.join(d, "data")
        Device(data, "nairobi", "047")
        for cmd in [["export", "--format", "csv"], ["status"]]:
            for bad in ["099", "Nairobi", "047,48", "000", "47"]:
                rc, so, se = cli(*cmd, "--data", data, "--county", bad, check=False)
                assert rc == 2 and so == "", (cmd, bad, rc, so, se)
                assert "unknown county" in se and "001 Mombasa" in se and \
                    "047 Nairobi City" in se, (cmd, bad, se)
            # good codes still work
            cli(*cmd, "--data", data, "--county", "047,042")
        # only the good export is in the audit log
        _, out, _ = cli("audit", "--data", data)
        assert out.count('"export"') == 1, out


def width(s):
    """Display width as a terminal shows it (combining marks take none)."""
    return sum(0 if unicodedata.combining(ch) else
               2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in s)


def test_status_table():
    import harness as h
    with h.Server() as s:
        long_name = "Wanjirũ Wambũi Njoroge Kĩmani"  # ũ is 2 bytes: cut at 20 bytes it split
        devs = [Device(s.data, long_name, "047"), Device(s.data, "Kisumu phone", "042"),
                Device(s.data, "Amani", "047")]
        old = Device(s.data, "Old phone", "042")
        coord = Device(s.data, "Coordinator Müller", "047", role="coordinator")
        for d in devs:
            st, r = h.push(s.port, d, batch(d, [report(d, county="047" if d is not devs[1] else "042")]))
            assert st == 200
        # a rejection on one phone, so LAST REJECTION has something in it
        bad = report(devs[2])
        bad.fields[0].value.choice = "nonsense"
        h.push(s.port, devs[2], batch(devs[2], [bad]))
        cli("device", "revoke", "--data", s.data, coord.hex)
        # "Old phone" never pushed: silent once enrolled longer than the
        # threshold (0.9 s)
        time.sleep(1.0)
        rc, out, _ = cli("status", "--data", s.data, "--silent-days", "0.00001")
        lines = out.splitlines()
        head_i = next(i for i, ln in enumerate(lines) if ln.startswith("DEVICE"))
        head = lines[head_i]
        rows = lines[head_i + 1:]
        assert len(rows) == 5, rows
        # every row is valid UTF-8 (the CLI wrote text) and no name is cut
        # inside a character; columns line up by display width
        for col in ["COUNTY", "ROLE", "REVOKED", "SILENT", "LAST PUSH", "LAST REJECTION"]:
            assert col in head, (col, head)
        for r in rows:
            assert "\ufffd" not in r
        headers = ["DEVICE", "NAME", "COUNTY", "ROLE", "REVOKED", "LAST PUSH", "LAST PULL", "APP",
                   "UNSENT", "BATCHES", "APPLIED", "DUP", "REJ", "TO PULL", "CONFL", "SILENT",
                   "LAST REJECTION"]
        starts = [width(head[:head.index(hd)]) for hd in headers] + [10 ** 6]

        def col(row, name):
            """The text under a header, by display position (left-aligned
            columns start under their header)."""
            k = headers.index(name)
            acc, pos = "", 0
            for ch in row:
                if starts[k] <= pos < starts[k + 1]:
                    acc += ch
                pos += width(ch)
            return acc
        for r in rows:
            assert re.match(r"\d{3} ", col(r, "COUNTY")), (r, col(r, "COUNTY"))
        by_id = {r.split()[0]: r for r in rows}
        crow = by_id[coord.hex]
        assert col(crow, "ROLE").split()[0] == "coordinator", crow
        assert col(crow, "REVOKED").split()[0] == "yes", crow
        assert col(by_id[devs[0].hex], "REVOKED").split()[0] == "-"
        name0 = col(by_id[devs[0].hex], "NAME")
        assert name0.endswith("… "), name0
        assert width(name0) == 21 and long_name.startswith(name0[:-2]), name0
        assert col(by_id[old.hex], "SILENT").split()[0] == "yes", by_id[old.hex]
        assert "[SILENT]" not in out
        lastrej = col(by_id[old.hex], "LAST REJECTION").strip()
        assert lastrej == "", by_id[old.hex]
        assert "choice_not_in_vocabulary" in col(by_id[devs[2].hex], "LAST REJECTION")
        # counties: only the active ones unless --all-counties
        county_rows = [ln for ln in lines[:head_i] if re.match(r"\d{3} ", ln)]
        assert [ln[:3] for ln in county_rows] == ["042", "047"], county_rows
        _, out_all, _ = cli("status", "--data", s.data, "--all-counties")
        county_rows = [ln for ln in out_all.splitlines() if re.match(r"\d{3} ", ln)]
        assert len(county_rows) == 47, county_rows


def test_version():
    with open(os.path.join(SRC, "meson.build")) as f:
        version = re.search(r"version: '([^']+)'", f.read()).group(1)
    rc, out, err = cli("--version")
    assert out == f"shahidi {version}\n", out
    rc, out, err = cli("--help")
    assert "--version" in out


def test_resolve_as_coordinator_keeps_to_its_counties():
    with tempfile.TemporaryDirectory(prefix="shahidi-it-") as d:
        data = os.path.join(d, "data")
        a, b = Device(data, "kisumu 1", "042"), Device(data, "kisumu 2", "042")
        coord47 = Device(data, "nairobi coordinator", "047", role="coordinator")
        coord42 = Device(data, "kisumu coordinator", "042", role="coordinator")
        r = report(a, county="042")
        path = os.path.join(d, "b")
        for dev, changes in [(a, [r]),
                             (a, [edit(a, r.record_id, 140, "choice", "high", [(r.hlc, a.id)])]),
                             (b, [edit(b, r.record_id, 140, "choice", "low", [(r.hlc, a.id)])])]:
            if dev is b:
                assign(data, r.record_id, b)  # b holds it: it may change it
            with open(path, "wb") as f:
                f.write(batch(dev, changes))
            cli("ingest", "--data", data, path)
        rid = str(uuid.UUID(bytes=r.record_id))
        _, audit_before, _ = cli("audit", "--data", data)
        before = harness.store_state(data)
        for args in [[rid, "risk_level", "--take", a.hex], [rid, "--deleted", "no"]]:
            rc, out, err = cli("conflicts", "resolve", "--data", data, "--as", coord47.hex, *args,
                               check=False)
            assert rc == 1 and out == "", (rc, out, err)
            assert f"no record {rid}" in err, err  # out of scope looks absent, as over HTTP
        # nor may a phone (its token is refused at the office over HTTP too)
        rc, out, err = cli("conflicts", "resolve", "--data", data, "--as", a.hex, rid,
                           "risk_level", "--take", a.hex, check=False)
        assert rc == 1 and "may not resolve conflicts" in err, (rc, err)
        assert harness.store_state(data) == before
        _, audit_after, _ = cli("audit", "--data", data)
        assert audit_after == audit_before
        # the Kisumu coordinator may
        cli("conflicts", "resolve", "--data", data, "--as", coord42.hex, rid, "risk_level",
            "--take", a.hex)
        _, audit_after, _ = cli("audit", "--data", data)
        # (the CLI's enrolments are audited too: look at the resolutions)
        resolved = [ln for ln in audit_after.splitlines() if '"action":"resolve"' in ln]
        assert len(resolved) == 1 and coord42.hex in resolved[0] and coord47.hex not in resolved[0]


if __name__ == "__main__":
    run_tests(globals())
