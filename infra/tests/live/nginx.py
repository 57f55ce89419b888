#!/usr/bin/env python3
"""nginx for real, on loopback: Debian's nginx with the project's infra/nginx config, the TLS
certificate and htpasswd made by infra/scripts/gen-certs.sh, and one stand-in HTTP server per
UI upstream (each answers with what it received, and speaks the websocket upgrade).

  nginx.py

Rewritten in the CI copy, and only that: listen ports -> free loopback ports, upstream
`http://<service>:<port>` -> the stand-in's loopback address (so no resolver is needed), file
paths -> the temp dir. Asserts: every UI host routes to its upstream with Host and
X-Forwarded-* set; TLS verifies against the generated certificate for every name; basic auth on
Consul/Prometheus/Alertmanager (401 without/with wrong credentials) and none on the UIs that
have their own login; a 100 MiB upload passes and a larger one gets 413 without reaching the
upstream; websocket upgrades pass; plain HTTP redirects to HTTPS except /nginx-health; unknown
host names (and bare IPs) get 404 without reaching any upstream.
"""
import http.client
import http.server
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, Procs, Report, free_port, wait_port  # noqa: E402

ADMIN_USER, ADMIN_PASSWORD = "ci-admin", "ci-admin-password"
DOMAIN = "localhost"
PROTECTED = {"consul", "prometheus", "alertmanager"}
MIB = 1024 * 1024


class Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    service = "?"
    hits = []

    def answer(self):
        n = int(self.headers.get("Content-Length", 0))
        left = n
        while left > 0:
            chunk = self.rfile.read(min(left, MIB))
            if not chunk:
                break
            left -= len(chunk)
        Upstream.hits.append(self.service)
        if self.headers.get("Upgrade", "").lower() == "websocket":
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.end_headers()
            self.close_connection = True
            return
        body = json.dumps({
            "service": self.service, "method": self.command, "path": self.path,
            "host": self.headers.get("Host"), "proto": self.headers.get("X-Forwarded-Proto"),
            "xff": self.headers.get("X-Forwarded-For"), "body": n - left,
            "auth": self.headers.get("Authorization"),
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = answer

    def log_message(self, *args):
        pass


def stand_in(service):
    handler = type(f"Upstream_{service}", (Upstream,), {"service": service})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def request(port, host, path="/", method="GET", body=None, headers=None, tls=True, ctx=None,
            length=None):
    """One request; returns (status, headers, body bytes)."""
    if tls:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=60, context=ctx)
        # SNI and certificate check for `host`, TCP to loopback.
        conn._tunnel_host = None
        conn.host = "127.0.0.1"
        sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        conn.sock = ctx.wrap_socket(sock, server_hostname=host)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    h = {"Host": host}
    h.update(headers or {})
    if length is not None:
        conn.putrequest(method, path, skip_host=True)
        for k, v in h.items():
            conn.putheader(k, v)
        conn.putheader("Content-Length", str(length))
        conn.endheaders()
        try:
            sent = 0
            block = b"\0" * MIB
            while sent < length:
                conn.send(block[: min(MIB, length - sent)])
                sent += MIB
        except (BrokenPipeError, ConnectionResetError):
            pass  # nginx refused the body early; its answer is still readable
    else:
        conn.request(method, path, body=body, headers=h)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, dict(r.getheaders()), data


def main():
    report = Report("nginx")
    tmp = tempfile.mkdtemp(prefix="mindora-nginx-")
    os.chmod(tmp, 0o755)  # nginx workers (nobody) read htpasswd and write body buffers here
    procs = Procs(tmp)
    servers = {}
    try:
        # --- config copy: the project's files, ports and paths moved
        shutil.copytree(os.path.join(ROOT, "infra/nginx"), os.path.join(tmp, "nginx"))
        conf_dir = os.path.join(tmp, "nginx")
        certs = os.path.join(tmp, "mindora")
        http_port, https_port = free_port(), free_port()
        env = dict(os.environ, DOMAIN=DOMAIN, ADMIN_USER=ADMIN_USER, ADMIN_PASSWORD=ADMIN_PASSWORD,
                   NGINX_HTTPS_PORT=str(https_port))
        subprocess.run(["sh", os.path.join(ROOT, "infra/scripts/gen-certs.sh"), certs], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        os.chmod(certs, 0o755)
        main_conf = open(os.path.join(conf_dir, "nginx.conf")).read()
        main_conf = main_conf.replace("/etc/nginx/conf.d/", conf_dir + "/conf.d/")
        main_conf = main_conf.replace("/var/run/nginx.pid", os.path.join(tmp, "nginx.pid"))
        main_conf = main_conf.replace("access_log /dev/stdout;", f"access_log {tmp}/access.log;")
        main_conf = re.sub(r"^\s*resolver(_timeout)? .*$", "", main_conf, flags=re.M)
        temp = "".join(f"    {k}_temp_path {tmp}/{k};\n" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        main_conf = main_conf.replace("http {\n", "http {\n" + temp, 1)
        with open(os.path.join(conf_dir, "nginx.conf"), "w") as f:
            f.write(main_conf)
        site_path = os.path.join(conf_dir, "conf.d", "mindora.conf")
        site = open(site_path).read()
        site = site.replace("/etc/nginx/mindora/", certs + "/")
        site = re.sub(r"listen 80\b", f"listen 127.0.0.1:{http_port}", site)
        site = re.sub(r"listen 443\b", f"listen 127.0.0.1:{https_port}", site)
        upstreams = re.findall(r"set \$upstream http://([a-z]+):(\d+);", site)
        for service, port in upstreams:
            servers[service] = stand_in(service)
            site = site.replace(f"http://{service}:{port};",
                                f"http://127.0.0.1:{servers[service].server_address[1]};")
        with open(site_path, "w") as f:
            f.write(site)
        ngx = procs.start("nginx", ["nginx", "-p", tmp + "/", "-c", os.path.join(conf_dir, "nginx.conf"),
                                    "-e", os.path.join(tmp, "error.log"), "-g", "daemon off;"])
        wait_port(https_port, 20, "nginx", ngx)
        report.check("nginx starts with the project's config", True,
                     f"{len(upstreams)} upstreams: {', '.join(s for s, _ in upstreams)}")
        ctx = ssl.create_default_context(cafile=os.path.join(certs, "certs", "fullchain.pem"))
        import base64
        good = "Basic " + base64.b64encode(f"{ADMIN_USER}:{ADMIN_PASSWORD}".encode()).decode()
        bad = "Basic " + base64.b64encode(f"{ADMIN_USER}:wrong".encode()).decode()
        # --- routes, TLS, auth
        for service, _ in upstreams:
            host = f"{service}.{DOMAIN}"
            hdr = {"Authorization": good} if service in PROTECTED else {}
            st, _, body = request(https_port, host, "/some/path?q=1", headers=hdr, ctx=ctx)
            info = json.loads(body) if st == 200 else {}
            report.check(f"https://{host}/ -> {service} (TLS verified, Host and X-Forwarded-Proto kept)",
                         st == 200 and info.get("service") == service and info.get("host") == host
                         and info.get("proto") == "https" and info.get("path") == "/some/path?q=1"
                         and info.get("xff") == "127.0.0.1",
                         f"status {st} {info}")
            if service in PROTECTED:
                st1, h1, _ = request(https_port, host, ctx=ctx)
                st2, _, _ = request(https_port, host, headers={"Authorization": bad}, ctx=ctx)
                report.check(f"{host}: basic auth (401 without and with a wrong password)",
                             st1 == 401 and st2 == 401 and "Basic" in h1.get("WWW-Authenticate", ""),
                             f"{st1}, {st2}")
            else:
                st1, _, _ = request(https_port, host, ctx=ctx)
                report.check(f"{host}: no nginx auth (the UI has its own login)", st1 == 200, f"{st1}")
        # --- upload limit (client_max_body_size 100m = 100 MiB)
        Upstream.hits.clear()
        st, _, body = request(https_port, f"minio.{DOMAIN}", "/upload", method="PUT", ctx=ctx, length=100 * MIB)
        got = json.loads(body).get("body") if st == 200 else None
        report.check("a 100 MiB upload reaches the upstream whole", st == 200 and got == 100 * MIB, f"{st}, {got} bytes")
        Upstream.hits.clear()
        st, _, _ = request(https_port, f"minio.{DOMAIN}", "/upload", method="PUT", ctx=ctx, length=100 * MIB + 1)
        report.check("a 100 MiB + 1 byte upload gets 413, the upstream sees nothing", st == 413 and not Upstream.hits,
                     f"{st}, upstream hits {Upstream.hits}")
        # --- websocket upgrade (Grafana live)
        raw = ctx.wrap_socket(socket.create_connection(("127.0.0.1", https_port), timeout=10),
                              server_hostname=f"grafana.{DOMAIN}")
        raw.sendall(f"GET /api/live/ws HTTP/1.1\r\nHost: grafana.{DOMAIN}\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        line = raw.recv(200).split(b"\r\n", 1)[0]
        raw.close()
        report.check("websocket upgrade passes through (Upgrade/Connection forwarded)", b" 101 " in line + b" ",
                     line.decode(errors="replace"))
        # --- plain HTTP
        st, h, _ = request(http_port, f"grafana.{DOMAIN}", "/d/x?y=1", tls=False)
        want = f"https://grafana.{DOMAIN}:{https_port}/d/x?y=1"
        report.check("plain HTTP redirects to HTTPS on the published port (NGINX_HTTPS_PORT), same host and path",
                     st == 301 and h.get("Location") == want, f"{st} {h.get('Location')}")
        st, _, body = request(http_port, "anything", "/nginx-health", tls=False)
        report.check("/nginx-health answers on plain HTTP (container healthcheck)", st == 200 and body == b"ok\n", f"{st}")
        # --- unknown hosts
        Upstream.hits.clear()
        # (OpenSSL matches no wildcard right under a one-label name like `localhost`, so the
        # unknown names are requested without certificate verification.)
        st1, _, _ = request(https_port, f"unknown.{DOMAIN}", "/", ctx=ssl._create_unverified_context())
        st2, _, _ = request(https_port, "evil.example.com", "/admin", ctx=ssl._create_unverified_context())
        st3, _, _ = request(https_port, "127.0.0.1", "/", ctx=ssl._create_unverified_context())
        report.check("unknown host names and bare IPs get 404, no upstream reached",
                     (st1, st2, st3) == (404, 404, 404) and not Upstream.hits, f"{st1}, {st2}, {st3}; hits {Upstream.hits}")
        # ssl_protocols TLSv1.2 TLSv1.3: a TLS 1.2-only client (older browsers, curl builds) connects.
        v12 = ssl.create_default_context(cafile=os.path.join(certs, "certs", "fullchain.pem"))
        v12.maximum_version = ssl.TLSVersion.TLSv1_2
        st, _, _ = request(https_port, f"grafana.{DOMAIN}", "/", ctx=v12)
        report.check("a TLS 1.2-only client is served", st == 200, f"{st}")
    except Exception as e:  # noqa: BLE001 - report, then clean up
        report.check("run", False, f"{type(e).__name__}: {e}")
        for name in ("error.log", "nginx.log"):
            p = os.path.join(tmp, name)
            if os.path.exists(p):
                print(f"--- {name}\n" + "".join(open(p).readlines()[-20:]))
    finally:
        procs.stop_all()
        for s in servers.values():
            s.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"nginx: {report.passed} passed, {report.failed} failed")
    sys.exit(1 if report.failed else 0)


if __name__ == "__main__":
    main()
