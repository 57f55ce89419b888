#!/usr/bin/env python3
"""RabbitMQ initialisation through the management HTTP API (idempotent).

- imports infra/rabbitmq/definitions.json (vhost, exchanges, queues, DLX, retry queues,
  bindings) with ${VAR} placeholders filled from the environment;
- expands infra/rabbitmq/definitions-app.json for every app in APPS ({app}_internal_tasks,
  its DLQ and topic binding) and imports it;
- creates/updates the worker user and one user per app, with permissions on their own
  queues only (per-app passwords derived from APP_CREDENTIALS_SECRET, see scripts/lib.sh).

mindora-worker also declares the same topology idempotently at start (`mindora-worker
topology`); the queue arguments here must stay identical to the worker's.
Standard library only; runs in the rabbitmq-init container (a Python image: the RabbitMQ 4.x
images ship no python3), talking to the broker over the management HTTP API only.
"""
import base64
import hashlib
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
API = os.environ.get("RABBITMQ_API", "http://rabbitmq:15672/api").rstrip("/")
USER = os.environ["RABBITMQ_USER"]
PASSWORD = os.environ["RABBITMQ_PASSWORD"]
VHOST = os.environ["RABBITMQ_VHOST"]


def log(msg):
    print(f"[rabbitmq-init] {msg}", flush=True)


def render(text):
    def sub(m):
        name = m.group(1)
        if name not in os.environ:
            sys.exit(f"rabbitmq-init: {name} is not set")
        return os.environ[name]

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", sub, text)


def apps():
    out = []
    for a in re.split(r"[,\s]+", os.environ.get("APPS", "").strip()):
        if not a:
            continue
        if not re.fullmatch(r"[a-z][a-z0-9_]*", a):
            sys.exit(f"rabbitmq-init: invalid app name {a!r}")
        out.append(a)
    return out


def app_secret(app, service):
    secret = os.environ["APP_CREDENTIALS_SECRET"]
    return hashlib.sha256(f"{secret}:{app}:{service}".encode()).hexdigest()[:32]


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(API + path, data=data, method=method)
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    req.add_header("Authorization", f"Basic {token}")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as resp:
        raw = resp.read()
        return json.loads(raw) if raw else None


def wait_api():
    for _ in range(60):
        try:
            call("GET", "/overview")
            return
        except (urllib.error.URLError, OSError) as e:
            log(f"waiting for management API: {e}")
            time.sleep(2)
    sys.exit("rabbitmq-init: management API not reachable")


def q(name):
    return urllib.parse.quote(name, safe="")


def ensure_user(name, password, tags=""):
    call("PUT", f"/users/{q(name)}", {"password": password, "tags": tags})
    log(f"user {name}")


def ensure_permissions(user, configure, write, read):
    call("PUT", f"/permissions/{q(VHOST)}/{q(user)}", {"configure": configure, "write": write, "read": read})


def main():
    wait_api()
    call("PUT", f"/vhosts/{q(VHOST)}", {"description": "mindora"})
    base = json.loads(render(open(os.path.join(HERE, "definitions.json")).read()))
    call("POST", "/definitions", base)
    log(f"imported definitions.json into vhost {VHOST}")

    # The admin user keeps full rights on the vhost.
    ensure_permissions(USER, ".*", ".*", ".*")

    worker = os.environ["RABBITMQ_WORKER_USER"]
    ensure_user(worker, os.environ["RABBITMQ_WORKER_PASSWORD"])
    own = r"^(ai_processing_tasks(\..*)?|user_notifications|mindora\.dlx|system_events|inter_app_communication|[a-z][a-z0-9_]*_internal_tasks(\.dlq)?|amq\.gen-.*)$"
    ensure_permissions(worker, own, own + r"|^amq\.default$", own)

    # The named management-UI login: sees the broker (tag monitoring), reads the vhost,
    # changes nothing. nginx checks this same login (htpasswd-rabbitmq).
    ui = os.environ.get("RABBITMQ_UI_USER", "")
    if ui:
        ensure_user(ui, os.environ["RABBITMQ_UI_PASSWORD"], "monitoring")
        ensure_permissions(ui, "^$", "^$", ".*")
        log(f"UI user {ui} (monitoring, read-only)")

    template = open(os.path.join(HERE, "definitions-app.json")).read()
    for app in apps():
        spec = json.loads(render(template).replace("{app}", app))
        call("POST", "/definitions", {"queues": spec["queues"], "bindings": spec["bindings"]})
        for u in spec["users"]:
            ensure_user(u["name"], app_secret(app, "rabbitmq"), ",".join(u.get("tags", [])))
        for p in spec["permissions"]:
            ensure_permissions(p["user"], p["configure"], p["write"], p["read"])
        log(f"app {app}: queue {app}_internal_tasks, user {app}")
    log("done")


if __name__ == "__main__":
    main()
