#!/usr/bin/env python3
"""nginx for real, on loopback: Debian's nginx with the project's infra/nginx config, the TLS
certificate and htpasswd made by infra/scripts/gen-certs.sh, and one stand-in HTTP server per
UI upstream (each answers with what it received, and speaks the websocket upgrade).

  nginx.py

Rewritten in the CI copy, and only that: listen ports -> free loopback ports, upstream
`http://<service>:<port>` -> the stand-in's loopback address (so no resolver is needed), file
paths -> the temp dir. Asserts: every UI host routes to its upstream with Host and
X-Forwarded-* set; TLS verifies against the generated certificate for every name; every UI but the
task console (own login) demands the nginx login (401 without and with a wrong password; RabbitMQ's own login is the
one nginx checks and passes on, the others' credentials never reach the upstream); HSTS on
every HTTPS answer; a 100 MiB upload passes and a larger one gets 413 without reaching the
upstream; websocket upgrades pass; plain HTTP redirects the UI names to HTTPS; unknown
host names (`kibana.<domain>.evil.test`, `kibana.evil.test`), bare IPs and requests without a
Host get nothing (TLS handshake refused, or the connection closed without an answer) and reach
no upstream; the Prometheus/Alertmanager lifecycle endpoints are refused; NGINX_ALLOW_FROM
turns away an address outside the list; /nginx-health answers on the container-only port.
"""
import http.client
import http.server
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, Procs, Report, free_port, wait_port  # noqa: E402

ADMIN_USER, ADMIN_PASSWORD = "ci-admin", "ci-admin-password"
RABBIT_USER, RABBIT_PASSWORD = "ci-rabbit-ui", "ci-rabbit-ui-password"
DOMAIN = "localhost"
HSTS = "max-age=31536000; includeSubDomains"
# UIs with a login of their own (the task console): nginx asks for none in front of them.
OWN_LOGIN = {"console"}
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


def raw_exchange(port, data, sni=None, ctx=None):
    """Sends raw request bytes (TLS when sni is given); returns the answer bytes, or the
    name of what stopped it ("handshake refused", "closed")."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        if ctx is not None:
            try:
                sock = ctx.wrap_socket(sock, server_hostname=sni)
            except (ssl.SSLError, ConnectionResetError) as e:
                return f"handshake refused ({type(e).__name__})"
        sock.sendall(data)
        out = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                break
            if not chunk:
                break
            out += chunk
        return out or "closed"
    finally:
        sock.close()


def configure(tmp, certs, http_port, https_port, health_port, servers):
    """The project's config copied to tmp with ports, paths and upstreams moved."""
    shutil.copytree(os.path.join(ROOT, "infra/nginx"), os.path.join(tmp, "nginx"))
    conf_dir = os.path.join(tmp, "nginx")
    main_conf = open(os.path.join(conf_dir, "nginx.conf")).read()
    main_conf = main_conf.replace("/etc/nginx/conf.d/", conf_dir + "/conf.d/")
    main_conf = main_conf.replace("/var/run/nginx.pid", os.path.join(tmp, "nginx.pid"))
    main_conf = main_conf.replace("access_log /dev/stdout;", f"access_log {tmp}/access.log;")
    main_conf = re.sub(r"^\s*resolver(_timeout)? .*$", "", main_conf, flags=re.M)
    temp = "".join(f"    {k}_temp_path {tmp}/{k};\n" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    main_conf = main_conf.replace("http {\n", "http {\n" + temp, 1)
    with open(os.path.join(conf_dir, "nginx.conf"), "w") as f:
        f.write(main_conf)
    for fn in os.listdir(os.path.join(conf_dir, "snippets")):
        path = os.path.join(conf_dir, "snippets", fn)
        text = open(path).read().replace("/etc/nginx/mindora/", certs + "/")
        text = text.replace("/etc/nginx/snippets/", conf_dir + "/snippets/")
        with open(path, "w") as f:
            f.write(text)
    site_path = os.path.join(conf_dir, "conf.d", "mindora.conf")
    site = open(site_path).read()
    site = site.replace("/etc/nginx/mindora/", certs + "/")
    site = site.replace("/etc/nginx/snippets/", conf_dir + "/snippets/")
    site = re.sub(r"listen 80\b", f"listen 127.0.0.1:{http_port}", site)
    site = re.sub(r"listen 443\b", f"listen 127.0.0.1:{https_port}", site)
    site = site.replace("listen 127.0.0.1:8081;", f"listen 127.0.0.1:{health_port};")
    upstreams = re.findall(r"set \$upstream http://([a-z-]+):(\d+);", site)
    for service, port in upstreams:
        servers[service] = stand_in(service)
        site = site.replace(f"http://{service}:{port};",
                            f"http://127.0.0.1:{servers[service].server_address[1]};")
    with open(site_path, "w") as f:
        f.write(site)
    return conf_dir, upstreams


def main():
    report = Report("nginx")
    tmp = tempfile.mkdtemp(prefix="mindora-nginx-")
    os.chmod(tmp, 0o755)  # nginx workers (nobody) read htpasswd and write body buffers here
    procs = Procs(tmp)
    servers = {}
    try:
        certs = os.path.join(tmp, "mindora")
        http_port, https_port, health_port = free_port(), free_port(), free_port()
        env = dict(os.environ, DOMAIN=DOMAIN, ADMIN_USER=ADMIN_USER, ADMIN_PASSWORD=ADMIN_PASSWORD,
                   RABBITMQ_UI_USER=RABBIT_USER, RABBITMQ_UI_PASSWORD=RABBIT_PASSWORD,
                   NGINX_HTTPS_PORT=str(https_port), NGINX_ALLOW_FROM="")
        gen = ["sh", os.path.join(ROOT, "infra/scripts/gen-certs.sh"), certs]
        subprocess.run(gen, check=True, env=env, stdout=subprocess.DEVNULL)
        os.chmod(certs, 0o755)
        conf_dir, upstreams = configure(tmp, certs, http_port, https_port, health_port, servers)
        ngx = procs.start("nginx", ["nginx", "-p", tmp + "/", "-c", os.path.join(conf_dir, "nginx.conf"),
                                    "-e", os.path.join(tmp, "error.log"), "-g", "daemon off;"])
        wait_port(https_port, 20, "nginx", ngx)
        report.check("nginx starts with the project's config", True,
                     f"{len(upstreams)} upstreams: {', '.join(s for s, _ in upstreams)}")
        ctx = ssl.create_default_context(cafile=os.path.join(certs, "certs", "fullchain.pem"))
        import base64

        def basic(user, password):
            return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

        # --- routes, TLS, logins, HSTS
        for service, _ in upstreams:
            host = f"{service.split('-')[0]}.{DOMAIN}"
            if service in OWN_LOGIN:
                # No nginx login: the request reaches the upstream as it is, nginx's credentials
                # (were any sent) are not passed on, HSTS is set.
                Upstream.hits.clear()
                st, h, body = request(https_port, host, "/login?next=%2F", headers={"Authorization": basic(ADMIN_USER, ADMIN_PASSWORD)}, ctx=ctx)
                info = json.loads(body) if st == 200 else {}
                report.check(f"https://{host}/ -> {service} with no nginx login (its own login; TLS verified, "
                             "Host and X-Forwarded-Proto kept, no Authorization passed on, HSTS)",
                             st == 200 and info.get("service") == service and info.get("host") == host
                             and info.get("proto") == "https" and info.get("auth") is None
                             and h.get("Strict-Transport-Security") == HSTS,
                             f"status {st} {info}")
                continue
            login = basic(RABBIT_USER, RABBIT_PASSWORD) if service == "rabbitmq" else basic(ADMIN_USER, ADMIN_PASSWORD)
            Upstream.hits.clear()
            st, h, body = request(https_port, host, "/some/path?q=1", headers={"Authorization": login}, ctx=ctx)
            info = json.loads(body) if st == 200 else {}
            want_auth = login if service == "rabbitmq" else None
            report.check(f"https://{host}/ -> {service} (TLS verified, Host and X-Forwarded-Proto kept, "
                         f"{'its own login passed on' if want_auth else 'nginx login not passed on'}, HSTS)",
                         st == 200 and info.get("service") == service and info.get("host") == host
                         and info.get("proto") == "https" and info.get("path") == "/some/path?q=1"
                         and info.get("xff") == "127.0.0.1" and info.get("auth") == want_auth
                         and h.get("Strict-Transport-Security") == HSTS,
                         f"status {st} {info} hsts={h.get('Strict-Transport-Security')!r}")
            Upstream.hits.clear()
            st1, h1, _ = request(https_port, host, ctx=ctx)
            wrong = basic(RABBIT_USER if service == "rabbitmq" else ADMIN_USER, "wrong")
            st2, _, _ = request(https_port, host, headers={"Authorization": wrong}, ctx=ctx)
            # The nginx account is no RabbitMQ login, and the RabbitMQ one opens nothing else.
            other = basic(ADMIN_USER, ADMIN_PASSWORD) if service == "rabbitmq" else basic(RABBIT_USER, RABBIT_PASSWORD)
            st3, _, _ = request(https_port, host, headers={"Authorization": other}, ctx=ctx)
            report.check(f"{host}: login demanded (401 without, with a wrong password, with the other account; "
                         "upstream not reached; HSTS on the 401)",
                         (st1, st2, st3) == (401, 401, 401) and "Basic" in h1.get("WWW-Authenticate", "")
                         and not Upstream.hits and h1.get("Strict-Transport-Security") == HSTS,
                         f"{st1}, {st2}, {st3}; hits {Upstream.hits}")
        admin = {"Authorization": basic(ADMIN_USER, ADMIN_PASSWORD)}
        # --- Grafana's "Task console" links land on the console's host (issue 22)
        Upstream.hits.clear()
        st, h, _ = request(https_port, f"grafana.{DOMAIN}", "/go/console/jobs/abc-1", ctx=ctx, headers=admin)
        want = f"https://console.{DOMAIN}:{https_port}/jobs/abc-1"
        report.check("grafana.DOMAIN/go/console/... redirects to the console's host, the upstream sees nothing",
                     st == 302 and h.get("Location") == want and not Upstream.hits,
                     f"{st} {h.get('Location')!r} (want {want!r}); hits {Upstream.hits}")
        # --- upload limit (client_max_body_size 100m = 100 MiB)
        Upstream.hits.clear()
        st, _, body = request(https_port, f"grafana.{DOMAIN}", "/upload", method="PUT", ctx=ctx, length=100 * MIB,
                              headers=admin)
        got = json.loads(body).get("body") if st == 200 else None
        report.check("a 100 MiB upload reaches the upstream whole", st == 200 and got == 100 * MIB, f"{st}, {got} bytes")
        Upstream.hits.clear()
        st, _, _ = request(https_port, f"grafana.{DOMAIN}", "/upload", method="PUT", ctx=ctx, length=100 * MIB + 1,
                           headers=admin)
        report.check("a 100 MiB + 1 byte upload gets 413, the upstream sees nothing", st == 413 and not Upstream.hits,
                     f"{st}, upstream hits {Upstream.hits}")
        # --- lifecycle endpoints
        Upstream.hits.clear()
        codes = [request(https_port, f"{ui}.{DOMAIN}", path, method="POST", ctx=ctx, headers=admin)[0]
                 for ui in ("prometheus", "alertmanager") for path in ("/-/reload", "/-/quit")]
        report.check("Prometheus/Alertmanager /-/reload and /-/quit refused even with the login",
                     codes == [403] * 4 and not Upstream.hits, f"{codes}; hits {Upstream.hits}")
        # --- websocket upgrade (Grafana live)
        raw = ctx.wrap_socket(socket.create_connection(("127.0.0.1", https_port), timeout=10),
                              server_hostname=f"grafana.{DOMAIN}")
        raw.sendall(f"GET /api/live/ws HTTP/1.1\r\nHost: grafana.{DOMAIN}\r\nUpgrade: websocket\r\n"
                    f"Authorization: {admin['Authorization']}\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        line = raw.recv(200).split(b"\r\n", 1)[0]
        raw.close()
        report.check("websocket upgrade passes through (Upgrade/Connection forwarded)", b" 101 " in line + b" ",
                     line.decode(errors="replace"))
        # --- plain HTTP
        st, h, _ = request(http_port, f"grafana.{DOMAIN}", "/d/x?y=1", tls=False)
        want = f"https://grafana.{DOMAIN}:{https_port}/d/x?y=1"
        report.check("plain HTTP redirects a UI name to HTTPS on the published port (NGINX_HTTPS_PORT), same host and path",
                     st == 301 and h.get("Location") == want, f"{st} {h.get('Location')}")
        st, _, body = request(health_port, "anything", "/nginx-health", tls=False)
        report.check("/nginx-health answers on the container-only port (healthcheck)", st == 200 and body == b"ok\n", f"{st}")
        # --- unknown hosts get nothing
        Upstream.hits.clear()
        unverified = ssl._create_unverified_context()
        unknown = [f"kibana.{DOMAIN}.evil.test", "kibana.evil.test", "evil.example.com", "127.0.0.1"]
        got = {}
        for name in unknown:
            req = f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode()
            # SNI = the unknown name (no SNI for the IP, as clients send none for addresses)
            got[f"https sni+host {name}"] = raw_exchange(https_port, req, None if name[0].isdigit() else name, unverified)
            # a connection opened for a real UI name, then a request for the unknown one
            got[f"https host {name}"] = raw_exchange(https_port, req, f"grafana.{DOMAIN}", unverified)
            got[f"http host {name}"] = raw_exchange(http_port, req)
        no_host = b"GET / HTTP/1.0\r\n\r\n"
        got["https no SNI, no Host"] = raw_exchange(https_port, no_host, None, unverified)
        got["https no Host"] = raw_exchange(https_port, no_host, f"grafana.{DOMAIN}", unverified)
        got["http no Host"] = raw_exchange(http_port, no_host)
        answered = {k: v[:60] for k, v in got.items() if isinstance(v, bytes)}
        refused = sorted({v for v in got.values() if isinstance(v, str)})
        report.check("unknown Hosts (kibana.<domain>.evil.test, kibana.evil.test, another name, a bare IP) and no Host "
                     "get nothing on HTTP and HTTPS: handshake refused or connection closed unanswered; no upstream reached",
                     not answered and not Upstream.hits and len(got) == 3 * len(unknown) + 3,
                     f"answered {answered}; {refused}; hits {Upstream.hits}")
        # ssl_protocols TLSv1.2 TLSv1.3: a TLS 1.2-only client (older browsers, curl builds) connects.
        v12 = ssl.create_default_context(cafile=os.path.join(certs, "certs", "fullchain.pem"))
        v12.maximum_version = ssl.TLSVersion.TLSv1_2
        st, _, _ = request(https_port, f"grafana.{DOMAIN}", "/", ctx=v12, headers=admin)
        report.check("a TLS 1.2-only client is served", st == 200, f"{st}")
        # --- IP allowlist: only 10.0.0.0/8 may reach the UIs; loopback is turned away
        env["NGINX_ALLOW_FROM"] = "10.0.0.0/8,192.168.7.1"
        subprocess.run(gen, check=True, env=env, stdout=subprocess.DEVNULL)
        allow = open(os.path.join(certs, "allow.conf")).read()
        os.kill(ngx.pid, signal.SIGHUP)
        Upstream.hits.clear()
        st = None
        for _ in range(50):  # the reload takes effect when the new workers run
            st, _, _ = request(https_port, f"grafana.{DOMAIN}", "/", ctx=ctx, headers=admin)
            if st == 403:
                break
            time.sleep(0.1)
        report.check("NGINX_ALLOW_FROM: an address outside the list gets 403 with a valid login",
                     st == 403 and "deny all;" in allow, f"{st}; allow.conf {allow!r}")
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
    report.finish()


if __name__ == "__main__":
    main()
