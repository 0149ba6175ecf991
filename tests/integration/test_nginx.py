"""The shipped nginx configuration (tools/nginx-shahidi.conf), run by
Debian's nginx with a self-signed certificate made here, in front of the
real server: a phone pushes and pulls over TLS; port 80 only redirects;
/metrics is not served to the internet; exports and JSON are compressed."""
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import zlib

from harness import (APPLIED, SRC, Device, Server, assign, batch, cli, deflate, edit, pb, push,
                     report, request, run_tests)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@contextlib.contextmanager
def nginx_in_front(s, listen_opts=""):
    """The shipped configuration run by a real nginx in front of server s,
    on two free loopback ports: (https port, plain port, TLS context, its
    directory)."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    assert os.path.exists(nginx), "nginx is installed by tools/dev setup"
    with tempfile.TemporaryDirectory(prefix="shahidi-nginx-") as d:
        cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                        "-keyout", key, "-out", cert], check=True, capture_output=True)
        port, port80 = free_port(), free_port()
        with open(os.path.join(SRC, "tools", "nginx-shahidi.conf")) as f:
            site = f.read()
        # Point the shipped blocks at this test's server, ports and files.
        site = site.replace("server 127.0.0.1:8080;", f"server 127.0.0.1:{s.port};")
        site = site.replace("listen 443 ssl http2;", f"listen 127.0.0.1:{port} ssl http2{listen_opts};")
        site = site.replace("listen [::]:443 ssl http2;", "")
        site = site.replace("listen 80;", f"listen 127.0.0.1:{port80};")
        site = site.replace("listen [::]:80;", "")
        site = site.replace("/etc/ssl/shahidi/fullchain.pem", cert)
        site = site.replace("/etc/ssl/shahidi/privkey.pem", key)
        site = site.replace("server_name shahidi.example.org;", "server_name localhost;")
        assert f"127.0.0.1:{s.port}" in site and cert in site and f"127.0.0.1:{port80}" in site
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 64; }}
http {{
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
{site}
}}
""")
        proc = subprocess.Popen([nginx, "-p", d, "-c", conf], stderr=subprocess.PIPE)
        try:
            ctx = ssl.create_default_context(cafile=cert)
            for p in (port, port80):
                for _ in range(100):
                    try:
                        socket.create_connection(("127.0.0.1", p), timeout=1).close()
                        break
                    except OSError:
                        time.sleep(0.05)
            yield port, port80, ctx, d
        finally:
            proc.send_signal(signal.SIGQUIT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def https(port, ctx, method, path, body=b"", headers=None):
    """One request over TLS: (status, headers (lower-case), raw body)."""
    c = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=30)
    c.request(method, path, body, headers or {})
    r = c.getresponse()
    data = r.read()
    h = {k.lower(): v for k, v in r.getheaders()}
    c.close()
    return r.status, h, data


def test_push_and_pull_through_tls():
    with Server() as s, nginx_in_front(s) as (port, port80, ctx, _):
        a, b = Device(s.data, "phone A"), Device(s.data, "phone B")
        rec = report(a)

        def call(dev, method, path, body=b""):
            st, h, data = https(port, ctx, method, path, body,
                                {"Authorization": f"Bearer {dev.token}",
                                 "Content-Encoding": "deflate"})
            return st, data

        st, data = call(a, "POST", "/v1/push", deflate(batch(a, [rec])))
        assert st == 200, (st, data)
        resp = pb.PushResponse()
        resp.ParseFromString(data)
        assert resp.results[0].status == APPLIED
        assign(s.data, rec.record_id, b)
        st, data = call(b, "POST", "/v1/push",
                        deflate(batch(b, [edit(b, rec.record_id, 140, "choice", "high",
                                               [(rec.hlc, a.id)])])))
        assert st == 200
        st, data = call(a, "GET", "/v1/pull?cursor=0")
        p = pb.PullResponse()
        p.ParseFromString(data)
        assert st == 200 and len(p.changes) == 1 and p.changes[0].device == b.id
        # plain HTTP to the TLS port is refused by nginx, not passed on
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"400" in raw.recv(200)
        raw.close()


def test_port_80_redirects_metrics_hidden_exports_compressed():
    with Server() as s, nginx_in_front(s) as (port, port80, ctx, _):
        admin = Device(s.data, "admin", role="admin")
        phone = Device(s.data, "phone")
        assert push(s.port, phone, batch(phone, [report(phone) for _ in range(50)]))[0] == 200
        auth = {"Authorization": f"Bearer {admin.token}"}
        # port 80: a redirect to https, whatever the path; nothing proxied
        for method, path in [("GET", "/"), ("GET", "/v1/status?x=1"), ("GET", "/metrics"),
                             ("POST", "/v1/push")]:
            st, h, body = request(port80, method, path, headers={**auth, "Host": "localhost"})
            assert st == 301 and h["location"] == f"https://localhost{path}", (path, st, h)
            assert b"shahidi" not in body.lower() and b"{" not in body, body
        # /metrics is not served through nginx, however it is spelt, even
        # with a token that may scrape; straight to the server it is
        _, out, _ = cli("device", "enroll", "--data", s.data, "--name", "prom", "--role", "metrics")
        mtok = re.search(r"^token +(\S+)$", out, re.M).group(1)
        for tok in (admin.token, mtok):
            for path in ["/metrics", "/metrics?x=1", "//metrics", "/%6Detrics", "/./metrics",
                         "/v1/../metrics"]:
                st, h, body = https(port, ctx, "GET", path, headers={"Authorization": f"Bearer {tok}"})
                assert st in (403, 404) and b"shahidi_" not in body, (path, st, body[:200])
                if path in ("/metrics", "/metrics?x=1", "//metrics", "/%6Detrics"):
                    assert st == 403, (path, st)
            st, h, body = request(s.port, "GET", "/metrics", headers={"Authorization": f"Bearer {tok}"})
            assert st == 200 and b"shahidi_build_info" in body
        # exports and the office's JSON arrive compressed when asked for
        gz = {**auth, "Accept-Encoding": "gzip"}
        _, _, plain_csv = request(s.port, "GET", "/v1/export?format=csv", headers=auth)
        for fmt in ("csv", "ndjson"):
            st, h, body = https(port, ctx, "GET", f"/v1/export?format={fmt}", headers=gz)
            assert st == 200 and h.get("content-encoding") == "gzip", (fmt, st, h)
            text = zlib.decompress(body, 31)
            assert len(body) < len(text) / 2, (fmt, len(body), len(text))
            if fmt == "csv":
                assert text == plain_csv
                assert h["content-disposition"].startswith("attachment; filename="), h
            else:
                assert len(text.splitlines()) == 50
        st, h, body = https(port, ctx, "GET", "/v1/status", headers=gz)
        assert st == 200 and h.get("content-encoding") == "gzip", h
        assert json.loads(zlib.decompress(body, 31))["devices"]
        # and not when not asked for
        st, h, body = https(port, ctx, "GET", "/v1/export?format=csv", headers=auth)
        assert st == 200 and "content-encoding" not in h and body == plain_csv


def test_exports_never_spill_to_nginx_temp_files():
    """A client that reads an export slowly: nginx holds what it cannot
    pass on in memory, a few buffers, and waits; it writes none of it to
    its temporary files, where survivors' records would be left on disk."""
    # a small send buffer towards the client, as a 2G phone's small window
    # makes in effect
    with Server() as s, nginx_in_front(s, " sndbuf=16k") as (port, port80, ctx, d):
        admin = Device(s.data, "admin", role="admin")
        phone = Device(s.data, "phone")
        t0 = time.time()
        for _ in range(4):
            assert push(s.port, phone, batch(phone, [report(phone) for _ in range(500)]))[0] == 200
        print(f"   pushed in {time.time() - t0:.1f}s")
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting
        sock.settimeout(30)
        sock.connect(("127.0.0.1", port))
        raw = ctx.wrap_socket(sock, server_hostname="localhost")
        try:
            raw.sendall((f"GET /v1/export?format=ndjson&include_sensitive=1 HTTP/1.1\r\n"
                         f"Host: localhost\r\nAuthorization: Bearer {admin.token}\r\n"
                         "Connection: close\r\n\r\n").encode())
            got = raw.recv(1024)
            assert got.startswith(b"HTTP/1.1 200"), got
            time.sleep(2)  # the client reads nothing meanwhile
            total, t0 = len(got), time.time()
            while True:
                chunk = raw.recv(1 << 16)
                if not chunk:
                    break
                total += len(chunk)
            print(f"   {total} bytes read in {time.time() - t0:.1f}s")
            assert total > 1 << 20, total  # the export was bigger than nginx's buffers
        finally:
            raw.close()
        with open(os.path.join(d, "error.log")) as f:
            log = f.read()
        # nginx says when it spills an answer (the file itself it unlinks
        # at once: looking for it in the directory finds nothing)
        assert "temporary file" not in log, log[-2000:]


if __name__ == "__main__":
    run_tests(globals())
