#!/usr/bin/env python3
"""rabbitmq-init (infra/rabbitmq/init.py) for real against a private RabbitMQ node with the
management plugin, started on free loopback ports (its own node name, data and config in a
temp dir; the machine's shared broker is not touched), then stopped.

  rabbitmq_init.py

Asserts: init.py imports only the Python standard library (it runs in a plain Python image:
the RabbitMQ 4.x images have no python3) and talks to the broker over the management HTTP API
only; it runs twice (idempotent); the topology (priority queue, DLQ, retry queues, per-app
queues) exists; the worker user has no tags (its login opens no management API) and may write
ai_processing_tasks only among these; the named UI user has tag monitoring, may read the
vhost's queues, may not publish and may not list users; every app user exists.
"""
import ast
import base64
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, Report, free_port, retry, run_in_tmp, wait_port  # noqa: E402

INIT = os.path.join(ROOT, "infra/rabbitmq/init.py")
SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"


def api(port, user, password, method, path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None)
    req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            data = r.read()
            return r.status, json.loads(data) if data else None
    except urllib.error.HTTPError as e:
        return e.code, None


def scenario(report, procs, tmp):
    """A private node in tmp, init.py run twice against it, then the checks."""
    amqp, mgmt, dist = free_port(), free_port(), free_port()
    with open(os.path.join(tmp, "plugins"), "w") as f:
        f.write("[rabbitmq_management].\n")
    with open(os.path.join(tmp, "rabbitmq.conf"), "w") as f:
        f.write(f"listeners.tcp.default = 127.0.0.1:{amqp}\nmanagement.tcp.port = {mgmt}\n"
                "management.tcp.ip = 127.0.0.1\nloopback_users = none\n")
    node = f"mindora-infra-{os.getpid()}@localhost"
    env = dict(os.environ, HOME=tmp, RABBITMQ_NODENAME=node, RABBITMQ_DIST_PORT=str(dist),
               RABBITMQ_MNESIA_BASE=os.path.join(tmp, "mnesia"), RABBITMQ_LOG_BASE=os.path.join(tmp, "log"),
               RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(tmp, "plugins"),
               RABBITMQ_CONFIG_FILE=os.path.join(tmp, "rabbitmq"),
               RABBITMQ_ADVANCED_CONFIG_FILE=os.path.join(tmp, "advanced.config"),
               RABBITMQ_PID_FILE=os.path.join(tmp, "pid"))
    broker = procs.start("rabbitmq", [SERVER], env=env)
    wait_port(mgmt, 120, "RabbitMQ management", broker)
    ok = retry(60, lambda: api(mgmt, "guest", "guest", "GET", "/overview")[0] == 200)
    report.check("private RabbitMQ node with the management plugin", bool(ok), node)
    vhost = "mindora-infra-test"
    ienv = dict(os.environ, RABBITMQ_API=f"http://127.0.0.1:{mgmt}/api", RABBITMQ_USER="guest",
                RABBITMQ_PASSWORD="guest", RABBITMQ_VHOST=vhost, RABBITMQ_WORKER_USER="ci_worker",
                RABBITMQ_WORKER_PASSWORD="ci-worker-password-1234", RABBITMQ_UI_USER="ci_ui",
                RABBITMQ_UI_PASSWORD="ci-ui-password-123456", APPS="demo,billing_eu",
                APP_CREDENTIALS_SECRET="ci-app-credentials-secret")
    runs = [subprocess.run([sys.executable, INIT], env=ienv, capture_output=True, text=True, timeout=120)
            for _ in range(2)]
    report.check("init.py runs twice against the management API (idempotent)",
                 all(r.returncode == 0 for r in runs),
                 " | ".join((r.stdout + r.stderr).strip().splitlines()[-1] for r in runs if r.stdout + r.stderr))
    st, queues = api(mgmt, "guest", "guest", "GET", f"/queues/{vhost}")
    q = {x["name"]: x.get("arguments", {}) for x in queues or []}
    want = {"ai_processing_tasks", "ai_processing_tasks.dlq", "user_notifications",
            "demo_internal_tasks", "billing_eu_internal_tasks"}
    report.check("topology: priority queue, DLQ, retry queues, per-app queues",
                 want <= set(q) and q["ai_processing_tasks"].get("x-max-priority") == 10
                 and any(n.startswith("ai_processing_tasks.retry.") for n in q), f"{sorted(q)}")
    st, users = api(mgmt, "guest", "guest", "GET", "/users")
    tags = {u["name"]: u["tags"] for u in users or []}
    norm = {k: (v if isinstance(v, list) else [t for t in v.split(",") if t]) for k, v in tags.items()}
    report.check("users: worker without tags, UI user tagged monitoring only, every app user",
                 norm.get("ci_worker") == [] and norm.get("ci_ui") == ["monitoring"]
                 and {"demo", "billing_eu"} <= set(norm), f"{norm}")
    pub = {"properties": {}, "routing_key": "ai_processing_tasks", "payload": "{}", "payload_encoding": "string"}
    # (the worker has no management tag, so it cannot use the HTTP API: its rights are read)
    st_w, perm = api(mgmt, "guest", "guest", "GET", f"/permissions/{vhost}/ci_worker")
    perm = perm or {}
    report.check("the worker may write ai_processing_tasks and amq.default, not configure everything",
                 st_w == 200 and re.match(perm.get("write", "^$"), "ai_processing_tasks")
                 and re.match(perm.get("write", "^$"), "amq.default") and perm.get("configure") != ".*"
                 and not re.match(perm.get("write", "^$"), "some_other_queue"), f"{st_w} {perm}")
    st_wu, _ = api(mgmt, "ci_worker", "ci-worker-password-1234", "GET", "/overview")
    report.check("the worker's login does not open the management UI/API", st_wu == 401, f"{st_wu}")
    st_r, _ = api(mgmt, "ci_ui", "ci-ui-password-123456", "GET", f"/queues/{vhost}")
    st_p, _ = api(mgmt, "ci_ui", "ci-ui-password-123456", "POST", f"/exchanges/{vhost}/amq.default/publish", pub)
    st_u, _ = api(mgmt, "ci_ui", "ci-ui-password-123456", "GET", "/users")
    report.check("the UI user reads the vhost's queues but may not publish nor list users",
                 st_r == 200 and st_p != 200 and st_u in (401, 403), f"read {st_r}, publish {st_p}, users {st_u}")


def main():
    report = Report("rabbitmq-init")
    imports = set()
    for node in ast.walk(ast.parse(open(INIT).read())):
        if isinstance(node, ast.Import):
            imports |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imports.add(node.module.split(".")[0])
    report.check("init.py imports only the standard library (runs in a plain Python image)",
                 imports <= set(sys.stdlib_module_names), f"{sorted(imports)}")
    if not os.path.exists(SERVER):
        report.check("rabbitmq-server installed", False, SERVER)
        sys.exit(1)
    run_in_tmp(report, "mindora-rmq-", "rabbitmq.log", 20, lambda procs, tmp: scenario(report, procs, tmp))


if __name__ == "__main__":
    main()
