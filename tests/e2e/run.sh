#!/usr/bin/env bash
# End-to-end test of the whole stack with Docker. Opt-in: does nothing unless MINDORA_E2E=1.
#
#   MINDORA_E2E=1 bash tests/e2e/run.sh
#
# Needs Docker Engine with the compose plugin (v2), curl and python3 on the host, and
# network access to pull images and (inside a throwaway container) pip-install rq.
# It brings up the stack under a separate project name with its own .env and data folder
# (ports E2E_HTTP_PORT/E2E_HTTPS_PORT on 127.0.0.1), then:
#   1. every service healthy, every init job exited 0, with --scale worker=3
#   2. a job enqueued from Python rq (Queue('default').enqueue('mindora.echo', 1, x=2)) is
#      finished by a worker with result {"args": [1], "kwargs": {"x": 2}}
#   3. Prometheus has 3 worker targets up (DNS service discovery)
#   4. Filebeat shipped worker JSON logs to Elasticsearch with the job fields mapped, and
#      kibana-init provisioned the Kibana data views
#   5. Grafana serves the "mindora tasks" dashboard
#   6. nginx: every UI demands its login, unknown Host names and a bare IP get nothing
# and tears everything down (E2E_KEEP=1 keeps it running for inspection).
set -euo pipefail

if [ "${MINDORA_E2E:-0}" != 1 ]; then
    echo "e2e: skipped (set MINDORA_E2E=1 to run the Docker end-to-end suite)"
    exit 0
fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
PROJECT=${E2E_PROJECT:-mindora-e2e}
HTTP_PORT=${E2E_HTTP_PORT:-18080}
HTTPS_PORT=${E2E_HTTPS_PORT:-18443}
REPLICAS=3
TIMEOUT=${E2E_TIMEOUT:-1200}
passed=0
failed=0

for tool in docker curl python3 openssl; do
    command -v "$tool" >/dev/null || { echo "e2e: $tool is required"; exit 1; }
done
docker compose version >/dev/null 2>&1 || { echo "e2e: the docker compose plugin (v2) is required"; exit 1; }

WORK=$(mktemp -d)
ENV_FILE="$WORK/.env"
# The documented path: random secrets that pass secrets-check (Consul tokens as UUIDs).
bash scripts/gen-env.sh "$ENV_FILE" >/dev/null
{
    echo "DATA_ROOT=$WORK/data"
    echo "NGINX_BIND_ADDRESS=127.0.0.1"
    echo "NGINX_HTTP_PORT=$HTTP_PORT"
    echo "NGINX_HTTPS_PORT=$HTTPS_PORT"
    echo "WORKER_IMAGE=mindora-worker:e2e"
    echo "BACKUP_DIR=$WORK/backups"
    # The pipeline check needs a real OpenAI-compatible embeddings API (opt-in).
    if [ -n "${E2E_EMBED_API_KEY:-}" ]; then
        echo "EMBED_API_KEY=$E2E_EMBED_API_KEY"
        [ -z "${E2E_EMBED_BASE_URL:-}" ] || echo "EMBED_BASE_URL=$E2E_EMBED_BASE_URL"
        [ -z "${E2E_EMBED_MODEL:-}" ] || echo "EMBED_MODEL=$E2E_EMBED_MODEL"
        [ -z "${E2E_EMBED_DIMENSIONS:-}" ] || echo "EMBED_DIMENSIONS=$E2E_EMBED_DIMENSIONS"
    fi
} >> "$ENV_FILE"
# later lines win in compose's .env parsing; keep one definition per key for clarity
awk -F= '!/^#/ && NF { last[$1] = NR } { line[NR] = $0; key[NR] = $1 } END {
    for (i = 1; i <= NR; i++) if (line[i] ~ /^#/ || line[i] == "" || last[key[i]] == i) print line[i] }' \
    "$ENV_FILE" > "$ENV_FILE.tmp" && mv "$ENV_FILE.tmp" "$ENV_FILE"
mkdir -p "$WORK/data"
env_get() { sed -n "s/^$1=//p" "$ENV_FILE" | tail -n1; }

dc() { docker compose -p "$PROJECT" --env-file "$ENV_FILE" -f "$ROOT/docker-compose.yml" "$@"; }

cleanup() {
    local rc=$?
    if [ "${E2E_KEEP:-0}" = 1 ]; then
        echo "e2e: E2E_KEEP=1, stack left running (project $PROJECT, env $ENV_FILE)"
        return
    fi
    echo "e2e: tearing down"
    dc down -v --remove-orphans >/dev/null 2>&1 || true
    # data folders belong to container users: remove them from a container
    docker run --rm -v "$WORK:/w" busybox:1.37.0 rm -rf /w/data >/dev/null 2>&1 || true
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT

check() {
    local name=$1
    shift
    if "$@"; then
        passed=$((passed + 1))
        echo "PASS $name"
    else
        failed=$((failed + 1))
        echo "FAIL $name"
    fi
}

# retry SECONDS CMD...: run CMD every 5 s until it succeeds or time runs out.
retry() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 5
    done
}

echo "e2e: building and starting the stack (project $PROJECT, data in $WORK/data)"
dc build worker
dc up -d --scale "worker=$REPLICAS"

all_healthy() {
    dc ps -a --format json | python3 -c '
import json, sys
raw = sys.stdin.read().strip()
rows = json.loads(raw) if raw.startswith("[") else [json.loads(l) for l in raw.splitlines() if l.strip()]
bad = []
for r in rows:
    svc, state, health, code = r["Service"], r["State"], r.get("Health", ""), r.get("ExitCode", 0)
    if svc.endswith("-init"):
        if state != "exited" or code != 0:
            bad.append(f"{svc}:{state}/{code}")
    elif state != "running" or health not in ("healthy",):
        h = health or "no-health"
        bad.append(f"{svc}:{state}/{h}")
workers = sum(1 for r in rows if r["Service"] == "worker" and r["State"] == "running")
if workers != int(sys.argv[1]):
    bad.append(f"worker replicas {workers}")
if bad:
    print("waiting: " + " ".join(sorted(bad)), file=sys.stderr)
    sys.exit(1)
' "$REPLICAS"
}
check "all services healthy, init jobs exited 0, $REPLICAS worker replicas" retry "$TIMEOUT" all_healthy

NETWORK="${PROJECT}_backend"
REDIS_PASSWORD=$(env_get REDIS_PASSWORD)
rq_roundtrip() {
    docker run --rm --network "$NETWORK" -e REDIS_PASSWORD="$REDIS_PASSWORD" python:3.12-slim sh -c '
pip install -q --disable-pip-version-check --root-user-action=ignore "rq==2.12.0" "redis>=5,<9" >/dev/null 2>&1
python - <<PY
import os, sys, time
from redis import Redis
from rq import Queue
conn = Redis(host="redis", port=6379, password=os.environ["REDIS_PASSWORD"])
job = Queue("default", connection=conn).enqueue("mindora.echo", 1, x=2)
deadline = time.time() + 60
while time.time() < deadline:
    status = job.get_status(refresh=True)
    if status in ("finished", "failed"):
        break
    time.sleep(0.5)
result = job.return_value() if hasattr(job, "return_value") else job.result
print("job", job.id, "status", status, "result", result)
sys.exit(0 if status == "finished" and result == {"args": [1], "kwargs": {"x": 2}} else 1)
PY'
}
check "Python rq job mindora.echo(1, x=2) finished by a worker with the echoed result" rq_roundtrip

# Issue 5's end to end on the real stack: a document in S3, pipelines.process_document
# enqueued from Python rq, then its chunks in Elasticsearch and its vectors in Qdrant.
# Needs a real embeddings API: E2E_EMBED_API_KEY (+ optional E2E_EMBED_BASE_URL, _MODEL,
# _DIMENSIONS, e.g. a local Ollama's OpenAI-compatible endpoint); skipped otherwise.
pipeline_roundtrip() {
    local app bucket
    app=$(env_get APPS | cut -d, -f1)
    bucket=${app//_/-}
    # the app's own key, derived like s3-init does (infra/scripts/lib.sh app_secret)
    docker run --rm --network "$NETWORK" -v "$ROOT/infra:/infra:ro" --entrypoint /bin/sh \
        -e S3_URL=http://s3:8333 -e S3_ACCESS_KEY="app-$app" \
        -e S3_SECRET_KEY="$(printf '%s' "$(env_get APP_CREDENTIALS_SECRET):$app:s3" | sha256sum | cut -c1-32)" \
        -e BUCKET="$bucket" python:3.13.15-slim -c '
printf "mindora end to end.\n\nA document uploaded to S3 becomes searchable by words and by meaning.\n" > /tmp/e2e.txt &&
python3 /infra/scripts/s3sync.py put "$BUCKET" e2e/doc.txt /tmp/e2e.txt' || return 1
    docker run --rm --network "$NETWORK" -e REDIS_PASSWORD="$REDIS_PASSWORD" -e APP="$app" \
        -e BUCKET="$bucket" -e ELASTIC_PASSWORD="$(env_get ELASTIC_PASSWORD)" \
        -e QDRANT_API_KEY="$(env_get QDRANT_API_KEY)" python:3.12-slim sh -c '
pip install -q --disable-pip-version-check --root-user-action=ignore "rq==2.12.0" "redis>=5,<9" >/dev/null 2>&1
python - <<PY
import base64, json, os, sys, time, urllib.request
from redis import Redis
from rq import Queue
conn = Redis(host="redis", port=6379, password=os.environ["REDIS_PASSWORD"])
job = Queue("ai_processing_tasks", connection=conn).enqueue(
    "pipelines.process_document", app=os.environ["APP"], bucket=os.environ["BUCKET"], key="e2e/doc.txt")
deadline = time.time() + 300
while job.get_status(refresh=True) not in ("finished", "failed") and time.time() < deadline:
    time.sleep(1)
summary = job.return_value()
print("job", job.id, job.get_status(), summary, job.meta, file=sys.stderr)
if job.get_status() != "finished":
    print(job.latest_result().exc_string, file=sys.stderr)
    sys.exit(1)
def get(url, headers):
    return json.load(urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30))
auth = "Basic " + base64.b64encode(("elastic:" + os.environ["ELASTIC_PASSWORD"]).encode()).decode()
get("http://elasticsearch:9200/_refresh", {"Authorization": auth})
# through the read alias the stack advertises in Consul KV (added by the worker template)
es = get("http://elasticsearch:9200/" + os.environ["APP"] + "-documents/_count", {"Authorization": auth})["count"]
qd = get("http://qdrant:6333/collections/" + os.environ["APP"] + "_documents", {"api-key": os.environ["QDRANT_API_KEY"]})["result"]["points_count"]
print("elasticsearch chunks", es, "qdrant points", qd, file=sys.stderr)
sys.exit(0 if es >= 1 and qd >= 1 else 1)
PY'
}
if [ -n "${E2E_EMBED_API_KEY:-}" ]; then
    check "pipelines.process_document from Python rq: chunks in Elasticsearch and Qdrant" pipeline_roundtrip
else
    echo "SKIP pipelines.process_document (set E2E_EMBED_API_KEY for a real embeddings API)"
fi

workers_up() {
    dc exec -T prometheus wget -qO- 'http://127.0.0.1:9090/api/v1/targets?state=active' | python3 -c '
import json, sys
t = json.load(sys.stdin)["data"]["activeTargets"]
up = [x["labels"]["instance"] for x in t if x["labels"].get("job") == "worker" and x["health"] == "up"]
print("worker targets up:", up, file=sys.stderr)
sys.exit(0 if len(up) == int(sys.argv[1]) else 1)
' "$REPLICAS"
}
check "Prometheus has $REPLICAS worker targets up (dns_sd_configs)" retry 120 workers_up

# Log aggregation: Filebeat ships the worker's JSON lines with the job fields mapped.
ELASTIC_PASSWORD=$(env_get ELASTIC_PASSWORD)
# Kibana's API is called from inside its container: nginx keeps its own login in front of every
# UI and does not pass it on, so API clients use the backend network.
worker_logs_in_es() {
    dc exec -T kibana curl -fsS -u "elastic:$ELASTIC_PASSWORD" \
        -H 'kbn-xsrf: e2e' -H 'Content-Type: application/json' \
        "http://127.0.0.1:5601/api/console/proxy?path=mindora-logs-containers/_count&method=POST" \
        --data-binary '{"query":{"bool":{"filter":[{"term":{"container.labels.com_docker_compose_service":"worker"}},{"exists":{"field":"mindora.job_id"}},{"exists":{"field":"mindora.level"}}]}}}' |
        python3 -c 'import json, sys; n = json.load(sys.stdin)["count"]; print("worker log lines with job ids:", n, file=sys.stderr); sys.exit(0 if n > 0 else 1)'
}
check "Filebeat shipped worker JSON logs with mindora.job_id/level mapped (data stream mindora-logs-containers)" retry 180 worker_logs_in_es

kibana_data_views() {
    dc exec -T kibana curl -fsS -u "elastic:$ELASTIC_PASSWORD" "http://127.0.0.1:5601/api/data_views" |
        python3 -c 'import json, sys; ids = {v["id"] for v in json.load(sys.stdin)["data_view"]}; print("data views:", sorted(ids), file=sys.stderr); sys.exit(0 if {"mindora-logs", "mindora-documents"} <= ids else 1)'
}
check "Kibana data views mindora-logs and mindora-documents provisioned by kibana-init" retry 60 kibana_data_views

GF_USER=$(env_get GRAFANA_ADMIN_USER)
GF_PASSWORD=$(env_get GRAFANA_ADMIN_PASSWORD)
grafana_dashboard() {
    dc exec -T grafana wget -qO- --header "Authorization: Basic $(printf '%s:%s' "$GF_USER" "$GF_PASSWORD" | base64 | tr -d '\n')" \
        "http://127.0.0.1:3000/api/dashboards/uid/mindora-tasks" |
        python3 -c 'import json, sys; d = json.load(sys.stdin)["dashboard"]; print("dashboard:", d["title"], len(d["panels"]), "panels", file=sys.stderr); sys.exit(0 if d["title"] == "mindora tasks" else 1)'
}
check "Grafana serves the 'mindora tasks' dashboard" retry 60 grafana_dashboard

# nginx: closed by default (issue 23).
ADMIN_USER=$(env_get ADMIN_USER)
ADMIN_PASSWORD=$(env_get ADMIN_PASSWORD)
ui_status() { # HOST [curl args...]: the HTTP status nginx answers for HOST
    local host=$1
    shift
    curl -sk -o /dev/null -w '%{http_code}' --resolve "$host:$HTTPS_PORT:127.0.0.1" "$@" "https://$host:$HTTPS_PORT/"
}
nginx_logins() {
    local ui st
    for ui in grafana kibana rabbitmq consul prometheus alertmanager rq; do
        st=$(ui_status "$ui.localhost")
        [ "$st" = 401 ] || { echo "$ui without login: $st" >&2; return 1; }
    done
    st=$(ui_status grafana.localhost -u "$ADMIN_USER:$ADMIN_PASSWORD")
    case "$st" in 200|302) ;; *) echo "grafana with the nginx login: $st" >&2; return 1 ;; esac
    st=$(ui_status rq.localhost -u "$ADMIN_USER:$ADMIN_PASSWORD")
    [ "$st" = 200 ] || { echo "rq-dashboard with the nginx login: $st" >&2; return 1; }
}
check "every UI demands the nginx login; with it Grafana and rq-dashboard answer" retry 30 nginx_logins
unknown_hosts() {
    local host
    for host in kibana.localhost.evil.test kibana.evil.test 127.0.0.1; do
        if curl -sk -o /dev/null --resolve "$host:$HTTPS_PORT:127.0.0.1" "https://$host:$HTTPS_PORT/"; then
            echo "$host answered" >&2; return 1
        fi
    done
}
check "unknown Host names and a bare IP get nothing" unknown_hosts

echo "e2e: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
