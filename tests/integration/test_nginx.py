"""The shipped nginx configuration (tools/nginx-shahidi.conf), run by
Debian's nginx with a self-signed certificate made here, in front of the
real server: a phone pushes and pulls over TLS."""
import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time

from harness import (APPLIED, SRC, Device, Server, assign, batch, deflate, edit, pb, report,
                     run_tests)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_push_and_pull_through_tls():
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    assert os.path.exists(nginx), "nginx is installed by tools/dev setup"
    with Server() as s, tempfile.TemporaryDirectory(prefix="shahidi-nginx-") as d:
        cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                        "-keyout", key, "-out", cert], check=True, capture_output=True)
        port = free_port()
        with open(os.path.join(SRC, "tools", "nginx-shahidi.conf")) as f:
            site = f.read()
        # Point the shipped block at this test's server, port and files.
        site = site.replace("server 127.0.0.1:8080;", f"server 127.0.0.1:{s.port};")
        site = site.replace("listen 443 ssl http2;", f"listen 127.0.0.1:{port} ssl http2;")
        site = site.replace("listen [::]:443 ssl http2;", "")
        site = site.replace("/etc/ssl/shahidi/fullchain.pem", cert)
        site = site.replace("/etc/ssl/shahidi/privkey.pem", key)
        site = site.replace("server_name shahidi.example.org;", "server_name localhost;")
        assert f"127.0.0.1:{s.port}" in site and cert in site
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
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            a, b = Device(s.data, "phone A"), Device(s.data, "phone B")
            rec = report(a)

            def call(dev, method, path, body=b""):
                c = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=30)
                c.request(method, path, body, {"Authorization": f"Bearer {dev.token}",
                                               "Content-Encoding": "deflate"})
                r = c.getresponse()
                data = r.read()
                c.close()
                return r.status, data

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
        finally:
            proc.send_signal(signal.SIGQUIT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    run_tests(globals())
