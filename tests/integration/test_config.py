"""The server's configuration file (--config, /etc/shahidi/shahidi.conf by
default): its keys are the long flags, flags on the command line win over
it, and every bad line is refused with the file, the line and the key,
before anything is written."""
import os
import re
import subprocess
import tempfile
import time

from harness import SERVER, SRC, Device, Server, batch, push, report, request, run_tests


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def refused(args, *want):
    """Runs the server with args; it must exit 2 at once saying each of want,
    and create no data directory."""
    with tempfile.TemporaryDirectory(prefix="shahidi-conf-") as d:
        data = os.path.join(d, "never")
        p = subprocess.run([SERVER, "--data", data, "--listen", "127.0.0.1:0", *args],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 2, (args, p.returncode, p.stdout, p.stderr)
        for w in want:
            assert w in p.stderr, (args, w, p.stderr)
        assert not os.path.exists(data), "a refused configuration created the data directory"
        return p.stderr


def test_the_file_sets_what_flags_set_and_flags_win():
    with tempfile.TemporaryDirectory(prefix="shahidi-conf-") as d:
        a, b = os.path.join(d, "from-file"), os.path.join(d, "from-flag")
        conf = write(os.path.join(d, "shahidi.conf"),
                     "# a comment\n\n"
                     f"data = {a}\n"
                     "listen = 127.0.0.1:0\n"
                     "   max-body = 1K   \n"
                     "quiet = yes\n")
        # only --config: data and listen come from the file
        p = subprocess.Popen([SERVER, "--config", conf], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        try:
            line = p.stdout.readline()
            assert re.match(r"listening on http://127\.0\.0\.1:\d+$", line), line
        finally:
            p.terminate()
            _, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        assert f"configuration from {conf}" in err and f"store {a} (" in err, err
        assert os.path.exists(os.path.join(a, "data.mdb"))
        # the harness gives --data b and --listen: they win; max-body from
        # the file refuses a 4K push, quiet = yes leaves no request lines
        with Server(data=b, args=["--config", conf]) as s:
            dev = Device(s.data, "A")
            body = batch(dev, [report(dev, narrative="x" * 4000)])
            st, _ = push(s.port, dev, body, encoding="identity")
            assert st == 413, st
            request(s.port, "GET", "/healthz")
            # quiet = no would log both at once: the 413 and the healthz
            time.sleep(0.3)
            assert "/healthz" not in s.logtext() and "/v1/push" not in s.logtext(), s.logtext()
        assert os.path.exists(os.path.join(b, "data.mdb"))
        # the flag wins over the file's max-body
        with Server(data=b, args=["--config", conf, "--max-body", "1M"]) as s:
            dev = Device(s.data, "B")
            st, _ = push(s.port, dev, batch(dev, [report(dev, narrative="x" * 4000)]),
                         encoding="identity")
            assert st == 200, st
        # `quiet = false` leaves the log on; /dev/null is an empty configuration
        write(conf, "quiet = false\n")
        for c in (conf, "/dev/null"):
            with Server(args=["--config", c]) as s:
                request(s.port, "GET", "/healthz")
                deadline = time.time() + 10
                while "/healthz" not in s.logtext() and time.time() < deadline:
                    time.sleep(0.05)
                assert "/healthz" in s.logtext(), s.logtext()


def test_every_bad_line_is_refused_with_file_line_and_key():
    with tempfile.TemporaryDirectory(prefix="shahidi-conf-") as d:
        def conf(text):
            return write(os.path.join(d, "c.conf"), text)
        p = os.path.join(d, "c.conf")
        refused(["--config", conf("quiet = no\nlisten-on = 127.0.0.1:9\n")],
                f"{p}:2: unknown key 'listen-on'")
        refused(["--config", conf("\n\nmax-body = 16X\n")],
                f"{p}:3: bad value '16X' for key 'max-body'")
        refused(["--config", conf("pull-limit = x\n")], f"{p}:1: bad value 'x' for key 'pull-limit'")
        refused(["--config", conf("header-timeout = 0\n")],
                f"{p}:1: bad value '0' for key 'header-timeout'")
        refused(["--config", conf("quiet = maybe\n")],
                f"{p}:1: bad value 'maybe' for key 'quiet' (true or false)")
        refused(["--config", conf("data =\n")], f"{p}:1: bad value '' for key 'data'")
        refused(["--config", conf("# ok\nlisten 127.0.0.1:8080\n")],
                f"{p}:2: expected 'key = value'")
        refused(["--config", conf("--listen = 127.0.0.1:0\n")], f"{p}:1: unknown key '--listen'", "without '--'")
        refused(["--config", conf("Listen = 127.0.0.1:0\n")], f"{p}:1: bad key 'Listen'")
        refused(["--config", conf("quiet = yes\nmax-conns = 10\nquiet = no\n")],
                f"{p}:3: key 'quiet' given again (first on line 1)")
        # what is a flag but not a setting
        for key in ("config", "help", "version"):
            refused(["--config", conf(f"{key} = x\n")], f"{p}:1: unknown key '{key}'")
        refused(["--config", conf("forms = " + "x" * 5000 + "\n")], f"{p}:1: line longer than")
        refused(["--config", conf("quiet = yes\0\n")], f"{p}: holds a NUL byte")
        refused(["--config", os.path.join(d, "missing.conf")],
                f"{os.path.join(d, 'missing.conf')}: No such file or directory")
        refused(["--config", d], f"{d}: Is a directory")
        os.chmod(conf("quiet = yes\n"), 0)
        if os.geteuid() != 0:  # root reads it anyway
            refused(["--config", p], f"{p}: Permission denied")
        os.chmod(p, 0o600)
        # a bad flag after a good file is still the flag's error
        refused(["--config", conf("quiet = yes\n"), "--max-body", "16X"],
                "bad value '16X' for --max-body")


def test_the_example_file_lists_every_key_with_its_default():
    """server/systemd/shahidi.conf.example: every long flag but --config,
    --help and --version appears (commented, with its default, but data,
    which the service sets), and each default line, uncommented, is
    accepted."""
    example = os.path.join(SRC, "server", "systemd", "shahidi.conf.example")
    text = open(example).read()
    help_text = subprocess.run([SERVER, "--help"], capture_output=True, text=True).stdout
    flags = set(re.findall(r"^  --([a-z0-9-]+)", help_text, re.M)) - {"config", "version"}
    keys = set(re.findall(r"^(?:#\s?)?([a-z0-9-]+) =", text, re.M))
    assert flags - keys == set(), f"missing from the example: {flags - keys}"
    assert keys - flags == set(), f"not flags: {keys - flags}"
    # uncommented, each default line is accepted as it stands
    with tempfile.TemporaryDirectory(prefix="shahidi-conf-") as d:
        body = "\n".join(m for m in re.findall(r"^#\s?([a-z0-9-]+ =.*)$", text, re.M)
                         if not m.startswith(("data ", "listen ", "forms ")))
        conf = write(os.path.join(d, "c.conf"), body + "\n")
        with Server(args=["--config", conf]) as s:
            st, _, _ = request(s.port, "GET", "/healthz")
            assert st == 200, st


run_tests(globals())
