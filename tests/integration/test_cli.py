"""The command lines as people type them: shahidi-server's option errors,
the CLI refusing what is not a store or not a county, `shahidi status`'s
table, `--version`, and a coordinator's scope in `conflicts resolve`."""
import json
import os
import re
import subprocess
import tempfile
import unicodedata
import uuid

from harness import (CLI, SERVER, Device, batch, cli, edit, pb, report, run_tests,
                     SRC)
import harness

# Every flag of shahidi-server that takes a number, with a value it refuses.
NUMERIC_FLAGS = ["max-body", "max-inflated", "max-changes", "max-header", "header-timeout",
                 "body-timeout", "idle-timeout", "max-conns", "max-queue", "max-inflight",
                 "pull-limit", "map-size", "max-map", "max-skew", "auth-burst", "auth-refill"]


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


if __name__ == "__main__":
    run_tests(globals())
