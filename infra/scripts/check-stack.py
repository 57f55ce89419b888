#!/usr/bin/env python3
"""Consistency checks of the stack against the code that uses it (no Docker engine needed).

  check-stack.py [--worker-log FILE]

One PASS/FAIL line per check (exit 1 on any failure):
  images        every image reference (compose, e2e, scripts) is in infra/tests/images.txt
                (registries/tags known to serve them) and none is in its "removed" section
  es-worker     the mindora_worker role grants exactly the privileges of the Elasticsearch API
                calls in pipelines/src/index_fulltext.rs, on exactly the worker's index pattern
  es-owners     one owner per Elasticsearch object: no init script creates the worker's
                {app}-documents template/alias/ILM; the exporter role is read-only on ILM
  names         Qdrant collection, PostgreSQL schema, ES documents alias named alike in
                pipelines/src/model.rs, the init scripts, the Consul KV seed and infra/README.md
  memory        worker: MEM_WORKER and the Kubernetes limit hold memory_rule.py's base +
                concurrency x per-job bound + PDF helpers + /tmp (measured, issue 24), the
                compose file passes the caps, the pool size and a disk temp dir;
                RabbitMQ: absolute watermark <= 0.6 x MEM_RABBITMQ; Redis maxmemory <= half
                of MEM_REDIS (fork headroom)
  postgres      healthcheck over TCP, init waits for queries, max_connections holds every
                worker pool
  versions      qdrant server minor == qdrant-client crate minor; Elastic images one version
  logs          Filebeat config parsed; its processors replayed on real worker JSON log lines
                map level/job id/queue/function/error onto fields the data-stream template
                maps; log_shipper role append-only on the template's pattern; Kibana data views
                match the templates
"""
import argparse
import os
import json
import re
import sys

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from filebeat_replay import get_path, leaves, mapped_fields, replay  # noqa: E402
import memory_rule  # noqa: E402

ROOT = "."
results = []


def report(name, problems, ok_detail):
    results.append(not problems)
    if problems:
        print(f"FAIL stack:{name}: " + "; ".join(problems))
    else:
        print(f"PASS stack:{name}: {ok_detail}")


def read(path):
    with open(path) as f:
        return f.read()


def env_example():
    env = {}
    for line in read(".env.example").splitlines():
        s = line.strip()
        if s and not s.startswith("#") and "=" in s:
            k, v = s.split("=", 1)
            env[k] = v
    return env


def size_bytes(text):
    """512m, 1g, 1536m (Docker), 460MiB (RabbitMQ), plain bytes."""
    m = re.fullmatch(r"\s*(\d+)\s*([kmgKMG]?)(i?[bB])?\s*", str(text))
    if not m:
        raise ValueError(f"not a size: {text!r}")
    mult = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m.group(2).lower()]
    if m.group(3) and not m.group(3).lower().startswith("i") and m.group(2):
        mult = {"k": 1000, "m": 1000**2, "g": 1000**3}[m.group(2).lower()]
    return int(m.group(1)) * mult


def compose():
    return yaml.safe_load(read("docker-compose.yml"))


# ------------------------------------------------------------------ images
def check_images():
    allowed, removed = set(), {}
    for line in read("infra/tests/images.txt").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        ref = line.split("\t", 1)[0].strip()
        if ref.startswith("!"):
            removed[ref[1:]] = line.split("\t", 1)[1] if "\t" in line else "removed"
        else:
            allowed.add(ref)
    refs = {}
    for name, svc in compose()["services"].items():
        img = svc.get("image", "")
        if img and not img.startswith("${") and "build" not in svc:
            refs.setdefault(img, []).append(f"docker-compose.yml:{name}")
    pat = re.compile(r"\b(?:docker run|docker pull)\b[^\n]*?\s((?:[a-z0-9.-]+/)*[a-z0-9._-]+:[A-Za-z0-9._-]+)(?=\s|$|['\"])")
    for path in ["tests/e2e/run.sh", "infra/scripts/backup.sh", "infra/scripts/restore.sh",
                 "infra/scripts/manage.sh"]:
        for m in pat.finditer(read(path)):
            refs.setdefault(m.group(1), []).append(path)
    problems = []
    for ref, where in sorted(refs.items()):
        repo = ref.rsplit(":", 1)[0]
        for bad, why in removed.items():
            if repo == bad or repo == "docker.io/" + bad or "library/" + bad == repo:
                problems.append(f"{ref} ({', '.join(where)}): {why}")
        if ref not in allowed:
            problems.append(f"{ref} ({', '.join(where)}) not in infra/tests/images.txt")
    pat_img = re.compile(r"\b(python:[0-9][A-Za-z0-9._-]*)")
    for m in pat_img.finditer(read("tests/e2e/run.sh")):
        refs.setdefault(m.group(1), []).append("tests/e2e/run.sh")
    report("images", problems, f"{len(refs)} image references, all in infra/tests/images.txt, none removed")


# ------------------------------------------------------------------ Elasticsearch
# Privileges each Elasticsearch API needs (Elasticsearch security privileges reference).
# bulk: "index" ops need `index`; the monthly index is auto-created on the first write
# (`create_index`). delete_by_query searches then deletes (`read` + `delete`).
ES_API = {
    "put_index_template": ({"manage_index_templates"}, set()),
    "put_template": ({"manage_index_templates"}, set()),
    "bulk": (set(), {"index", "create_index"}),
    "index": (set(), {"index", "create_index"}),
    "delete_by_query": (set(), {"read", "delete"}),
    "delete": (set(), {"delete"}),
    "search": (set(), {"read"}),
    "count": (set(), {"read"}),
    "get": (set(), {"read"}),
    "refresh": (set(), {"maintenance"}),
}


# A `refresh` parameter makes Elasticsearch run indices:admin/refresh as the caller after the
# write (delete_by_query and bulk alike: elastic/elasticsearch#88001, #91950), which only the
# `maintenance` (or manage/all) index privilege grants.
REFRESH_PRIVILEGE = "maintenance"


def es_calls(src):
    """[(api, uses_refresh)] for every request chain `client[.indices()].api(...)...send()`."""
    flat = re.sub(r"\s+", "", src)
    calls = []
    # `let indices = self.client.indices(); indices.put_index_template(..)` is the same chain
    # (the Indices namespace must outlive the request builder borrowing it).
    flat = re.sub(r"let([a-z_]+)=self\.client\.indices\(\);let(?:mut)?[a-z_]+=\1\.", r"self.client.indices().", flat)
    for m in re.finditer(r"\.client(?:\.indices\(\))?\.([a-z_]+)\((.*?)\.send\(\)", flat):
        refresh = re.search(r"\.refresh\((?!false\)|Refresh::False\))", m.group(2)) is not None
        calls.append((m.group(1), refresh))
    return sorted(set(calls))


def check_es_worker():
    src = read("pipelines/src/index_fulltext.rs")
    calls = es_calls(src)
    problems = []
    cluster, index = set(), set()
    for c, refresh in calls:
        if c not in ES_API:
            problems.append(f"API call {c}() has no privilege entry in check-stack.py ES_API")
            continue
        cluster |= ES_API[c][0]
        index |= ES_API[c][1]
        if refresh:
            index.add(REFRESH_PRIVILEGE)
    if not calls:
        problems.append("no Elasticsearch calls found in pipelines/src/index_fulltext.rs")
    role = json.loads(read("infra/elasticsearch/role-mindora_worker.json"))
    init = read("infra/elasticsearch/init.sh")
    if "role-mindora_worker.json" not in init:
        problems.append("es-init does not PUT infra/elasticsearch/role-mindora_worker.json")
    got_cluster = set(role.get("cluster", []))
    got_index = set()
    names = set()
    for entry in role.get("indices", []):
        got_index |= set(entry["privileges"])
        names |= set(entry["names"])
    if got_cluster != cluster:
        problems.append(f"cluster privileges {sorted(got_cluster)}, the calls need exactly {sorted(cluster)}")
    if got_index != index:
        problems.append(f"index privileges {sorted(got_index)}, the calls need exactly {sorted(index)}")
    model = read("pipelines/src/model.rs")
    m = re.search(r'fn es_index_pattern[^{]*\{\s*format!\("\{\}([^"]*)"', model)
    pattern = "*" + m.group(1) if m else None
    if names != {pattern}:
        problems.append(f"role index names {sorted(names)}, the worker writes {pattern}")
    report("es-worker", problems,
           f"calls {[c + ('+refresh' if r else '') for c, r in calls]} -> cluster {sorted(cluster)}, indices {sorted(index)} on {pattern}; role grants exactly that")


def check_es_owners():
    problems = []
    init = read("infra/elasticsearch/init.sh")
    code = [ln for ln in init.splitlines() if not ln.lstrip().startswith("#")]
    for ln in code:
        if re.search(r"documents", ln):
            problems.append(f"es-init touches a documents object (the worker owns them): {ln.strip()}")

    for f in os.listdir("infra/elasticsearch"):
        if "documents" in f:
            problems.append(f"infra/elasticsearch/{f}: documents templates/ILM belong to the worker")
    src = read("pipelines/src/index_fulltext.rs")
    if '"index.lifecycle.rollover_alias":' in src:
        problems.append("the worker's template sets an ILM rollover alias, but its indices are monthly by name")
    exporter = json.loads(read("infra/elasticsearch/role-elasticsearch_exporter.json"))
    manage = [p for p in exporter["cluster"] if p.startswith("manage") or p == "all"]
    if manage:
        problems.append(f"elasticsearch_exporter has {manage}; read_ilm/read_slm/monitor suffice")
    for e in exporter["indices"]:
        extra = set(e["privileges"]) - {"monitor", "view_index_metadata"}
        if extra:
            problems.append(f"elasticsearch_exporter index privileges {sorted(extra)} beyond monitor/view_index_metadata")
    report("es-owners", problems,
           "worker alone owns {app}-documents (template + read alias, no ILM); exporter read-only")


# ------------------------------------------------------------------ names
def rust_fmt(model, fn):
    m = re.search(r"fn %s\b[^{]*\{\s*format!\(\"([^\"]*)\"" % fn, model)
    return m.group(1).replace("{}", "{app}") if m else None


def check_names():
    model = read("pipelines/src/model.rs")
    collection = rust_fmt(model, "qdrant_collection")
    schema = rust_fmt(model, "schema")
    alias = rust_fmt(model, "es_template")
    problems = []
    if None in (collection, schema, alias):
        problems.append("could not read the naming functions of pipelines/src/model.rs")
        report("names", problems, "")
        return
    # Qdrant init: the collection it creates.
    qinit = read("infra/qdrant/init.sh")
    m = re.search(r'collection="\$\{app\}([^"]*)"', qinit)
    if not m or "{app}" + m.group(1) != collection:
        problems.append(f"infra/qdrant/init.sh creates {('{app}' + m.group(1)) if m else '?'}, the worker writes {collection}")
    if "document_id" not in qinit:
        problems.append("infra/qdrant/init.sh does not index document_id")
    # PostgreSQL init: the schema it creates.
    pinit = read("infra/postgres/init.sh")
    m = re.search(r'schema="([a-z_]*)\$\{app//-/_\}"', pinit)
    if not m or m.group(1) + "{app}" != schema:
        problems.append(f"infra/postgres/init.sh schema differs from the worker's {schema}")
    # Consul KV seed.
    seed = {}
    for line in read("infra/consul/kv-seed.txt").splitlines():
        if line.strip() and not line.startswith("#") and "\t" in line:
            k, v = line.split("\t", 1)
            seed[k] = v
    shared = json.loads(re.sub(r"\$\{[A-Z_]+\}", "0", seed.get("{app}/shared", "{}")))
    database = json.loads(re.sub(r"\$\{[A-Z_]+\}", "0", seed.get("{app}/{env}/database", "{}")))
    if shared.get("qdrant_collection") != collection:
        problems.append(f"KV qdrant_collection {shared.get('qdrant_collection')!r} != {collection}")
    if shared.get("es_documents_alias") != alias:
        problems.append(f"KV es_documents_alias {shared.get('es_documents_alias')!r} != {alias}")
    if database.get("schema") != schema:
        problems.append(f"KV database schema {database.get('schema')!r} != {schema}")
    # The worker's template really carries the advertised alias.
    if "read_alias(app): {}" not in read("pipelines/src/index_fulltext.rs"):
        problems.append("the worker's index template does not add the read alias")
    # README: per-app resources name the same things.
    readme = read("infra/README.md")
    for want in (f"collection `{collection}`", f"schema `{schema}`", f"alias `{alias}`"):
        if want not in readme:
            problems.append(f"infra/README.md does not say {want}")
    for wrong in ("collection `{app}`", "schema `{app}`"):
        if wrong in readme:
            problems.append(f"infra/README.md still says {wrong}")
    report("names", problems,
           f"collection {collection}, schema {schema}, alias {alias} agree in model.rs, init scripts, KV seed, README")


# ------------------------------------------------------------------ memory
# One rule for compose and Kubernetes (infra/scripts/memory_rule.py, measured with
# pipelines/examples/stream_memory.rs): BASE + concurrency x job + PDF helpers + /tmp.


def k8s_quantity(q):
    """Kubernetes memory quantity (128Mi, 1Gi, plain bytes) in bytes."""
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi)?", str(q))
    if not m:
        raise ValueError(f"not a Kubernetes memory quantity: {q!r}")
    return int(m.group(1)) * {None: 1, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}[m.group(2)]


def k8s_memory():
    """(problems, detail) of the Kubernetes base: limit vs the same rule as compose's."""
    docs = []
    for f in ("deploy/kubernetes/base/configmap.yaml", "deploy/kubernetes/base/deployment.yaml"):
        docs += [d for d in yaml.safe_load_all(read(f)) if d]
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    limit = k8s_quantity(pod["containers"][0]["resources"]["limits"]["memory"])
    tmp_vol = next(v for v in pod["volumes"] if v["name"] == "tmp")
    # A disk emptyDir's page cache is charged to the pod too; count its cap like a tmpfs.
    tmp = k8s_quantity(tmp_vol["emptyDir"]["sizeLimit"])
    conc, cap = int(config["MINDORA_CONCURRENCY"]), int(config["MINDORA_MAX_OBJECT_BYTES"])
    parsed, pool = int(config["MINDORA_MAX_PARSED_BYTES"]), int(config["MINDORA_PDF_POOL"])
    need = memory_rule.need_bytes(conc, parsed, pool, tmp)
    problems = []
    if limit < need:
        problems.append(f"Kubernetes limit {limit >> 20}Mi < {memory_rule.formula(conc, parsed, pool, tmp)}")
    if memory_rule.object_problem(cap):
        problems.append("Kubernetes: " + memory_rule.object_problem(cap))
    downloads = next((v for v in pod["volumes"] if v["name"] == "downloads"), None)
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    if not downloads or mounts.get("downloads") != config.get("MINDORA_TMP_DIR"):
        problems.append("Kubernetes: no emptyDir 'downloads' mounted at MINDORA_TMP_DIR")
    elif k8s_quantity(downloads["emptyDir"]["sizeLimit"]) < conc * cap:
        problems.append("Kubernetes: the downloads emptyDir holds less than concurrency x object cap")
    return problems, f"Kubernetes {limit >> 20}Mi >= {memory_rule.formula(conc, parsed, pool, tmp)}"


def check_memory():
    env = env_example()
    problems = []
    mem = size_bytes(env["MEM_WORKER"])
    for key in ("WORKER_MAX_OBJECT_BYTES", "WORKER_MAX_PARSED_BYTES", "WORKER_PDF_POOL", "WORKER_TMP_DIR"):
        if key not in env:
            problems.append(f"no {key} in .env.example: the worker's memory rule needs it")
    cap = int(env.get("WORKER_MAX_OBJECT_BYTES", 100 * 1024**2))
    parsed = int(env.get("WORKER_MAX_PARSED_BYTES", 32 * 1024**2))
    pool = int(env.get("WORKER_PDF_POOL", 64))
    conc = int(env["WORKER_CONCURRENCY"])
    # The tmpfs /tmp is RAM in the same cgroup.
    tmp = size_bytes(env.get("WORKER_TMP_SIZE", "0"))
    need = memory_rule.need_bytes(conc, parsed, pool, tmp)
    if mem < need:
        problems.append(f"MEM_WORKER {env['MEM_WORKER']} < {memory_rule.formula(conc, parsed, pool, tmp)}")
    if memory_rule.object_problem(cap):
        problems.append(memory_rule.object_problem(cap))
    k8s_problems, k8s_detail = k8s_memory()
    problems += k8s_problems
    if "/tmp:size=${WORKER_TMP_SIZE}" not in compose()["services"]["worker"].get("tmpfs", []):
        problems.append("worker tmpfs /tmp is not capped at ${WORKER_TMP_SIZE}")
    redis_max, redis_mem = size_bytes(env["REDIS_MAXMEMORY"]), size_bytes(env["MEM_REDIS"])
    if redis_max > redis_mem // 2:
        problems.append(f"REDIS_MAXMEMORY {env['REDIS_MAXMEMORY']} > half of MEM_REDIS {env['MEM_REDIS']} (fork headroom)")
    worker = compose()["services"]["worker"]
    w = worker["environment"]
    for var, key in (("MINDORA_MAX_OBJECT_BYTES", "WORKER_MAX_OBJECT_BYTES"),
                     ("MINDORA_MAX_PARSED_BYTES", "WORKER_MAX_PARSED_BYTES"),
                     ("MINDORA_PDF_POOL", "WORKER_PDF_POOL"), ("MINDORA_TMP_DIR", "WORKER_TMP_DIR")):
        if str(w.get(var)) != "${" + key + "}":
            problems.append(f"worker environment lacks {var}: ${{{key}}}")
    # Downloads go to a disk volume, not the RAM tmpfs, and the image makes its directory.
    if "worker-tmp:${WORKER_TMP_DIR}" not in worker.get("volumes", []):
        problems.append("worker has no worker-tmp volume at ${WORKER_TMP_DIR}")
    if "worker-tmp" not in (compose().get("volumes") or {}):
        problems.append("no top-level volume worker-tmp")
    dockerfile = read("worker/Dockerfile")
    tmp_dir = env.get("WORKER_TMP_DIR", "?")
    if f"mkdir -p {tmp_dir}" not in dockerfile or f"chown 10001:10001 {tmp_dir}" not in dockerfile:
        problems.append(f"worker/Dockerfile does not make {tmp_dir} owned by 10001")
    # The code's default (100 MiB, for deployments that set nothing) need not be compose's:
    # compose always passes MINDORA_MAX_OBJECT_BYTES (checked above).
    # Issue 24: downloads stream to a temporary file (MINDORA_TMP_DIR, else /tmp: the tmpfs
    # counted above), never whole in memory.
    fetch = read("pipelines/src/fetch.rs")
    if "temp_file(" not in fetch:
        problems.append("pipelines/src/fetch.rs does not stream downloads to a temporary file")
    rabbit = read("infra/rabbitmq/rabbitmq.conf")
    if re.search(r"^\s*vm_memory_high_watermark\.relative", rabbit, re.M):
        problems.append("rabbitmq.conf uses a relative watermark (computed from host RAM in a container)")
    m = re.search(r"^\s*vm_memory_high_watermark\.absolute\s*=\s*(\S+)", rabbit, re.M)
    limit = size_bytes(env["MEM_RABBITMQ"])
    if not m:
        problems.append("rabbitmq.conf has no vm_memory_high_watermark.absolute")
    elif size_bytes(m.group(1)) > 0.6 * limit + 1024**2:
        problems.append(f"RabbitMQ watermark {m.group(1)} > 0.6 x MEM_RABBITMQ {env['MEM_RABBITMQ']}")
    report("memory", problems,
           f"worker {env['MEM_WORKER']} >= {memory_rule.formula(conc, parsed, pool, tmp)} (measured); "
           f"{k8s_detail}; Redis maxmemory <= half its limit; "
           f"RabbitMQ alarm {m.group(1) if m else '?'} of {env['MEM_RABBITMQ']}")


# ------------------------------------------------------------------ postgres
def check_postgres():
    env = env_example()
    problems = []
    pg = compose()["services"]["postgres"]
    test = " ".join(pg["healthcheck"]["test"])
    if not re.search(r"pg_isready[^\n]*-h\s*(127\.0\.0\.1|localhost)", test):
        problems.append("postgres healthcheck must use TCP (pg_isready -h 127.0.0.1): the initdb server listens on no TCP address")
    if "max_connections=${POSTGRES_MAX_CONNECTIONS}" not in " ".join(pg.get("command", [])):
        problems.append("postgres command does not set max_connections=${POSTGRES_MAX_CONNECTIONS}")
    if not re.search(r"for i in .*\n\s*psql_q -c 'SELECT 1'", read("infra/postgres/init.sh")):
        problems.append("infra/postgres/init.sh does not wait for PostgreSQL before its first statement")
    w = compose()["services"]["worker"]["environment"]
    if str(w.get("MINDORA_DATABASE_MAX_CONNECTIONS")) != "${WORKER_DB_MAX_CONNECTIONS}":
        problems.append("worker environment lacks MINDORA_DATABASE_MAX_CONNECTIONS: ${WORKER_DB_MAX_CONNECTIONS}")
    # Defaults when unset: 10 replicas (the documented scale), the pool's 8, PostgreSQL's 100.
    for key in ("WORKER_MAX_REPLICAS", "WORKER_DB_MAX_CONNECTIONS", "POSTGRES_MAX_CONNECTIONS"):
        if key not in env:
            problems.append(f"no {key} in .env.example")
    need = int(env.get("WORKER_MAX_REPLICAS", 10)) * int(env.get("WORKER_DB_MAX_CONNECTIONS", 8)) + 20
    have = int(env.get("POSTGRES_MAX_CONNECTIONS", 100))
    if have < need:
        problems.append(f"max_connections {have} < {need} (WORKER_MAX_REPLICAS x WORKER_DB_MAX_CONNECTIONS + 20)")
    if "WORKER_MAX_REPLICAS" not in read("infra/scripts/manage.sh"):
        problems.append("manage.sh scale does not enforce WORKER_MAX_REPLICAS")
    report("postgres", problems, f"TCP healthcheck, init waits, max_connections {have} >= {need}")


# ------------------------------------------------------------------ versions
def lock_version(name):
    m = re.search(r'name = "%s"\nversion = "([^"]+)"' % re.escape(name), read("Cargo.lock"))
    return m.group(1) if m else None


def check_versions():
    problems = []
    images = {n: s.get("image", "") for n, s in compose()["services"].items()}
    q = re.search(r":v(\d+)\.(\d+)\.", images["qdrant"])
    client = lock_version("qdrant-client")
    if not q or not client or (q.group(1), q.group(2)) != tuple(client.split(".")[:2]):
        problems.append(f"qdrant server {images['qdrant']} vs qdrant-client {client}: minor versions differ")
    elastic = {n: i.rsplit(":", 1)[1] for n, i in images.items() if i.startswith("docker.elastic.co/")}
    if len(set(elastic.values())) != 1:
        problems.append(f"Elastic images differ in version: {elastic}")
    # The elasticsearch crate (9.x) sends plain application/json (no compatible-with header) and
    # the worker calls only APIs unchanged since 8.x (es-worker lists them), so 8.17 serves it.
    es_crate = lock_version("elasticsearch")
    report("versions", problems,
           f"qdrant {images['qdrant'].rsplit(':', 1)[1]} ~ client {client}; Elastic {sorted(set(elastic.values()))}; "
           f"elasticsearch crate {es_crate}")


# ------------------------------------------------------------------ logs
def check_logs(worker_log):
    problems = []
    fb = yaml.safe_load(read("infra/filebeat/filebeat.yml"))
    template = json.loads(read("infra/elasticsearch/template-container-logs.json"))
    role = json.loads(read("infra/elasticsearch/role-log_shipper.json"))
    views = json.loads(read("infra/kibana/data-views.json"))
    out = fb["output.elasticsearch"]
    pattern = template["index_patterns"][0]
    if not re.fullmatch(pattern.replace(".", r"\.").replace("*", ".*"), out["index"]):
        problems.append(f"Filebeat index {out['index']} does not match the template pattern {pattern}")
    if "data_stream" not in template:
        problems.append("container-logs template is not a data-stream template")
    if out.get("username") != "log_shipper":
        problems.append("Filebeat does not write as log_shipper")
    if fb.get("setup.template.enabled") is not False or fb.get("setup.ilm.enabled") is not False:
        problems.append("Filebeat must not manage templates/ILM (es-init owns them; log_shipper may not)")
    names = {n for e in role["indices"] for n in e["names"]}
    privs = {p for e in role["indices"] for p in e["privileges"]}
    if names != {pattern}:
        problems.append(f"log_shipper index names {sorted(names)} != {pattern}")
    if not privs <= {"create_doc", "auto_configure", "view_index_metadata"} or "create_doc" not in privs:
        problems.append(f"log_shipper index privileges {sorted(privs)} are not append-only")
    if not set(role["cluster"]) <= {"monitor", "read_ilm", "read_pipeline"}:
        problems.append(f"log_shipper cluster privileges {role['cluster']} beyond monitor/read_ilm/read_pipeline")
    svc = compose()["services"].get("filebeat", {})
    if svc.get("image", "").rsplit(":", 1)[-1] != compose()["services"]["elasticsearch"]["image"].rsplit(":", 1)[-1]:
        problems.append("filebeat image version != elasticsearch version")
    if "ELASTIC_SHIPPER_PASSWORD" not in read("infra/elasticsearch/init.sh"):
        problems.append("es-init does not create the log_shipper user")
    if template["template"]["settings"].get("index.lifecycle.name") != "mindora-logs":
        problems.append("container logs have no ILM retention policy")
    if not any(v["title"] == pattern for v in views):
        problems.append(f"no Kibana data view for {pattern}")
    for v in views:
        if v["title"].endswith("-documents-*") and v["timeFieldName"] not in read("pipelines/src/index_fulltext.rs"):
            problems.append(f"data view {v['id']}: time field {v['timeFieldName']} not in the worker's mapping")
    ilm = read("infra/elasticsearch/ilm-logs.json")
    for var in ("ES_ROLLOVER_MAX_SIZE", "ES_ROLLOVER_MAX_AGE", "ES_LOGS_RETENTION"):
        if "${%s}" % var not in ilm:
            problems.append(f"ILM policy ilm-logs.json ignores {var}")
    # Another container's JSON (Elasticsearch's ECS log line) is not decoded into mindora.*.
    es_line = ('{"@timestamp":"2026-12-07T10:00:00.000Z","log.level":"INFO","message":"started",'
               '"ecs.version":"1.2.0","service.name":"ES_ECS","process.thread.name":"main"}')
    if get_path(replay(fb["processors"], es_line, service="elasticsearch"), "mindora") is not None:
        problems.append("Filebeat decodes other containers' JSON (Elasticsearch's ECS lines) into mindora.*")
    # Replay on real worker log lines.
    mapped = mapped_fields(template["template"]["mappings"]["properties"])
    lines = [ln for ln in read(worker_log).splitlines() if ln.startswith("{")]
    if not lines:
        problems.append(f"{worker_log}: no JSON log lines")
    want = {"level": "mindora.level", "job_id": "mindora.job_id", "queue": "mindora.queue",
            "function": "mindora.function", "error": "mindora.error"}
    seen = {k: 0 for k in want}
    for ln in lines:
        raw = json.loads(ln)
        event = replay(fb["processors"], ln)
        flat_raw = set(leaves(raw))
        for key, field in want.items():
            present = key in flat_raw or f"span.{key}" in flat_raw or (key == "job_id" and "task" in flat_raw)
            if not present:
                continue
            seen[key] += 1
            if get_path(event, field) is None:
                problems.append(f"{key} of a worker line does not reach {field}: {ln[:160]}")
            elif field not in mapped:
                problems.append(f"{field} is not mapped by the container-logs template")
    for key, n in seen.items():
        if n == 0:
            problems.append(f"no worker log line in {worker_log} carries {key}: cannot check its mapping")
    problems = sorted(set(problems))
    report("logs", problems,
           f"Filebeat -> {out['index']} as log_shipper; {len(lines)} worker JSON lines replayed, "
           f"{', '.join(f'{k}x{n}' for k, n in seen.items())} mapped; data views {[v['title'] for v in views]}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker-log", default="infra/tests/worker-log-sample.jsonl",
                    help="JSON log lines of a real mindora-worker (MINDORA_LOG_FORMAT=json)")
    args = ap.parse_args()
    for check in (check_images, check_es_worker, check_es_owners, check_names, check_memory,
                  check_postgres, check_versions):
        try:
            check()
        except Exception as e:  # noqa: BLE001 - a crashed check is a failed check
            report(check.__name__.removeprefix("check_"), [f"{type(e).__name__}: {e}"], "")
    try:
        check_logs(args.worker_log)
    except Exception as e:  # noqa: BLE001
        report("logs", [f"{type(e).__name__}: {e}"], "")
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
