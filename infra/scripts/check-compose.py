#!/usr/bin/env python3
"""Static checks of docker-compose.yml and .env.example (no Docker engine needed).

  check-compose.py --compose docker-compose.yml --env .env.example --schema compose-spec.json

Checks (one PASS/FAIL line each; exit 1 on any failure):
  schema        the file, interpolated with .env.example, validates against the Compose
                Specification JSON schema
  env-defined   every ${VAR} used in the compose file and in infra/ config templates is
                defined in .env.example
  env-used      every variable of .env.example is used somewhere (compose file or infra/)
  services      healthcheck, restart policy, log caps and memory limit on every service;
                one-shot services (restart "no") disable their healthcheck and are waited
                for with service_completed_successfully, long-running ones with
                service_healthy; images pinned; no container_name; only nginx has ports
  exposure      nginx publishes only on ${NGINX_BIND_ADDRESS} (loopback in .env.example);
                secrets-check receives every secret of .env.example; every service holding
                a secret waits for it (directly or through its dependencies), nginx directly
  data          stateful services keep their data under ${DATA_ROOT}/<service>
  ollama        the local embedding default (profile "ollama", on in .env.example): pinned
                ollama/ollama image, model volume under ${DATA_ROOT}/ollama, memory limit,
                healthcheck, a one-shot ollama-pull waiting for the server and running
                `ollama pull`, the worker waiting for it and configured for
                bge-m3 / 1024 dimensions at http://ollama:11434/v1 with no key
  worker        scalable and locked down: no ports/container_name/hostname/MINDORA_NAME,
                read_only, cap_drop ALL, no-new-privileges, non-root user, healthcheck
                `mindora-worker healthcheck`
"""
import argparse
import os
import re
import sys

import jsonschema
import yaml

VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")
BRACED_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
CONFIG_EXT = (".yml", ".yaml", ".json", ".conf", ".txt", ".hcl", ".tmpl", ".template")
STATEFUL = ["consul", "filebeat", "postgres", "redis", "rabbitmq", "s3", "elasticsearch", "kibana", "qdrant", "ollama",
            "prometheus", "alertmanager", "grafana", "jaeger"]

# One-shot jobs that only provision a UI: nothing has to wait for them.
LEAF_ONESHOTS = {"kibana-init", "grafana-init"}
# Host paths a service may read (read-only) besides ${DATA_ROOT} and ./infra: the log shipper
# reads every container's json-file log and asks Docker for container names.
HOST_READ_ONLY = {"filebeat": {"/var/lib/docker/containers", "/var/run/docker.sock"}}

results = []


def report(name, ok, detail=""):
    results.append(ok)
    line = f"{'PASS' if ok else 'FAIL'} compose:{name}"
    if detail:
        line += f": {detail}"
    print(line)


def parse_env(path):
    env = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            if "=" not in s:
                raise SystemExit(f"{path}:{n}: not KEY=VALUE: {s}")
            k, v = s.split("=", 1)
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k):
                raise SystemExit(f"{path}:{n}: bad variable name {k!r}")
            if k in env:
                raise SystemExit(f"{path}:{n}: {k} defined twice")
            env[k] = v
    return env


def compose_vars(text):
    text = text.replace("$$", "")
    used = set()
    for m in VAR_RE.finditer(text):
        used.add(m.group(1) or m.group(4))
    return used


def interpolate(obj, env):
    if isinstance(obj, dict):
        return {k: interpolate(v, env) for k, v in obj.items()}
    if isinstance(obj, list):
        return [interpolate(v, env) for v in obj]
    if isinstance(obj, str):
        def sub(m):
            name = m.group(1) or m.group(4)
            return env.get(name, "")
        s = obj.replace("$$", "\0")
        s = VAR_RE.sub(sub, s)
        return s.replace("\0", "$")
    return obj


def infra_files(root):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in ("__pycache__",)]
        for fn in filenames:
            yield os.path.join(dirpath, fn)


def check_ollama(services, env):
    """(ok, detail) of the local embedding default: the ollama profile and the worker's side."""
    problems = []
    o, pull, w = services.get("ollama") or {}, services.get("ollama-pull") or {}, services.get("worker") or {}
    for name, s in (("ollama", o), ("ollama-pull", pull)):
        if not s:
            problems.append(f"{name}: service missing")
    if o.get("profiles") != ["ollama"]:
        problems.append("ollama: not in profile ollama")
    if pull.get("profiles"):
        problems.append("ollama-pull: in a profile (the worker waits for it; it skips itself when not local)")
        if not re.fullmatch(r"ollama/ollama:\d+\.\d+\.\d+", s.get("image", "")):
            problems.append(f"{name}: image {s.get('image')!r} is not ollama/ollama pinned to a version")
    if o:
        if not any(str(v).startswith("${DATA_ROOT}/ollama:/root/.ollama") for v in o.get("volumes", [])):
            problems.append("ollama: models not persisted (${DATA_ROOT}/ollama:/root/.ollama)")
        if (((o.get("deploy") or {}).get("resources") or {}).get("limits") or {}).get("memory") != "${MEM_OLLAMA}":
            problems.append("ollama: memory limit is not ${MEM_OLLAMA}")
        if "ollama" not in " ".join(map(str, (o.get("healthcheck") or {}).get("test") or [])):
            problems.append("ollama: healthcheck does not ask the server (ollama list)")
    if pull:
        if str(pull.get("restart")) != "no":
            problems.append("ollama-pull: not a one-shot service")
        penv = pull.get("environment") or {}
        if (penv.get("OLLAMA_HOST") != "http://ollama:11434" or penv.get("EMBED_MODEL") != "${EMBED_MODEL}"
                or penv.get("EMBED_BASE_URL") != "${EMBED_BASE_URL}"):
            problems.append("ollama-pull: OLLAMA_HOST/EMBED_MODEL/EMBED_BASE_URL not the server and the worker's")
        script = " ".join(map(str, pull.get("entrypoint") or []))
        path = next((p for p in (pull.get("entrypoint") or []) if str(p).startswith("/infra/")), None)
        body = open(os.path.join("infra", path[len("/infra/"):])).read() if path else script
        if not re.search(r"^\s*ollama pull \"\$EMBED_MODEL\"", body, re.M):
            problems.append("ollama-pull: does not run ollama pull \"$EMBED_MODEL\"")
        if not re.search(r"until ollama list", body):
            problems.append("ollama-pull: does not wait for the server (until ollama list)")
    dep = (w.get("depends_on") or {}).get("ollama-pull") or {}
    if dep.get("condition") != "service_completed_successfully":
        problems.append("worker: does not wait for ollama-pull (service_completed_successfully)")
    wenv = w.get("environment") or {}
    for k, var in (("MINDORA_EMBED_BASE_URL", "EMBED_BASE_URL"), ("MINDORA_EMBED_API_KEY", "EMBED_API_KEY"),
                   ("MINDORA_EMBED_MODEL", "EMBED_MODEL"), ("MINDORA_EMBED_DIMENSIONS", "EMBED_DIMENSIONS")):
        if wenv.get(k) != "${%s}" % var:
            problems.append(f"worker: {k} is not ${{{var}}}")
    want = {"EMBED_BASE_URL": "http://ollama:11434/v1", "EMBED_API_KEY": "", "EMBED_MODEL": "bge-m3",
            "EMBED_DIMENSIONS": "1024"}
    for k, v in want.items():
        if env.get(k) != v:
            problems.append(f".env.example: {k}={env.get(k)!r}, the local default is {v!r}")
    if "ollama" not in env.get("COMPOSE_PROFILES", "").split(","):
        problems.append(".env.example: COMPOSE_PROFILES does not turn the ollama profile on")
    if not env.get("MEM_OLLAMA"):
        problems.append(".env.example: MEM_OLLAMA missing")
    return not problems, "; ".join(problems) or (
        f"profile ollama on by default: {o.get('image')} ({env.get('MEM_OLLAMA')}, models under ${{DATA_ROOT}}/ollama), "
        "ollama-pull before the worker, worker on bge-m3/1024 at http://ollama:11434/v1 with no key")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--compose", default="docker-compose.yml")
    ap.add_argument("--env", default=".env.example")
    ap.add_argument("--schema", required=True)
    ap.add_argument("--infra", default="infra")
    args = ap.parse_args()

    text = open(args.compose).read()
    env = parse_env(args.env)
    doc = yaml.safe_load(text)

    # --- schema
    import json
    schema = json.load(open(args.schema))
    data = interpolate({k: v for k, v in doc.items() if not k.startswith("x-")}, env)
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.path))
    report("schema", not errors, "; ".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:5])
           or f"valid against {os.path.basename(args.schema)}")

    # --- variables
    used_compose = compose_vars(text)
    used_configs = {}
    mentioned = set()
    for path in infra_files(args.infra):
        try:
            content = open(path).read()
        except UnicodeDecodeError:
            continue
        if path.endswith(".md"):
            continue
        for k in env:
            if re.search(r"\b%s\b" % re.escape(k), content):
                mentioned.add(k)
        if path.endswith(CONFIG_EXT):
            for name in BRACED_RE.findall(content):
                used_configs.setdefault(name, set()).add(os.path.relpath(path))
    undefined = sorted(v for v in used_compose if v not in env)
    undefined += sorted(f"{v} (in {', '.join(sorted(files))})" for v, files in used_configs.items() if v not in env)
    report("env-defined", not undefined,
           ("undefined: " + ", ".join(undefined)) if undefined else
           f"{len(used_compose)} compose variables, {len(used_configs)} config-template variables all in {args.env}")
    # Read by Docker Compose itself from .env, not interpolated anywhere.
    compose_own = {"COMPOSE_PROFILES"}
    unused = sorted(k for k in env if k not in used_compose and k not in used_configs and k not in mentioned
                    and k not in compose_own)
    report("env-used", not unused, ("unused: " + ", ".join(unused)) if unused else f"all {len(env)} variables used")

    # --- services
    services = doc.get("services", {})
    problems = []
    oneshots = {n for n, s in services.items() if str(s.get("restart", "")) == "no"}
    for name, s in services.items():
        if "container_name" in s:
            problems.append(f"{name}: container_name set")
        if "restart" not in s:
            problems.append(f"{name}: no restart policy")
        hc = s.get("healthcheck")
        if not hc:
            problems.append(f"{name}: no healthcheck")
        elif name in oneshots and not hc.get("disable"):
            problems.append(f"{name}: one-shot service should disable its healthcheck")
        elif name not in oneshots and (hc.get("disable") or not hc.get("test")):
            problems.append(f"{name}: healthcheck has no test")
        log = s.get("logging") or {}
        opts = log.get("options") or {}
        if not ("max-size" in opts and "max-file" in opts):
            problems.append(f"{name}: logs not capped (logging.options max-size/max-file)")
        mem = (((s.get("deploy") or {}).get("resources") or {}).get("limits") or {}).get("memory")
        if not mem:
            problems.append(f"{name}: no memory limit")
        image = s.get("image", "")
        if "${" not in image:
            tag = image.rsplit("/", 1)[-1]
            if ":" not in tag or tag.endswith(":latest"):
                problems.append(f"{name}: image {image!r} not pinned")
        if s.get("ports") and name != "nginx":
            problems.append(f"{name}: publishes ports (only nginx may)")
        deps = s.get("depends_on") or {}
        if isinstance(deps, list):
            problems.append(f"{name}: depends_on without conditions")
            deps = {}
        for dep, cond in deps.items():
            if dep not in services:
                problems.append(f"{name}: depends on unknown service {dep}")
                continue
            want = "service_completed_successfully" if dep in oneshots else "service_healthy"
            if (cond or {}).get("condition") != want:
                problems.append(f"{name}: depends_on {dep} should use condition {want}")
    for o in oneshots - LEAF_ONESHOTS:
        if not any(o in (s.get("depends_on") or {}) for s in services.values()):
            problems.append(f"{o}: one-shot service nothing waits for")
    report("services", not problems, "; ".join(problems) or
           f"{len(services)} services ({len(oneshots)} one-shot): healthchecks, restart, log caps, memory limits, pinned images, health-gated depends_on")

    # --- exposure and secrets
    problems = []
    secret_re = re.compile(r".*_(PASSWORD|SECRET|SECRET_KEY|API_KEY|ENCRYPTION_KEY|TOKEN)$")
    secrets = {k for k in env if secret_re.fullmatch(k)}
    gate = services.get("secrets-check") or {}
    genv = gate.get("environment") or {}
    missing = sorted(k for k in secrets if genv.get(k) != "${%s}" % k)
    if missing:
        problems.append("secrets-check does not receive " + ", ".join(missing))

    def needs(name, seen=()):
        deps = services.get(name, {}).get("depends_on") or {}
        return "secrets-check" in deps or any(needs(d, seen + (name,)) for d in deps if d not in seen)
    for name, s in services.items():
        if name == "secrets-check":
            continue
        holds = any(re.search(r"\$\{(%s)\}" % "|".join(secrets), str(v)) for v in
                    [s.get("environment"), s.get("command"), s.get("healthcheck")])
        if holds and not needs(name):
            problems.append(f"{name} holds a secret but does not wait for secrets-check")
    if "secrets-check" not in (services.get("nginx", {}).get("depends_on") or {}):
        problems.append("nginx does not wait for secrets-check directly")
    for p in services.get("nginx", {}).get("ports", []):
        if not str(p).startswith("${NGINX_BIND_ADDRESS}:"):
            problems.append(f"nginx port {p} not bound to ${{NGINX_BIND_ADDRESS}}")
    if env.get("NGINX_BIND_ADDRESS") not in ("127.0.0.1", "::1"):
        problems.append(f"NGINX_BIND_ADDRESS defaults to {env.get('NGINX_BIND_ADDRESS')!r}, not loopback")
    report("exposure", not problems, "; ".join(problems) or
           f"nginx alone publishes, on NGINX_BIND_ADDRESS={env.get('NGINX_BIND_ADDRESS')}; secrets-check receives all "
           f"{len(secrets)} secrets and every service holding one waits for it")

    # --- data
    problems = []
    for name in STATEFUL:
        s = services.get(name)
        if s is None:
            problems.append(f"{name}: service missing")
            continue
        vols = [v if isinstance(v, str) else v.get("source", "") for v in s.get("volumes", [])]
        if not any(v.startswith("${DATA_ROOT}/%s" % name) for v in vols):
            problems.append(f"{name}: no volume under ${{DATA_ROOT}}/{name}")
        for v in vols:
            src = v.split(":", 1)[0]
            if src in HOST_READ_ONLY.get(name, set()) and v.endswith(":ro"):
                continue
            if not (src.startswith("${DATA_ROOT}/") or src.startswith("./infra")):
                problems.append(f"{name}: volume {v} outside ${{DATA_ROOT}} and ./infra")
    report("data", not problems, "; ".join(problems) or f"{len(STATEFUL)} stateful services keep data under ${{DATA_ROOT}}/<service>")

    # --- ollama
    report("ollama", *check_ollama(services, env))

    # --- worker
    w = services.get("worker") or {}
    problems = []
    for key in ("ports", "container_name", "hostname", "expose"):
        if key in w:
            problems.append(f"{key} set")
    envw = w.get("environment") or {}
    if isinstance(envw, list):
        envw = dict(e.split("=", 1) if "=" in e else (e, "") for e in envw)
    if "MINDORA_NAME" in envw:
        problems.append("MINDORA_NAME set (replicas would share a name)")
    for k in ("MINDORA_REDIS_URL", "MINDORA_QUEUES", "MINDORA_METRICS_ADDR", "MINDORA_AMQP_URL"):
        if k not in envw:
            problems.append(f"{k} missing")
    if not str(envw.get("MINDORA_METRICS_ADDR", "")).endswith(":9100"):
        problems.append("MINDORA_METRICS_ADDR must listen on :9100 (Prometheus dns_sd port)")
    if w.get("read_only") is not True:
        problems.append("read_only root fs not set")
    if [c.upper() for c in w.get("cap_drop", [])] != ["ALL"]:
        problems.append("cap_drop ALL missing")
    if not any(str(o).replace(" ", "") in ("no-new-privileges:true", "no-new-privileges") for o in w.get("security_opt", [])):
        problems.append("no-new-privileges missing")
    user = str(w.get("user", ""))
    if not user or user.split(":")[0] in ("0", "root"):
        problems.append("runs as root")
    if (w.get("healthcheck") or {}).get("test") != ["CMD", "mindora-worker", "healthcheck"]:
        problems.append("healthcheck is not mindora-worker healthcheck")
    report("worker", not problems, "; ".join(problems) or
           "scalable (no ports/container_name/hostname/MINDORA_NAME), read-only, cap_drop ALL, no-new-privileges, non-root")

    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
