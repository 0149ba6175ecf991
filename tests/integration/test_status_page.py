"""The status page (GET /) in headless Chromium against the real server with
real pushed data: phones in two counties push batches (some reporting
unsent changes, one with a rejected change, one resending a change), two
pairs of phones make conflicts, then the page is loaded with an admin's,
a county coordinator's, a phone's and a wrong token, and the numbers it
shows (elements with data-k, see the comment at the top of
server/status.html) must be those of GET /v1/status and /v1/conflicts.

Chromium (Debian package "chromium", installed by tools/dev) is run with
--dump-dom, each run in its own profile directory and process group, with a
deadline; only that group is killed if it overruns.
"""
import base64
import json
import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from html.parser import HTMLParser

from harness import (APPLIED, BUILD, DUPLICATE, REJECTED, Device, Server, assign, cli, edit, pb,
                     push, report, request, run_tests)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HOSTILE_APP = '<img src=x onerror="document.title=1">'
HOSTILE_A = "<b>Achieng</b> & co"
HOSTILE_B = "</span><script>document.title=2</script>"


def browse(url, timeout=60):
    """The DOM of url after its scripts ran, serialized by headless Chromium."""
    assert CHROMIUM, "chromium is not installed: run tools/dev setup (Debian package chromium)"
    with tempfile.TemporaryDirectory(prefix="shahidi-chromium-") as prof:
        env = dict(os.environ, HOME=prof, XDG_CONFIG_HOME=prof, XDG_CACHE_HOME=prof)
        cmd = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--disable-extensions", f"--user-data-dir={prof}",
               "--virtual-time-budget=10000", "--dump-dom", url]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                             start_new_session=True)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)   # the group this call started, nothing else
            p.communicate()
            raise AssertionError(f"chromium did not finish within {timeout}s")
        assert p.returncode == 0 and out, (p.returncode, err.decode(errors="replace")[-3000:])
        return out.decode()


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe
    (--remote-debugging-pipe: fd 3 in, fd 4 out, messages ended by NUL),
    for what --dump-dom cannot tell: layout at a given window size, and
    screenshots. Its own profile, its own process group, a deadline on
    every answer; close() kills only that group."""

    def __init__(self, timeout=60):
        assert CHROMIUM, "chromium is not installed: run tools/dev setup (Debian package chromium)"
        self.prof = tempfile.TemporaryDirectory(prefix="shahidi-chromium-")
        prof = self.prof.name
        to_r, self.to_w = os.pipe()
        self.from_r, from_w = os.pipe()

        def fds():
            os.dup2(to_r, 3)
            os.dup2(from_w, 4)
        env = dict(os.environ, HOME=prof, XDG_CONFIG_HOME=prof, XDG_CACHE_HOME=prof)
        cmd = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--disable-extensions", "--hide-scrollbars",
               "--force-color-profile=srgb", f"--user-data-dir={prof}",
               "--remote-debugging-pipe", "about:blank"]
        self.p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  env=env, start_new_session=True, preexec_fn=fds,
                                  pass_fds=(3, 4))  # kept after preexec_fn set them
        os.close(to_r)
        os.close(from_w)
        self.timeout, self.buf, self.next_id = timeout, b"", 0
        tid = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=tid, flatten=True)["sessionId"]
        self.call("Page.enable", session=True)
        self.call("Runtime.enable", session=True)

    def call(self, method, session=False, **params):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self.to_w, json.dumps(msg).encode() + b"\0")
        deadline = time.time() + self.timeout
        while True:
            while b"\0" in self.buf:
                line, self.buf = self.buf.split(b"\0", 1)
                m = json.loads(line)
                if m.get("id") == self.next_id:
                    assert "error" not in m, (method, m["error"])
                    return m["result"]
            left = deadline - time.time()
            assert left > 0, f"chromium did not answer {method} within {self.timeout}s"
            r, _, _ = select.select([self.from_r], [], [], left)
            if r:
                chunk = os.read(self.from_r, 1 << 20)
                assert chunk, "chromium closed its pipe"
                self.buf += chunk

    def eval(self, expr):
        r = self.call("Runtime.evaluate", session=True, expression=expr, returnByValue=True,
                      awaitPromise=True)
        assert "exceptionDetails" not in r, r["exceptionDetails"]
        return r["result"].get("value")

    def open(self, url, width, height, mobile=False, ready="document.body.dataset.state === 'ready'"):
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=mobile)
        self.call("Page.navigate", session=True, url="about:blank")  # a fresh page, not a hash change
        self.call("Page.navigate", session=True, url=url)
        deadline = time.time() + self.timeout
        while not self.eval(f"!!(document.body && ({ready}))"):
            assert time.time() < deadline, f"{url} not ready: {self.eval('document.body.dataset.state')}"
            time.sleep(0.1)

    def screenshot(self, path):
        r = self.call("Page.captureScreenshot", session=True, format="png", captureBeyondViewport=False)
        with open(path, "wb") as f:
            f.write(base64.b64decode(r["data"]))

    def close(self):
        try:
            os.killpg(self.p.pid, signal.SIGKILL)   # the group this object started, nothing else
        except ProcessLookupError:
            pass
        self.p.wait(timeout=30)
        os.close(self.to_w)
        os.close(self.from_r)
        self.prof.cleanup()


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


class Dom(HTMLParser):
    """Reads a dumped DOM: every data-k element as (data-v, text), the
    body's attributes, elements by id, and a count of tags."""

    def __init__(self, html):
        super().__init__(convert_charrefs=True)
        self.k, self.ids, self.body, self.tags = {}, {}, {}, Counter()
        self.dup, self.times = [], []
        self.stack = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags[tag] += 1
        if tag == "body":
            self.body = a
        if tag == "time":
            self.times.append(a)
        if tag not in VOID:
            self.stack.append((tag, a, []))
        elif "id" in a:
            self.ids[a["id"]] = (a, "")

    def handle_endtag(self, tag):
        while self.stack:
            t, a, buf = self.stack.pop()
            text = "".join(buf)
            if "data-k" in a:
                if a["data-k"] in self.k:
                    self.dup.append(a["data-k"])
                self.k[a["data-k"]] = (a.get("data-v"), " ".join(text.split()), a)
            if "id" in a:
                self.ids[a["id"]] = (a, " ".join(text.split()))
            if self.stack:
                self.stack[-1][2].append(text)
            if t == tag:
                break

    def handle_data(self, data):
        if self.stack:
            self.stack[-1][2].append(data)

    def num(self, key):
        """The count shown for key (its text, thousands separators removed)."""
        assert key in self.k, f"{key} is not on the page"
        v, text, _ = self.k[key]
        return int(text.replace(",", ""))

    def v(self, key):
        assert key in self.k, f"{key} is not on the page"
        return self.k[key][0]

    def text(self, key):
        assert key in self.k, f"{key} is not on the page"
        return self.k[key][1]


def jraw(v):
    """A JSON value as the page writes it in data-v."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return ",".join(map(jraw, v))
    return str(v)


def get_json(port, path, dev):
    st, h, b = request(port, "GET", path, headers={"Authorization": f"Bearer {dev.token}"})
    assert st == 200, (st, b)
    return json.loads(b)


def pbatch(dev, changes, unsent=0, app="field 2.3.1"):
    """A PushBatch reporting `unsent` changes still on the phone."""
    b = pb.PushBatch(device=dev.id, batch_seq=dev.next_batch, app_version=app, unsent=unsent,
                     sent_hlc=dev.hlc())
    dev.next_batch += 1
    b.changes.extend(changes)
    return b.SerializeToString()


def pushed(s, dev, changes, expect, **kw):
    st, r = push(s.port, dev, pbatch(dev, changes, **kw))
    assert st == 200, r
    assert [x.status for x in r.results] == expect, r
    return r


def setup(s):
    """Five phones in two counties, an admin and a 042 coordinator; real
    batches; a conflict in each county. Returns the devices by name."""
    n1, n2, n3 = (Device(s.data, f"Nairobi phone {i}", county="047") for i in (1, 2, 3))
    k1, k2 = (Device(s.data, f"Kisumu phone {i}", county="042") for i in (1, 2))
    admin = Device(s.data, "office admin", county="", role="admin")
    coord = Device(s.data, "Kisumu coordinator", county="042", role="coordinator")

    # 047: n1 sends 3 then 2 reports, n2 one, n3 never syncs.
    rec = report(n1, "047")
    pushed(s, n1, [rec, report(n1, "047"), report(n1, "047")], [APPLIED] * 3, unsent=5)
    pushed(s, n1, [report(n1, "047"), report(n1, "047")], [APPLIED] * 2, unsent=2)
    pushed(s, n2, [report(n2, "047")], [APPLIED], unsent=7)
    # Both edit the risk level having seen only the report: a conflict.
    seen = [(rec.hlc, n1.id)]
    pushed(s, n1, [edit(n1, rec.record_id, 140, "choice", "high", seen)], [APPLIED], unsent=1)
    assign(s.data, rec.record_id, n2)
    pushed(s, n2, [edit(n2, rec.record_id, 140, "choice", "urgent", seen)], [APPLIED], unsent=7)

    # 042: k1 two reports and a bad one, with a hostile app version; k2 one
    # report, then the same change again (a duplicate).
    krec = report(k1, "042")
    bad = report(k1, "042")
    bad.fields[0].value.choice = "not_a_status"
    pushed(s, k1, [krec, report(k1, "042"), bad], [APPLIED, APPLIED, REJECTED], unsent=3,
           app=HOSTILE_APP)
    k2rep = report(k2, "042")
    pushed(s, k2, [k2rep], [APPLIED], unsent=0)
    pushed(s, k2, [k2rep], [DUPLICATE], unsent=0)
    # Both set the caseworker (free text: hostile) having seen the report.
    seen = [(krec.hlc, k1.id)]
    pushed(s, k1, [edit(k1, krec.record_id, 142, "text", HOSTILE_A, seen)], [APPLIED], unsent=3,
           app=HOSTILE_APP)
    assign(s.data, krec.record_id, k2)
    pushed(s, k2, [edit(k2, krec.record_id, 142, "text", HOSTILE_B, seen)], [APPLIED])
    return dict(n1=n1, n2=n2, n3=n3, k1=k1, k2=k2, admin=admin, coord=coord, rec=rec, krec=krec)


def check_page(dom, st, cf):
    """Every figure of the status JSON st and conflicts JSON cf is on the
    page, with the same value."""
    assert dom.body.get("data-state") == "ready", (dom.body, dom.ids.get("message"))
    assert not dom.dup, f"data-k used twice: {dom.dup}"
    sv = st["server"]
    for k in ["records", "deleted", "open_conflicts", "log_entries"]:
        if k in sv:
            assert dom.num(f"server.{k}") == sv[k], (k, dom.k.get(f"server.{k}"), sv[k])
            assert dom.v(f"server.{k}") == jraw(sv[k])
        else:
            assert f"server.{k}" not in dom.k, k
    for k in ["store_bytes", "map_bytes", "map_used_bytes", "map_use"]:
        if k in sv:
            assert float(dom.v(f"server.{k}")) == sv[k], k
        else:
            assert f"server.{k}" not in dom.k, k
    assert dom.v("scope") == jraw(st["scope"])
    # the page asked after the test did (ISO 8601 UTC strings sort by time)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z", dom.v("generated")), dom.v("generated")
    assert dom.v("generated") >= st["generated"], (dom.v("generated"), st["generated"])
    for r in sv["records_by_form_and_county"]:
        p = f"form.{r['form_id']}.{r['county'] or 'none'}."
        assert dom.num(p + "records") == r["records"] and dom.num(p + "deleted") == r["deleted"]

    counts = ["devices", "records", "open_conflicts", "batches", "changes_applied",
              "duplicates", "rejected", "unsent", "waiting_to_pull"]
    shown = {k.split(".")[1] for k in dom.k if k.startswith("county.")}
    assert shown == {c["county"] for c in st["counties"]}, shown
    for c in st["counties"]:
        p = f"county.{c['county']}."
        for k in counts:
            assert dom.num(p + k) == c[k], (p + k, dom.k[p + k], c[k])
        assert dom.text(p + "name") == c["name"]
        assert dom.v(p + "last_push") == jraw(c["last_push"])
        assert dom.v(p + "silent_devices") == jraw(c["silent_devices"])

    counts = ["unsent", "batches", "changes_applied", "duplicates", "rejected",
              "waiting_to_pull", "open_conflicts"]
    shown = {k.split(".")[1] for k in dom.k if k.startswith("device.")}
    assert shown == {d["id"] for d in st["devices"]}, shown
    for d in st["devices"]:
        p = f"device.{d['id']}."
        for k in counts:
            assert dom.num(p + k) == d[k], (p + k, dom.k[p + k], d[k])
        for k in ["name", "app_version", "last_rejection"]:
            assert dom.v(p + k) == d[k], (p + k, dom.k[p + k], d[k])
            if d[k]:
                assert dom.text(p + k) == d[k], (p + k, dom.k[p + k], d[k])
        for k in ["id", "county", "role", "revoked", "silent", "last_push", "last_pull",
                  "enrolled"]:
            assert dom.v(p + k) == jraw(d[k]), (p + k, dom.k[p + k], d[k])
        # days_silent grows between the test's request and the page's
        ahead = float(dom.v(p + "days_silent")) - d["days_silent"]
        assert 0 <= ahead < 60 / 86400, (p, ahead)
        for k in ["last_push", "last_pull"]:
            shown = dom.text(p + k)
            assert shown == "never" if d[k] is None else re.fullmatch(
                r"just now|\d+ (min|h|d) ago", shown), (p + k, shown, d[k])
            # the absolute time is in the title of a <time datetime=...>
            assert d[k] is None or any(t.get("datetime") == d[k] and "UTC" in t.get("title", "")
                                       for t in dom.times), (p + k, d[k])

    assert dom.num("conflicts.open_conflicts") == cf["open_conflicts"] == len(cf["records"])
    for r in cf["records"]:
        p = f"conflict.{r['record_id']}."
        assert dom.v(p + "county") == r["county"]
        assert dom.num(p + "open_conflicts") == r["open_conflicts"]
        for c in r["conflicts"]:
            # labels, as the CLI and the CSV show them; the codes in data-v
            assert dom.text(p + f"field.{c['field']}") == c["label"]
            assert dom.v(p + f"field.{c['field']}") == str(c["number"])
            for i, v in enumerate(c["values"]):
                q = f"{p}{c['field']}.{i}."
                assert dom.v(q + "value") == v["value"] and dom.text(q + "value") == v["text"]
                assert dom.v(q + "device") == v["device"] and v["device"] in dom.text(q + "device")
                assert dom.v(q + "stamp") == v["stamp"]
    # Server data never became markup: the page itself has no img, and
    # the hostile texts are text.
    assert dom.tags["img"] == 0 and dom.tags["script"] == 1, dom.tags


def test_page_is_served_self_contained():
    with Server() as s:
        st, h, body = request(s.port, "GET", "/")
        assert st == 200 and h["content-type"].startswith("text/html"), (st, h)
        csp = h["content-security-policy"]
        assert "default-src 'none'" in csp and "connect-src 'self'" in csp, csp
        page = body.decode()
        # Nothing from elsewhere: no URL with a scheme, no external script or style.
        assert "http:" not in page and "https:" not in page and "//" not in page.split("<script>")[0]
        script = page.split("<script>", 1)[1]
        for bad in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                    "localStorage", "new Function"]:
            assert bad not in script, bad
        # Without a token it asks for one.
        dom = Dom(browse(s.url + "/"))
        assert dom.body.get("data-state") == "need-token", dom.body
        assert dom.ids["token"][0].get("type") == "password"
        assert "server.records" not in dom.k


def test_status_page_shows_the_json():
    with Server() as s:
        d = setup(s)
        admin, coord = d["admin"], d["coord"]

        st = get_json(s.port, "/v1/status", admin)
        cf = get_json(s.port, "/v1/conflicts", admin)
        # What the test pushed is what the JSON holds (the page is then
        # compared with the JSON, figure by figure).
        dev = {x["id"]: x for x in st["devices"]}
        n1, n2, n3, k1, k2 = (dev[d[k].hex] for k in ["n1", "n2", "n3", "k1", "k2"])
        assert (n1["batches"], n1["changes_applied"], n1["unsent"]) == (3, 6, 1)
        assert (n2["batches"], n2["changes_applied"], n2["unsent"]) == (2, 2, 7)
        assert n3["batches"] == 0 and n3["last_push"] is None
        assert (k1["changes_applied"], k1["rejected"], k1["unsent"]) == (3, 1, 3)
        assert k1["app_version"] == HOSTILE_APP and k1["last_rejection"]
        assert (k2["duplicates"], k2["changes_applied"]) == (1, 2)
        assert n1["open_conflicts"] == n2["open_conflicts"] == 1
        cty = {c["county"]: c for c in st["counties"]}
        assert set(cty) == {"042", "047"}
        assert (cty["047"]["devices"], cty["047"]["records"], cty["047"]["unsent"]) == (3, 6, 8)
        assert (cty["042"]["devices"], cty["042"]["records"], cty["042"]["rejected"]) == (2, 3, 1)
        assert st["server"]["records"] == 9 and st["server"]["open_conflicts"] == 2
        assert cf["open_conflicts"] == 2

        # The admin sees everything, and the page shows the JSON's figures.
        dom = Dom(browse(f"{s.url}/#token={admin.token}"))
        check_page(dom, st, cf)
        assert "SILENT" not in dom.text(f"device.{d['n3'].hex}.silent")
        assert dom.text(f"device.{d['k1'].hex}.app_version") == HOSTILE_APP
        fields = {v for k, (v, _, _) in dom.k.items() if ".field." in k}
        assert fields == {"140", "142"}, fields
        by_county = {r["county"]: r["record_id"] for r in cf["records"]}
        assert set(by_county) == {"042", "047"}, by_county
        for rid in by_county.values():
            assert dom.text(f"conflict.{rid}.record_id") == rid
        values = {dom.text(k) for k in dom.k if k.endswith(".value")}
        assert {"High", "Urgent", HOSTILE_A, HOSTILE_B} <= values, values

        # A coordinator limited to 042 sees 042 only: nothing of 047 is in
        # the DOM, not even a device id.
        cst = get_json(s.port, "/v1/status", coord)
        ccf = get_json(s.port, "/v1/conflicts", coord)
        assert cst["scope"] == ["042"] and "log_entries" not in cst["server"]
        html = browse(f"{s.url}/#token={coord.token}")
        dom = Dom(html)
        check_page(dom, cst, ccf)
        assert {k.split(".")[1] for k in dom.k if k.startswith("county.")} == {"042"}
        assert dom.v("scope") == "042" and "042" in dom.text("scope")
        for k in ["n1", "n2", "n3"]:
            assert d[k].hex not in html, k
        assert d["k1"].hex in html and d["k2"].hex in html
        assert by_county["042"] in html and by_county["047"] not in html
        assert "Nairobi" not in html and "server.log_entries" not in dom.k

        # A phone's token: the role refusal. A wrong token: refused.
        dom = Dom(browse(f"{s.url}/#token={d['k1'].token}"))
        assert dom.body.get("data-state") == "forbidden", dom.body
        assert "coordinator or admin needed" in dom.ids["message"][1], dom.ids["message"]
        assert not any(k.startswith("device.") for k in dom.k)
        dom = Dom(browse(f"{s.url}/#token=shd_{'A' * 43}"))
        assert dom.body.get("data-state") == "unauthorized", dom.body
        assert "token refused" in dom.ids["message"][1].lower(), dom.ids["message"]

        # Fragments are never sent: no token in the server's log.
        log = s.logtext()
        assert "route=/ status=200" in log
        for t in [admin.token, coord.token, d["k1"].token, "token="]:
            assert t not in log
        assert s.stop() == 0


def attention(d):
    """The page's rule for a device needing attention."""
    return not d["revoked"] and bool(d["silent"] or d["unsent"] > 0 or d["rejected"] > 0 or
                                     d["open_conflicts"] > 0 or d["waiting_to_pull"] > 0)


LAYOUT = """(() => {
  const vw = innerWidth, out = {vw, vh: innerHeight,
    docWidth: document.documentElement.scrollWidth, tables: {}};
  for (const id of ['t-devices', 't-counties']) {
    const t = document.getElementById(id), box = t.closest('.scroll');
    out.tables[id] = {scroll: box.scrollWidth, client: box.clientWidth,
      headers: Array.from(t.tHead.rows[0].cells).map(c => {
        const r = c.getBoundingClientRect();
        return {text: c.textContent, left: r.left, right: r.right, shown: r.width > 0};
      })};
  }
  out.attention = Array.from(document.querySelectorAll('#t-devices tr.attention'))
    .map(tr => ({id: tr.dataset.device, top: tr.getBoundingClientRect().top + scrollY}));
  const dev = document.getElementById('s-devices').getBoundingClientRect();
  out.devicesTop = dev.top + scrollY;
  return out;
})()"""


def test_layout_at_desktop_and_phone_widths():
    """47 counties with phones: at 1366 px every column of the device and
    county tables is on screen without scrolling sideways; on a 390 px
    phone the devices needing attention start within the first two
    screens. Screenshots of both go to the build directory."""
    with Server() as s:
        admin = Device(s.data, "office admin", county="", role="admin")
        phones = []
        for i in range(1, 48):
            code = f"{i:03d}"
            d = Device(s.data, f"Wanjirũ Kamau-Njoroge {code}", county=code)
            phones.append(d)
            changes = [report(d, code)]
            if i % 9 == 0:
                bad = report(d, code)
                bad.fields[0].value.choice = "not_a_status"
                changes.append(bad)
            pushed(s, d, changes, [APPLIED] + [REJECTED] * (len(changes) - 1),
                   unsent=3 if i % 7 == 0 else 0, app="field 2.3.1 (build 2026-11-20)")
        # a revoked phone: counted nowhere as a phone, shown as revoked
        gone = Device(s.data, "Lost phone", county="047")
        pushed(s, gone, [report(gone, "047")], [APPLIED])
        cli("device", "revoke", "--data", s.data, gone.hex)
        # a conflict on a choice field: labels, as the CLI and CSV show them
        a, b = phones[41], Device(s.data, "Kisumu phone 2", county="042")
        rec = report(a, "042")
        pushed(s, a, [rec], [APPLIED])
        seen = [(rec.hlc, a.id)]
        pushed(s, a, [edit(a, rec.record_id, 140, "choice", "high", seen)], [APPLIED])
        assign(s.data, rec.record_id, b)
        pushed(s, b, [edit(b, rec.record_id, 140, "choice", "urgent", seen)], [APPLIED])

        st = get_json(s.port, "/v1/status", admin)
        cf = get_json(s.port, "/v1/conflicts", admin)
        assert len(st["counties"]) == 47
        want = {d["id"] for d in st["devices"] if attention(d)}
        assert len(want) >= 8, want

        shots = os.path.join(BUILD, "status-page")
        os.makedirs(shots, exist_ok=True)
        br = Chromium()
        try:
            url = f"{s.url}/#token={admin.token}"
            br.open(url, 1366, 768)
            desk = br.eval(LAYOUT)
            br.eval("document.getElementById('s-devices').scrollIntoView()")
            br.screenshot(os.path.join(shots, "desktop-1366-devices.png"))
            br.eval("scrollTo(0, 0)")
            br.screenshot(os.path.join(shots, "desktop-1366.png"))
            dom = Dom(br.eval("document.documentElement.outerHTML"))
            br.open(url, 390, 844, mobile=True)
            phone = br.eval(LAYOUT)
            br.screenshot(os.path.join(shots, "phone-390.png"))
            br.call("Emulation.setDeviceMetricsOverride", session=True, width=390, height=844 * 2,
                    deviceScaleFactor=1, mobile=True)
            br.screenshot(os.path.join(shots, "phone-390-two-screens.png"))
        finally:
            br.close()
        print(f"   screenshots in {shots}; desktop: page {desk['docWidth']} px wide, "
              f"devices table {desk['tables']['t-devices']['scroll']} of "
              f"{desk['tables']['t-devices']['client']} px; phone: devices section at "
              f"{phone['devicesTop']:.0f} px, first device needing attention at "
              f"{min((x['top'] for x in phone['attention']), default=-1):.0f} px (screen {phone['vh']} px)")

        # desktop: nothing to scroll sideways, every column header on screen
        assert desk["docWidth"] <= desk["vw"], desk["docWidth"]
        for tid, t in desk["tables"].items():
            assert t["scroll"] <= t["client"] + 1, (tid, t["scroll"], t["client"])
            for hd in t["headers"]:
                assert hd["shown"] and 0 <= hd["left"] and hd["right"] <= desk["vw"], (tid, hd)
        # phone: no sideways scrolling either; the devices needing attention
        # are the ones the page marks, and the first is within two screens
        assert phone["docWidth"] <= phone["vw"], phone["docWidth"]
        assert {x["id"] for x in phone["attention"]} == want
        first = min(x["top"] for x in phone["attention"])
        assert first < 2 * phone["vh"], (first, phone["vh"])

        # the Phones tile and the county rows agree on the revoked phone
        check_page(dom, st, cf)
        assert dom.num("page.phones") == 48 == sum(c["devices"] for c in st["counties"])
        assert dom.v(f"device.{gone.hex}.revoked") == "true"
        rid = next(r["record_id"] for r in cf["records"])
        assert dom.text(f"conflict.{rid}.field.risk_level") == "Risk level"
        shown = {dom.text(f"conflict.{rid}.risk_level.{i}.value") for i in range(2)}
        assert shown == {"High", "Urgent"}, shown


def test_instance_conflicts_are_named():
    """A v3 record: a conflict on one perpetrator's institution and a
    removed act edited unseen. The page names the instance (group, the id
    cut to its first 8 and last 4 digits, the whole id in the tooltip) and
    the removal flag as its own kind."""
    import uuid
    from harness import uuid7, value
    with Server() as s:
        p1, p2 = Device(s.data, "phone 1"), Device(s.data, "phone 2")
        admin = Device(s.data, "office admin", county="", role="admin")
        rid, perp, act = uuid7(), uuid7(), uuid7()

        def change(dev, create=False):
            c = pb.Change(change_id=dev.next_change, record_id=rid, form_id="incident_report",
                          form_version=3, hlc=dev.hlc(), create=create)
            dev.next_change += 1
            return c
        c = change(p1, create=True)
        for f, kind, v in [(1, "choice", "submitted"), (10, "choice", "survivor"),
                           (11, "choice", "signed"), (12, "date", "2026-11-20"),
                           (13, "boolean", True), (51, "choice", "exact"), (53, "choice", "047")]:
            c.fields.add(field=f, value=value(kind, v))
        c.fields.add(field=220, value=value("choice", "kps"), instance=perp)
        c.fields.add(field=240, value=value("choice", "torture"), instance=act)
        pushed(s, p1, [c], [APPLIED])
        assign(s.data, rid, p2)
        made = (c.hlc, p1.id)
        e1, e2 = change(p1), change(p2)
        e1.fields.add(field=220, value=value("choice", "aps"), instance=perp).supersedes.add(
            hlc=made[0], device=made[1])
        e2.fields.add(field=220, value=value("choice", "dci"), instance=perp).supersedes.add(
            hlc=made[0], device=made[1])
        rm = e1.fields.add(field=0, value=value("boolean", True), instance=act)
        rm.seen.add(hlc=made[0], device=made[1])
        e2.fields.add(field=242, value=value("date", "2026-11-19"), instance=act)
        pushed(s, p1, [e1], [APPLIED])
        pushed(s, p2, [e2], [APPLIED])
        cf = get_json(s.port, "/v1/conflicts", admin)
        dom = Dom(browse(f"{s.url}/#token={admin.token}"))
        R, P, A = (str(uuid.UUID(bytes=x)) for x in (rid, perp, act))
        p = f"conflict.{R}."
        path = f"perpetrators[{P}].perpetrator_institution"
        assert dom.text(p + "field." + path) == "Perpetrators: Institution"
        assert dom.v(p + "field." + path) == "220"
        assert {dom.text(f"{p}{path}.{i}.value") for i in (0, 1)} == {
            "Administration Police Service", "DCI"}
        flag = f"{p}field.acts[{A}].removed_instance_edited"
        assert dom.v(flag) == "removed_instance_edited"
        assert dom.text(flag) == f"Acts {A[:8]}\u2026{A[-4:]}", dom.text(flag)
        assert dom.k[flag][2].get("title") == A
        assert dom.v(f"{p}acts[{A}].removed_instance_edited.device") == p1.hex
        html = browse(f"{s.url}/#token={admin.token}")
        assert f"perpetrators[{P[:8]}\u2026{P[-4:]}].perpetrator_institution (field 220)" in html
        kinds = sorted(c.get("kind", c["field"]) for r in cf["records"] for c in r["conflicts"])
        assert kinds == ["perpetrator_institution", "removed_instance_edited"], kinds


if __name__ == "__main__":
    run_tests(globals())
