#!/usr/bin/env python3
"""The stack's init scripts for real (bash/sh + curl, as in their containers) against local
stand-ins of the servers that cannot be installed here: Elasticsearch (es-init), Qdrant
(qdrant-init), Kibana (kibana-init) and Grafana (grafana-init: the named Editor login). Each stand-in checks every request against the real
API's wire format (method, path, auth header, JSON body shape) and answers like the server.
Each script runs twice: the second run must succeed and create nothing (idempotence).

  init_scripts.py
"""
import base64
import http.server
import json
import os
import re
import subprocess
import sys
import threading
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, Report, env_example  # noqa: E402

APPS = "demo,billing_eu"
# Elasticsearch security privileges (reference: security-privileges, 8.x)
ES_CLUSTER = {"all", "monitor", "manage", "manage_index_templates", "manage_ilm", "read_ilm", "read_slm",
              "read_pipeline", "manage_pipeline", "manage_security", "monitor_snapshot", "create_snapshot"}
ES_INDEX = {"all", "read", "write", "index", "create", "create_doc", "delete", "create_index", "delete_index",
            "view_index_metadata", "monitor", "manage", "maintenance", "auto_configure", "manage_ilm"}


class Stub(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state = None  # set per server

    def _body(self):
        n = int(self.headers.get("Content-Length", 0))
        raw = self.rfile.read(n) if n else b""
        return raw

    def _send(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def handle_any(self):
        raw = self._body()
        st = self.state
        path = urllib.parse.unquote(self.path)
        st["requests"].append((self.command, path))
        body = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                st["violations"].append(f"{self.command} {path}: body is not JSON: {raw[:120]!r}")
                return self._send(400, {"error": "not json"})
            if not self.headers.get("Content-Type", "").startswith("application/json"):
                st["violations"].append(f"{self.command} {path}: Content-Type {self.headers.get('Content-Type')!r}")
        status, answer = st["route"](st, self.command, path, body, self.headers)
        self._send(status, answer)

    do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = handle_any

    def log_message(self, *args):
        pass


def basic(headers, user, password):
    want = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    return headers.get("Authorization") == want


def es_route(st, method, path, body, headers):
    if not basic(headers, "elastic", st["env"]["ELASTIC_PASSWORD"]):
        st["violations"].append(f"{method} {path}: not authenticated as elastic")
        return 401, {"error": "auth"}
    p = path.split("?")[0]
    if method == "GET" and p == "/_cluster/health":
        return 200, {"status": "green"}
    if method == "GET" and p.startswith("/_alias/"):
        name = p.split("/")[2]
        return (200, {}) if name in st["aliases"] else (404, {"error": "alias missing"})
    if "documents" in p:
        st["violations"].append(f"{method} {p}: es-init must leave the worker's documents objects alone")
    if method == "POST" and p == "/_security/user/kibana_system/_password":
        return (200, {}) if body and body.get("password") else (400, {"error": "password"})
    m = re.fullmatch(r"/_security/role/([a-z_0-9]+)", p)
    if method == "PUT" and m:
        for c in body.get("cluster", []):
            if c not in ES_CLUSTER:
                st["violations"].append(f"role {m.group(1)}: unknown cluster privilege {c}")
        for e in body.get("indices", []):
            if not e.get("names"):
                st["violations"].append(f"role {m.group(1)}: indices entry without names")
            for pr in e.get("privileges", []):
                if pr not in ES_INDEX:
                    st["violations"].append(f"role {m.group(1)}: unknown index privilege {pr}")
        st["roles"][m.group(1)] = body
        return 200, {"role": {"created": True}}
    m = re.fullmatch(r"/_security/user/([a-z_0-9]+)", p)
    if method == "PUT" and m:
        for r in body.get("roles", []):
            if r not in st["roles"]:
                st["violations"].append(f"user {m.group(1)}: role {r} not created before")
        if not body.get("password"):
            st["violations"].append(f"user {m.group(1)}: no password")
        return 200, {"created": True}
    if method == "PUT" and p.startswith("/_ilm/policy/"):
        if "phases" not in body.get("policy", {}):
            st["violations"].append(f"{p}: no phases")
        st["ilm"].add(p.rsplit("/", 1)[1])
        return 200, {"acknowledged": True}
    if method == "PUT" and p.startswith("/_index_template/"):
        name = p.rsplit("/", 1)[1]
        pol = body.get("template", {}).get("settings", {}).get("index.lifecycle.name")
        if pol and pol not in st["ilm"]:
            st["violations"].append(f"template {name}: ILM policy {pol} not created before")
        if not body.get("index_patterns"):
            st["violations"].append(f"template {name}: no index_patterns")
        st["templates"][name] = body
        return 200, {"acknowledged": True}
    if method == "PUT" and p.startswith("/_snapshot/"):
        return 200, {"acknowledged": True}
    m = re.fullmatch(r"/<([a-z0-9_]+-logs)-\{now/d\}-000001>", p)
    if method == "PUT" and m:
        aliases = (body or {}).get("aliases", {})
        if aliases.get(m.group(1), {}).get("is_write_index") is not True:
            st["violations"].append(f"{p}: first index without its write alias")
        st["aliases"].add(m.group(1))
        st["created"].append(p)
        return 200, {"acknowledged": True}
    st["violations"].append(f"unexpected {method} {p}")
    return 400, {"error": "unexpected"}


def qdrant_route(st, method, path, body, headers):
    if headers.get("api-key") != st["env"]["QDRANT_API_KEY"]:
        st["violations"].append(f"{method} {path}: wrong api-key")
        return 401, {}
    p, _, q = path.partition("?")
    if method == "GET" and p == "/collections":
        return 200, {"result": {"collections": [{"name": c} for c in st["collections"]]}, "status": "ok"}
    m = re.fullmatch(r"/collections/([a-z0-9_]+)", p)
    if m and method == "GET":
        return (200, {"result": {}, "status": "ok"}) if m.group(1) in st["collections"] else (404, {"status": {"error": "Not found"}})
    if m and method == "PUT":
        v = (body or {}).get("vectors", {})
        if not isinstance(v.get("size"), int) or v.get("distance") not in ("Cosine", "Dot", "Euclid", "Manhattan"):
            st["violations"].append(f"{p}: vectors {v}")
        st["collections"].add(m.group(1))
        st["created"].append(p)
        return 200, {"result": True, "status": "ok"}
    m = re.fullmatch(r"/collections/([a-z0-9_]+)/index", p)
    if m and method == "PUT":
        if m.group(1) not in st["collections"]:
            st["violations"].append(f"{p}: index on a missing collection")
        if body != {"field_name": "document_id", "field_schema": "keyword"}:
            st["violations"].append(f"{p}: payload index body {body}")
        st["indexed"].add(m.group(1))
        return 200, {"result": {"status": "acknowledged"}, "status": "ok"}
    st["violations"].append(f"unexpected {method} {p}")
    return 400, {}


def kibana_route(st, method, path, body, headers):
    if not basic(headers, "elastic", st["env"]["ELASTIC_PASSWORD"]):
        st["violations"].append(f"{method} {path}: not authenticated")
        return 401, {}
    if method != "GET" and not headers.get("kbn-xsrf"):
        st["violations"].append(f"{method} {path}: no kbn-xsrf header")
        return 400, {}
    if method == "GET" and path == "/api/status":
        return 200, {"status": {"overall": {"level": "available"}}}
    m = re.fullmatch(r"/api/data_views/data_view/([a-z0-9-]+)", path)
    if m and method == "GET":
        return (200, {"data_view": {"id": m.group(1)}}) if m.group(1) in st["views"] else (404, {"statusCode": 404})
    if path == "/api/data_views/data_view" and method == "POST":
        dv = (body or {}).get("data_view", {})
        if not dv.get("title") or not dv.get("id"):
            st["violations"].append(f"data view without title/id: {body}")
        st["views"][dv.get("id")] = dv
        st["created"].append(dv.get("id"))
        return 200, {"data_view": dv}
    st["violations"].append(f"unexpected {method} {path}")
    return 400, {}


def grafana_route(st, method, path, body, headers):
    env = st["env"]
    if not basic(headers, env["GRAFANA_ADMIN_USER"], env["GRAFANA_ADMIN_PASSWORD"]):
        st["violations"].append(f"{method} {path}: not authenticated as the Grafana admin")
        return 401, {}
    users = st.setdefault("users", {})
    if method == "GET" and path == "/api/health":
        return 200, {"database": "ok"}
    m = re.fullmatch(r"/api/users/lookup\?loginOrEmail=(.+)", path)
    if m and method == "GET":
        u = users.get(m.group(1))
        return (200, {"id": u["id"], "login": m.group(1)}) if u else (404, {"message": "user not found"})
    if method == "POST" and path == "/api/admin/users":
        for k in ("login", "password"):
            if not (body or {}).get(k):
                st["violations"].append(f"create user without {k}")
        if body.get("login") in users:
            st["violations"].append(f"user {body.get('login')} created twice")
        users[body["login"]] = {"id": len(users) + 2, "password": body.get("password"), "role": "Viewer"}
        st["created"].append(body["login"])
        return 200, {"id": users[body["login"]]["id"], "message": "User created"}
    by_id = {u["id"]: u for u in users.values()}
    m = re.fullmatch(r"/api/admin/users/(\d+)/password", path)
    if m and method == "PUT":
        if int(m.group(1)) not in by_id or not (body or {}).get("password"):
            st["violations"].append(f"{path}: unknown user or no password")
        else:
            by_id[int(m.group(1))]["password"] = body["password"]
        return 200, {"message": "User password updated"}
    m = re.fullmatch(r"/api/org/users/(\d+)", path)
    if m and method == "PATCH":
        if int(m.group(1)) not in by_id or (body or {}).get("role") not in ("Viewer", "Editor", "Admin"):
            st["violations"].append(f"{path}: unknown user or role {body}")
        else:
            by_id[int(m.group(1))]["role"] = body["role"]
        return 200, {"message": "Organization user updated"}
    st["violations"].append(f"unexpected {method} {path}")
    return 400, {}


def serve(route, env):
    st = {"requests": [], "violations": [], "created": [], "route": route, "env": env, "roles": {},
          "ilm": set(), "templates": {}, "aliases": set(), "collections": set(), "indexed": set(), "views": {}}
    handler = type("S", (Stub,), {"state": st})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, st


def run_script(interp, script, env):
    return subprocess.run([interp, os.path.join(ROOT, script)], env=env, capture_output=True, text=True, timeout=120)


def main():
    report = Report("init")
    env = dict(os.environ)
    env.update(env_example())
    env["APPS"] = APPS
    apps = APPS.split(",")
    for name, route, script, interp, url_var in (
        ("es-init", es_route, "infra/elasticsearch/init.sh", "bash", "ES_URL"),
        ("qdrant-init", qdrant_route, "infra/qdrant/init.sh", "sh", "QDRANT_URL"),
        ("kibana-init", kibana_route, "infra/kibana/init.sh", "sh", "KIBANA_URL"),
        ("grafana-init", grafana_route, "infra/grafana/init.sh", "sh", "GRAFANA_URL"),
    ):
        srv, st = serve(route, env)
        e = dict(env, **{url_var: f"http://127.0.0.1:{srv.server_address[1]}"})
        first = run_script(interp, script, e)
        created_first = list(st["created"])
        second = run_script(interp, script, e)
        created_again = st["created"][len(created_first):]
        srv.shutdown()
        ok = first.returncode == 0 and second.returncode == 0 and not st["violations"] and not created_again
        detail = f"{len(st['requests'])} requests, created {created_first}"
        if name == "es-init":
            want_tpl = {"mindora-logs"} | {f"{a}-logs" for a in apps}
            ok = ok and set(st["templates"]) == want_tpl and "mindora-logs" in st["ilm"] and \
                "data_stream" in st["templates"]["mindora-logs"] and \
                {"mindora_worker", "elasticsearch_exporter", "log_shipper", "grafana_logs"} <= set(st["roles"])
            detail += f"; templates {sorted(st['templates'])}; roles {sorted(st['roles'])}"
        if name == "qdrant-init":
            want = {f"{a}_documents" for a in apps}
            ok = ok and st["collections"] == want and st["indexed"] == want
            detail += f"; collections {sorted(st['collections'])}, document_id indexed on {sorted(st['indexed'])}"
        if name == "kibana-init":
            views = json.load(open(os.path.join(ROOT, "infra/kibana/data-views.json")))
            ok = ok and set(st["views"]) == {v["id"] for v in views}
            detail += f"; data views {sorted(st['views'])}"
        if name == "grafana-init":
            u = st.get("users", {}).get(env["GRAFANA_UI_USER"], {})
            ok = ok and u.get("role") == "Editor" and u.get("password") == env["GRAFANA_UI_PASSWORD"] \
                and env["GRAFANA_ADMIN_USER"] not in st.get("users", {})
            detail += f"; users {sorted(st.get('users', {}))}, role {u.get('role')}"
        if st["violations"]:
            detail += f"; violations {st['violations'][:5]}"
        if first.returncode or second.returncode:
            detail += f"; stderr {(first.stderr + second.stderr)[-400:]}"
        report.check(f"{name} against a wire-format stand-in, twice (second run creates nothing)", ok, detail)
    print(f"init: {report.passed} passed, {report.failed} failed")
    sys.exit(1 if report.failed else 0)


if __name__ == "__main__":
    main()
