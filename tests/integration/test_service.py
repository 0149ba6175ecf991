"""Shahidi as a service: `meson install` into a DESTDIR puts the binaries,
their man pages, the systemd unit, its sysusers.d file and the example
settings in place; the installed server runs from there; the unit passes
`systemd-analyze verify`; the man pages render without a warning; and the
server tells systemd READY=1 only once it answers, STOPPING=1 when it
drains, and pings the watchdog (sd_notify, read here from a datagram socket
as systemd would)."""
import os
import re
import select
import signal
import socket
import subprocess
import tempfile
import time

from harness import BUILD, SERVER, SRC, pull, Device, Server, batch, push, report, request, run_tests


def notify_socket(d):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = os.path.join(d, "notify")
    s.bind(path)
    s.settimeout(20)
    return s, path


def messages(sock, until, timeout=20):
    """Datagrams until one holds the line `until`: [(time, set of lines)]."""
    got = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = sock.recv(4096).decode()
        got.append((time.time(), set(m.split("\n"))))
        if until in got[-1][1]:
            return got
    raise AssertionError(f"no {until} in {got}")


def test_sd_notify_ready_after_listen_then_stopping():
    with tempfile.TemporaryDirectory(prefix="shahidi-svc-") as d:
        sock, path = notify_socket(d)
        env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="400000")
        env.pop("WATCHDOG_PID", None)
        s = Server(env=env)
        # Before start: a server that fails (a bad store) never says READY.
        os.makedirs(s.data)
        with open(os.path.join(s.data, "data.mdb"), "wb") as f:
            f.write(b"not a store" * 100)
        p = subprocess.run([SERVER, "--data", s.data, "--listen", "127.0.0.1:0"], env=env,
                           capture_output=True, timeout=30)
        assert p.returncode == 1, p
        sock.settimeout(0.5)
        try:
            stray = sock.recv(4096)
            assert b"READY=1" not in stray, stray
        except socket.timeout:
            pass
        sock.settimeout(20)
        os.remove(os.path.join(s.data, "data.mdb"))
        log = open(os.path.join(d, "server.log"), "wb")
        proc = subprocess.Popen([SERVER, "--data", s.data, "--listen", "127.0.0.1:0"], env=env,
                                stdout=subprocess.PIPE, stderr=log)
        try:
            got = messages(sock, "READY=1")
            # READY=1 comes after the socket listens: the "listening on" line,
            # printed then, is already there, and /healthz answers at once
            ready_now, _, _ = select.select([proc.stdout], [], [], 0)
            assert ready_now, "READY=1 before the server listened"
            line = proc.stdout.readline().decode()
            port = int(re.search(r":(\d+)$", line.strip()).group(1))
            st, _, _ = request(port, "GET", "/healthz")
            assert st == 200, st
            # first what it is doing (a format upgrade takes a while), then READY
            assert any(f"STATUS=opening the store in {s.data}" in m for _, m in got), got
            ready = [m for _, m in got if "READY=1" in m][0]
            assert any(x.startswith("STATUS=serving ") for x in ready), ready
            # the watchdog: pinged at half of WATCHDOG_USEC from the event loop
            t0 = time.time()
            messages(sock, "WATCHDOG=1")
            messages(sock, "WATCHDOG=1")
            assert time.time() - t0 < 2, "watchdog pings are too far apart"
            proc.send_signal(signal.SIGTERM)
            messages(sock, "STOPPING=1")
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            log.close()
        s.tmp.cleanup()
        sock.close()


def syscall_sets():
    """systemd's named system call sets ({"@name": {calls and @sets}}), from
    the systemd-analyze on this machine: the filter the unit gets."""
    out = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True, text=True,
                         check=True).stdout
    sets, cur = {}, None
    for ln in out.splitlines():
        if ln.startswith("@"):
            cur = sets.setdefault(ln.strip(), set())
        elif cur is not None and ln.strip() and not ln.strip().startswith("#"):
            cur.add(ln.strip())
    return sets


def expand(sets, name, seen=None):
    seen = set() if seen is None else seen
    out = set()
    for x in sets[name]:
        if x.startswith("@"):
            if x not in seen:
                seen.add(x)
                out |= expand(sets, x, seen)
        else:
            out.add(x)
    return out


def test_the_server_stays_inside_its_sandbox():
    """PID 1 may not be systemd here, so the unit cannot be started; instead
    the server runs under strace through a session (phones push with the
    map growing, pull, the office reads /metrics, it stops) and every system
    call it makes must pass the unit's SystemCallFilter=, every socket be of
    RestrictAddressFamilies=, no map be writable and executable
    (MemoryDenyWriteExecute=), and every file it opens for writing lie in
    its data directory (ProtectSystem=strict, StateDirectory=)."""
    unit = open(os.path.join(SRC, "server", "systemd", "shahidi.service.in")).read()
    sets = syscall_sets()
    allowed = set()
    for ln in re.findall(r"^SystemCallFilter=(.*)$", unit, re.M):
        names = ln.lstrip("~").split()
        calls = set().union(*(expand(sets, n) if n.startswith("@") else {n} for n in names))
        allowed = allowed - calls if ln.startswith("~") else allowed | calls
    families = set(re.search(r"^RestrictAddressFamilies=(.*)$", unit, re.M).group(1).split())
    with tempfile.TemporaryDirectory(prefix="shahidi-sandbox-") as d:
        trace = os.path.join(d, "trace")
        data = os.path.join(d, "data")
        log = open(os.path.join(d, "server.log"), "wb")
        devs = [Device(data, f"P{i}") for i in range(3)]
        # LeakSanitizer cannot run under ptrace (the sanitizer build): off here
        nsock, npath = notify_socket(d)
        env = dict(os.environ, NOTIFY_SOCKET=npath)
        env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") + ":detect_leaks=0").lstrip(":")
        proc = subprocess.Popen(["strace", "-f", "-qq", "-o", trace, SERVER, "--data", data,
                                 "--listen", "127.0.0.1:0", "--map-size", "256K", "--quiet"],
                                stdout=subprocess.PIPE, stderr=log, env=env)
        try:
            line = proc.stdout.readline().decode()
            port = int(re.search(r":(\d+)$", line.strip()).group(1))
            for dev in devs:
                for _ in range(4):
                    st, _ = push(port, dev, batch(dev, [report(dev, narrative="n" * 2000)
                                                        for _ in range(20)]))
                    assert st == 200, st
                pull(port, dev)
            st, _, _ = request(port, "GET", "/healthz")
            assert st == 200
            # the server is strace's child: SIGTERM to it, and strace ends with it
            with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
                server_pid = int(f.read().split()[0])
            os.kill(server_pid, signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, open(os.path.join(d, "server.log")).read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            log.close()
            nsock.close()
        calls, bad_fam, wx, writes = set(), set(), [], set()
        data = os.path.realpath(data)
        with open(trace) as f:
            for ln in f:
                m = re.match(r"^\d+ +(?:<\.\.\. )?(\w+)[( ]", ln)
                if not m:
                    continue
                name = m.group(1)
                calls.add(name)
                fam = re.search(r"\bsocket\((AF_\w+)", ln)  # not on a "resumed" line
                if fam and fam.group(1) not in families:
                    bad_fam.add(fam.group(1))
                if name in ("mmap", "mprotect") and "PROT_WRITE" in ln and "PROT_EXEC" in ln:
                    wx.append(ln)
                if name in ("openat", "open", "creat", "mkdir", "mkdirat", "rename", "unlink"):
                    m2 = re.search(r'"([^"]*)"', ln)
                    wants_write = name != "openat" and name != "open" or \
                        re.search(r"O_WRONLY|O_RDWR|O_CREAT", ln)
                    if m2 and wants_write and " = -1 " not in ln:
                        path = os.path.realpath(m2.group(1))
                        if not (path + "/").startswith(data + "/") and path != data:
                            writes.add(path)
        # READY=1 goes out after listen(), in the order the kernel saw them
        with open(trace) as f:
            order = [("listen" if re.search(r"\blisten\(", ln) else "ready")
                     for ln in f if re.search(r"\blisten\(", ln) or
                     ("sendmsg(" in ln and "READY=1" in ln)]
        assert order[:2] == ["listen", "ready"], order
        calls.discard("execve")  # strace's exec of the server, before the filter applies
        assert calls, "no system calls traced"
        denied = calls - allowed
        assert not denied, f"calls the unit's SystemCallFilter= would refuse: {sorted(denied)}"
        assert not bad_fam, f"socket families outside RestrictAddressFamilies=: {bad_fam}"
        assert not wx, f"writable and executable maps: {wx}"
        assert not writes, f"files written outside the data directory: {sorted(writes)}"
        print(f"   {len(calls)} distinct system calls, all allowed by the unit's filter")


def render_man(page):
    env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8")
    p = subprocess.run(["man", "--warnings", "-l", page], capture_output=True, text=True,
                       env=env, timeout=60)
    assert p.returncode == 0 and not p.stderr.strip(), (page, p.returncode, p.stderr)
    return p.stdout


def test_install_into_destdir_and_run_the_installed_server():
    with tempfile.TemporaryDirectory(prefix="shahidi-destdir-") as dest:
        p = subprocess.run(["meson", "install", "-C", BUILD, "--no-rebuild", "--quiet",
                            "--destdir", dest], capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stdout + p.stderr
        files = {os.path.relpath(os.path.join(r, f), dest)
                 for r, _, fs in os.walk(dest) for f in fs}
        prefix = next(f for f in files if f.endswith("bin/shahidi-server"))[:-len(
            "bin/shahidi-server")].rstrip("/")
        want = {"bin/shahidi-server", "bin/shahidi", "lib/systemd/system/shahidi.service",
                "lib/sysusers.d/shahidi.conf", "share/man/man8/shahidi-server.8",
                "share/man/man1/shahidi.1"}
        missing = {w for w in want if f"{prefix}/{w}" not in files}
        assert not missing, (missing, files)
        conf = [f for f in files if f.endswith("shahidi/shahidi.conf")]
        example = [f for f in files if f.endswith("shahidi/shahidi.conf.example")]
        assert len(conf) == 1 and len(example) == 1, files
        # a man page for each installed binary
        bins = {os.path.basename(f) for f in files if f.startswith(f"{prefix}/bin/")}
        pages = {os.path.basename(f).rsplit(".", 1)[0] for f in files
                 if f.startswith(f"{prefix}/share/man/")}
        assert bins == pages == {"shahidi", "shahidi-server"}, (bins, pages)
        # only what a service needs: no benchmark tools, no test objects
        assert not [f for f in files if "loadgen" in f or "bench" in f or "iolog" in f], files
        server = os.path.join(dest, prefix, "bin/shahidi-server")
        shahidi = os.path.join(dest, prefix, "bin/shahidi")

        # the man pages: one per binary, each option and command in it
        page = render_man(os.path.join(dest, prefix, "share/man/man8/shahidi-server.8"))
        assert "--max-body SIZE" in page and "--config FILE" in page, page[:2000]
        page = render_man(os.path.join(dest, prefix, "share/man/man1/shahidi.1"))
        for c in ("backup", "restore", "device enroll", "conflicts resolve"):
            assert re.search(rf"^   {c}$", page, re.M), (c, page[:3000])

        # the installed binaries, on a temporary store on loopback; the
        # installed settings say data = /var/lib/shahidi: the flag wins
        data = os.path.join(dest, "data")
        out = subprocess.run([shahidi, "device", "enroll", "--data", data, "--name", "A",
                              "--county", "047"], capture_output=True, text=True, check=True)
        env = dict(os.environ)
        proc = subprocess.Popen([server, "--config", os.path.join(dest, conf[0]),
                                 "--data", data, "--listen", "127.0.0.1:0"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        try:
            line = proc.stdout.readline().decode()
            port = int(re.search(r":(\d+)$", line.strip()).group(1))
            dev = Device.__new__(Device)
            dev.id = int(re.search(r"^device ([0-9a-f]{16})$", out.stdout, re.M).group(1), 16)
            dev.hex = f"{dev.id:016x}"
            dev.token = re.search(r"^token +(\S+)$", out.stdout, re.M).group(1)
            dev.next_change, dev.next_batch, dev.clock = 1, 1, 0
            rec = report(dev)
            body = batch(dev, [rec])
            st, r = push(port, dev, body)
            assert st == 200 and len(r.results) == 1, (st, r)
            st, r2 = push(port, dev, body)  # sent again: the same answer, stored once
            assert st == 200 and r2.results == r.results, (st, r2)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert b"configuration from " in err, err
        v = subprocess.run([shahidi, "verify", "--data", data], capture_output=True, text=True)
        assert v.returncode == 0 and "hash chain intact" in v.stdout, v.stdout + v.stderr
        assert "records: 1," in v.stdout, v.stdout

        # the sysusers.d file makes a system user without a login
        os.makedirs(os.path.join(dest, "etc"), exist_ok=True)
        v = subprocess.run(["systemd-sysusers", f"--root={dest}",
                            os.path.join(dest, prefix, "lib/sysusers.d/shahidi.conf")],
                           capture_output=True, text=True, timeout=60)
        assert v.returncode == 0, v.stdout + v.stderr
        user = [ln for ln in open(os.path.join(dest, "etc/passwd")) if ln.startswith("shahidi:")]
        assert len(user) == 1, user
        _, _, uid, _, _, home, shell = user[0].strip().split(":")
        assert int(uid) < 1000 and home == "/var/lib/shahidi" and "nologin" in shell, user

        # systemd-analyze verify on the installed unit, its ExecStart
        # pointed into the DESTDIR; man finds its Documentation= pages there
        unit = open(os.path.join(dest, prefix, "lib/systemd/system/shahidi.service")).read()
        assert re.search(rf"^ExecStart={re.escape('/' + prefix)}/bin/shahidi-server$", unit,
                         re.M), unit
        for key in ("Type=notify", "User=shahidi", "StateDirectory=shahidi",
                    "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                    "PrivateDevices=yes", "NoNewPrivileges=yes", "CapabilityBoundingSet=\n",
                    "SystemCallFilter=@system-service", "MemoryDenyWriteExecute=yes",
                    "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "WatchdogSec="):
            assert key in unit, key
        udir = os.path.join(dest, "unit")
        os.makedirs(udir)
        with open(os.path.join(udir, "shahidi.service"), "w") as f:
            f.write(unit.replace("ExecStart=/", f"ExecStart={dest}/", 1))
        env = dict(os.environ, MANPATH=os.path.join(dest, prefix, "share/man"))
        v = subprocess.run(["systemd-analyze", "verify", os.path.join(udir, "shahidi.service")],
                           capture_output=True, text=True, env=env, timeout=60)
        assert v.returncode == 0 and not v.stderr.strip(), v.stdout + v.stderr
        # and its sandbox as systemd rates it (lower is better; 10 is none)
        v = subprocess.run(["systemd-analyze", "security", "--offline=true",
                            os.path.join(udir, "shahidi.service")],
                           capture_output=True, text=True, env=env, timeout=60)
        m = re.search(r"Overall exposure level for shahidi.service: ([0-9.]+)", v.stdout)
        assert m and float(m.group(1)) <= 2.0, v.stdout[-3000:]
        print(f"   systemd-analyze security: exposure {m.group(1)}")


run_tests(globals())
