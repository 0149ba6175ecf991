"""Enrolment by QR code, as ODK Collect's settings codes: `shahidi device
enroll --qr --url URL` draws the code in the terminal and writes it as PNG
and SVG (0600: they hold the token); an admin enrols a phone over HTTP
(POST /v1/devices/enrol with "url") and gets the code once, as SVG; the
status page's "Enrol a phone" form shows it. Every code is decoded with
zbarimg (Debian's zbar-tools), never trusted from our own encoder, and the
token read from it pushes a batch to the real server."""
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import urllib.parse

from harness import Device, Server, batch, cli, push, report, request, run_tests

ZBARIMG = shutil.which("zbarimg")


def zbar(path):
    """The text of the one QR code in the image at path, as zbarimg reads it."""
    assert ZBARIMG, "zbarimg is missing: tools/dev setup installs zbar-tools"
    p = subprocess.run([ZBARIMG, "--raw", "-q", "-Sdisable", "-Sqrcode.enable", path],
                       capture_output=True, timeout=60)
    assert p.returncode == 0, (p.returncode, p.stderr)
    lines = p.stdout.decode().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def pgm(matrix, path, scale=6):
    """A module matrix (rows of bools, True: dark) as a PGM image."""
    h, w = len(matrix) * scale, len(matrix[0]) * scale
    with open(path, "wb") as f:
        f.write(b"P5 %d %d 255\n" % (w, h))
        for row in matrix:
            line = bytes(0 if dark else 255 for dark in row for _ in range(scale))
            f.write(line * scale)


def text_matrix(out):
    """The modules of a code drawn in half blocks (ANSI colours stripped)."""
    out = re.sub(r"\x1b\[[0-9;]*m", "", out)
    top = {" ": False, "\u2584": False, "\u2580": True, "\u2588": True}
    bottom = {" ": False, "\u2584": True, "\u2580": False, "\u2588": True}
    lines = [ln for ln in out.splitlines() if ln and set(ln) <= set(top)]
    assert lines, out
    rows = []
    for ln in lines:
        rows.append([top[ch] for ch in ln])
        rows.append([bottom[ch] for ch in ln])
    return rows


def svg_matrix(svg):
    """The modules of our SVG: its viewBox, and a run of dark modules per
    'Mx yhNv1h-Nz' of its path."""
    side = int(re.search(r'viewBox="0 0 (\d+) \1"', svg).group(1))
    m = [[False] * side for _ in range(side)]
    d = re.search(r'<path fill="#000" d="([^"]*)"', svg).group(1)
    runs = re.findall(r"M(\d+) (\d+)h(\d+)v1h-\3z", d)
    assert "".join(f"M{x} {y}h{n}v1h-{n}z" for x, y, n in runs) == d, d[:200]
    for x, y, n in runs:
        for i in range(int(n)):
            m[int(y)][int(x) + i] = True
    return m


def payload(text):
    """The fields of a shahidi://enroll URI."""
    u = urllib.parse.urlsplit(text)
    assert (u.scheme, u.netloc, u.path) == ("shahidi", "enroll", ""), text
    q = urllib.parse.parse_qs(u.query, strict_parsing=True)
    assert all(len(v) == 1 for v in q.values()), q
    q = {k: v[0] for k, v in q.items()}
    assert set(q) == {"v", "url", "device", "token"} and q["v"] == "1", q
    return q


def phone_from(q):
    """A harness Device for the id and token read from a code."""
    d = Device.__new__(Device)
    d.id, d.hex, d.token = int(q["device"], 16), q["device"], q["token"]
    d.name, d.next_change, d.next_batch, d.clock = "from the code", 1, 1, 0
    return d


def devices(data):
    return json.loads(cli("device", "list", "--data", data, "--json")[1])


def test_cli_draws_and_writes_the_code():
    with Server() as s, tempfile.TemporaryDirectory() as d:
        png, svg = os.path.join(d, "phone.png"), os.path.join(d, "phone.svg")
        # an existing file, readable by all: overwritten, and made 0600
        with open(svg, "w") as f:
            f.write("old")
        os.chmod(svg, 0o644)
        url = f"http://127.0.0.1:{s.port}"
        _, out, err = cli("device", "enroll", "--data", s.data, "--name", "Kisumu phone 7",
                          "--county", "042", "--qr", "--url", url, "--qr-png", png,
                          "--qr-svg", svg)
        dev = re.search(r"^device ([0-9a-f]{16})$", out, re.M).group(1)
        tok = re.search(r"^token +(\S+)$", out, re.M).group(1)
        for path in (png, svg):
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, oct(os.stat(path).st_mode)
        with open(png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        from_png = zbar(png)
        q = payload(from_png)
        assert q == {"v": "1", "url": url, "device": dev, "token": tok}, q
        # the terminal's code and the SVG say the same
        with tempfile.NamedTemporaryFile(suffix=".pgm") as t:
            pgm(text_matrix(out), t.name)
            assert zbar(t.name) == from_png
        with open(svg) as f:
            svg_text = f.read()
        assert svg_text.startswith("<svg xmlns=")
        with tempfile.NamedTemporaryFile(suffix=".pgm") as t:
            pgm(svg_matrix(svg_text), t.name)
            assert zbar(t.name) == from_png
        # the phone that scans it syncs with what it read
        phone = phone_from(q)
        assert push(s.port, phone, batch(phone, [report(phone, county="042")]))[0] == 200
        assert tok not in err and "wrote " + png in err


def test_cli_code_in_a_terminal_is_black_on_white():
    """On a terminal (a pty here) each line sets black on white, so the
    code scans whatever the terminal's own colours."""
    import pty
    with Server() as s:
        master, slave = pty.openpty()
        try:
            p = subprocess.Popen([os.path.join(os.environ["SHAHIDI_BUILD"], "tools", "shahidi"),
                                  "device", "enroll", "--data", s.data, "--name", "tty phone",
                                  "--county", "047", "--qr", "--url", "https://shahidi.example.org"],
                                 stdout=slave, stderr=subprocess.PIPE)
            os.close(slave)
            slave = None
            out = b""
            while True:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
            assert p.wait(timeout=60) == 0, p.stderr.read()
        finally:
            os.close(master)
            if slave is not None:
                os.close(slave)
        text = out.decode().replace("\r\n", "\n")
        code_lines = [ln for ln in text.splitlines() if "\u2580" in ln or "\u2584" in ln]
        assert code_lines and all(ln.startswith("\x1b[30;107m") and ln.endswith("\x1b[0m")
                                  for ln in code_lines), code_lines[:2]
        with tempfile.NamedTemporaryFile(suffix=".pgm") as t:
            pgm(text_matrix(text), t.name)
            q = payload(zbar(t.name))
        assert q["url"] == "https://shahidi.example.org"


def test_cli_refusals_enrol_nothing():
    with Server() as s, tempfile.TemporaryDirectory() as d:
        before = devices(s.data)
        base = ["device", "enroll", "--data", s.data, "--name", "phone", "--county", "047"]
        cases = [
            (["--qr"], 2, "--qr needs --url"),
            (["--qr-png", os.path.join(d, "a.png")], 2, "--qr needs --url"),
            (["--qr-svg", os.path.join(d, "a.svg")], 2, "--qr needs --url"),
            (["--url", "https://x.example.org"], 2, "--url goes with --qr"),
            (["--qr", "--url", "ftp://x.example.org"], 2, "starts with https://"),
            (["--qr", "--url", "https://"], 2, "needs a host name"),
            (["--qr", "--url", "https://x.example.org/?a=1"], 2, "no query"),
            (["--qr", "--url", "https://user@x.example.org"], 2, "no query, fragment or user"),
            (["--qr", "--url", "https://x.example.org/" + "a" * 200], 2, "1 to 200 bytes"),
            (["--qr-png", os.path.join(d, "no", "such", "dir.png"), "--url", "https://x.org"], 1,
             "cannot write " + os.path.join(d, "no", "such", "dir.png")),
            (["--qr-svg", d, "--url", "https://x.org"], 1, "cannot write " + d),
        ]
        for extra, code, msg in cases:
            rc, out, err = cli(*base, *extra, check=False)
            assert rc == code and msg in err, (extra, rc, out, err)
            assert "token" not in out, out
        # a link planted at the path does not lead the token elsewhere
        target, link = os.path.join(d, "target"), os.path.join(d, "link.png")
        with open(target, "w") as f:
            f.write("keep")
        os.symlink(target, link)
        rc, out, err = cli(*base, "--url", "https://x.org", "--qr-png", link, check=False)
        assert rc == 1 and "cannot write " + link in err, (rc, err)
        with open(target) as f:
            assert f.read() == "keep"
        os.unlink(link)
        os.unlink(target)
        # a failure to write the second file leaves neither, and no device
        ok_png = os.path.join(d, "ok.png")
        rc, out, err = cli(*base, "--url", "https://x.org", "--qr-png", ok_png, "--qr-svg",
                           os.path.join(d, "missing", "x.svg"), check=False)
        assert rc == 1 and not os.path.exists(ok_png), (rc, err)
        # and an enrolment refused for its own reasons writes no file
        rc, out, err = cli("device", "enroll", "--data", s.data, "--name", "phone",
                           "--county", "099", "--url", "https://x.org", "--qr-png", ok_png,
                           check=False)
        assert rc == 2 and not os.path.exists(ok_png), (rc, err)
        assert devices(s.data) == before
        assert os.listdir(d) == [], os.listdir(d)


def post(port, path, token, obj):
    hdrs = {"Content-Type": "application/json"}
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    st, h, b = request(port, "POST", path, json.dumps(obj).encode(), hdrs)
    return st, h, json.loads(b)


def test_admin_enrols_a_phone_over_http():
    with Server() as s:
        admin = Device(s.data, "admin", role="admin")
        coord = Device(s.data, "coordinator", county="007", role="coordinator")
        phone = Device(s.data, "phone", county="007")
        _, out, _ = cli("device", "enroll", "--data", s.data, "--name", "prom", "--role", "metrics")
        metrics_tok = re.search(r"^token +(\S+)$", out, re.M).group(1)
        before = devices(s.data)
        want = {"name": "Garissa phone 2", "county": "007", "url": s.url}
        # refusals: nothing enrolled
        st, h, e = post(s.port, "/v1/devices/enrol", None, want)
        assert st == 401 and e["error"] == "unauthorized", e
        for tok in (coord.token, phone.token, metrics_tok):
            st, h, e = post(s.port, "/v1/devices/enrol", tok, want)
            assert st == 403 and e["error"] == "role_not_allowed", e
        for url, msg in [("ftp://x.org", "starts with https://"), ("https://x.org/?a=b", "no query"),
                         ("https://", "needs a host name"), (7, "url must be a string")]:
            st, h, e = post(s.port, "/v1/devices/enrol", admin.token, {**want, "url": url})
            assert st == 400 and e["error"] == "bad_request" and msg in e["message"], (url, e)
        st, h, e = post(s.port, "/v1/devices/enrol", admin.token, {**want, "county": "099"})
        assert st == 400 and e["error"] == "bad_request", e
        assert devices(s.data) == before
        # the admin's enrolment: the token once, with its code as SVG
        st, h, r = post(s.port, "/v1/devices/enrol", admin.token, want)
        assert st == 200, r
        assert set(r) == {"id", "token", "payload", "qr_svg"}, r.keys()
        assert h["cache-control"] == "no-store", h
        q = payload(r["payload"])
        assert q == {"v": "1", "url": s.url, "device": r["id"], "token": r["token"]}, q
        assert r["qr_svg"].startswith("<svg xmlns=")
        with tempfile.NamedTemporaryFile(suffix=".pgm") as t:
            pgm(svg_matrix(r["qr_svg"]), t.name)
            assert zbar(t.name) == r["payload"]
        # the code's token pushes, as the phone that scanned it will
        dev = phone_from(q)
        assert push(s.port, dev, batch(dev, [report(dev, county="007")]))[0] == 200
        # audited, without the token
        _, audit, _ = cli("audit", "--data", s.data)
        entries = [json.loads(ln) for ln in audit.splitlines() if ln.startswith("{")]
        mine = [e for e in entries if e.get("action") == "enrol" and e.get("device") == r["id"]]
        assert len(mine) == 1, audit
        assert mine[0]["actor"] == f"device:{admin.hex}" and mine[0]["qr"] is True, mine
        assert mine[0]["name"] == "Garissa phone 2" and mine[0]["county"] == "007", mine
        assert r["token"] not in audit
        # never again: no answer holds it, and enrolling again makes another
        _, _, body = request(s.port, "GET", "/v1/devices",
                             headers={"Authorization": f"Bearer {admin.token}"})
        listed = json.loads(body)["devices"]
        assert [d["name"] for d in listed if d["id"] == r["id"]] == ["Garissa phone 2"]
        assert r["token"].encode() not in body and b"qr_svg" not in body and b"payload" not in body
        st, h, r2 = post(s.port, "/v1/devices/enrol", admin.token, want)
        assert st == 200 and r2["id"] != r["id"] and r2["token"] != r["token"]
        # without a url: as before, no code
        st, h, r3 = post(s.port, "/v1/devices/enrol", admin.token, {"name": "x", "county": "007"})
        assert st == 200 and set(r3) == {"id", "token"}, r3
        log = s.logtext()
        for secret in (r["token"], r2["token"], r["payload"][:40]):
            assert secret not in log


def test_status_page_enrols_a_phone_and_shows_its_code_once():
    """An admin fills "Enrol a phone" on the status page (headless
    Chromium): the code is shown once, a screenshot of it decodes with
    zbarimg, its token pushes; "Done" removes the code and the token from
    the page. A coordinator never sees the form."""
    import time
    from test_status_page import Chromium
    from harness import BUILD
    with Server() as s:
        admin = Device(s.data, "office admin", county="", role="admin")
        coord = Device(s.data, "coordinator", county="007", role="coordinator")
        shots = os.path.join(BUILD, "status-page")
        os.makedirs(shots, exist_ok=True)
        br = Chromium()
        try:
            br.open(f"{s.url}/#token={coord.token}", 1366, 900)
            time.sleep(1)  # the admin check has had time to answer
            assert br.eval("document.getElementById('s-enrol').hidden") is True
            br.open(f"{s.url}/#token={admin.token}", 1366, 900,
                    ready="document.body.dataset.state === 'ready' && "
                          "!document.getElementById('s-enrol').hidden")
            assert br.eval("document.getElementById('enrol-url').value") == s.url
            # a refusal is shown, and nothing is enrolled
            n0 = len(devices(s.data))
            br.eval("""(function () {
                document.getElementById('enrol-name').value = 'Garissa phone 9';
                document.getElementById('enrol-county').value = '099';
                document.getElementById('enrol-submit').click(); })()""")
            deadline = time.time() + 30
            while not br.eval("document.getElementById('enrol-msg').textContent"):
                assert time.time() < deadline
                time.sleep(0.1)
            assert "county" in br.eval("document.getElementById('enrol-msg').textContent")
            assert br.eval("!!document.getElementById('enrol-qr')") is False
            assert len(devices(s.data)) == n0
            br.eval("""(function () {
                document.getElementById('enrol-county').value = '007';
                document.getElementById('enrol-submit').click(); })()""")
            while not br.eval("!!(document.getElementById('enrol-qr') && "
                              "document.getElementById('enrol-qr').complete)"):
                assert time.time() < deadline, br.eval("document.getElementById('enrol-msg').textContent")
                time.sleep(0.1)
            shown_id = br.eval("document.getElementById('enrol-result').dataset.device")
            br.eval("document.getElementById('enrol-qr').scrollIntoView({block: 'center'})")
            time.sleep(0.3)
            shot = os.path.join(shots, "enrol-desktop.png")
            br.screenshot(shot)
            q = payload(zbar(shot))
            assert q["device"] == shown_id and q["url"] == s.url, q
            assert [d["name"] for d in devices(s.data) if d["id"] == shown_id] == ["Garissa phone 9"]
            dev = phone_from(q)
            assert push(s.port, dev, batch(dev, [report(dev, county="007")]))[0] == 200
            # the token is on the page for a person who must type it in ...
            assert br.eval("document.getElementById('enrol-token').textContent") == q["token"]
            # ... until Done: then the code and the token are gone
            br.eval("document.getElementById('enrol-done').click()")
            html = br.eval("document.documentElement.outerHTML")
            assert q["token"] not in html and 'id="enrol-qr"' not in html and 'src="data:image' not in html
            assert br.eval("!!document.getElementById('enrol-qr')") is False
            # on a phone's width too, the form fits
            br.open(f"{s.url}/#token={admin.token}", 390, 844, mobile=True,
                    ready="document.body.dataset.state === 'ready' && "
                          "!document.getElementById('s-enrol').hidden")
            w = br.eval("document.getElementById('s-enrol').getBoundingClientRect().right")
            assert w <= 390, w
            br.eval("document.getElementById('s-enrol').scrollIntoView()")
            time.sleep(0.3)
            br.screenshot(os.path.join(shots, "enrol-phone.png"))
        finally:
            br.close()


if __name__ == "__main__":
    run_tests(globals())
