#!/usr/bin/env bash
# Static validation of the whole stack (no Docker engine needed). Run from the repo root:
#
#   bash infra/check.sh [--worker-metrics FILE] [--worker-log FILE]
#
# Installs what it needs through infra/tests/setup.sh (idempotent, quick when present): Debian packages docker-compose
# (pinned: its compose/config/compose_spec.json is the Compose schema checked against),
# prometheus (promtool), prometheus-alertmanager (amtool), nginx, shellcheck, openssl; and
# a Python venv with jsonschema + pyyaml under ${MINDORA_CACHE:-$HOME/.cache/mindora}.
# Reads nothing outside the repository and what these install steps put on the machine.
#
# Environment:
#   MINDORA_WORKER_METRICS  (or --worker-metrics FILE) the scraped /metrics text of a real
#                           mindora-worker. When given, the file must exist, and every mindora_*
#                           metric of the dashboards/alerts must appear in it. When not given,
#                           mindora_* names are checked against the worker metric contract only.
#   MINDORA_WORKER_LOG      (or --worker-log FILE) JSON log lines of a real mindora-worker, to
#                           replay the Filebeat processors on (default: the committed sample
#                           infra/tests/worker-log-sample.jsonl, captured from a real worker)
#   MINDORA_COMPOSE_SCHEMA  Compose Specification schema (default: the one Debian's pinned
#                           docker-compose package ships)
#   MINDORA_CHECK_NO_INSTALL=1  never install; fail the checks whose tools are missing
#
# Prints PASS/FAIL per check and ends with "infra: N passed, M failed"; exit 1 on failure.
set -euo pipefail

OLDPWD_CALLER=$PWD
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
CACHE=${MINDORA_CACHE:-$HOME/.cache/mindora}
VENV="$CACHE/infra-venv"
# Debian bookworm's docker-compose (pinned in infra/tests/setup.sh) ships the Compose schema.
SCHEMA=${MINDORA_COMPOSE_SCHEMA:-/usr/lib/python3/dist-packages/compose/config/compose_spec.json}
WORKER_METRICS=${MINDORA_WORKER_METRICS:-}
WORKER_LOG=${MINDORA_WORKER_LOG:-}
while [ $# -gt 0 ]; do
    case "$1" in
        --worker-metrics) WORKER_METRICS=${2:?--worker-metrics needs a FILE}; shift 2 ;;
        --worker-metrics=*) WORKER_METRICS=${1#*=}; shift ;;
        --worker-log) WORKER_LOG=${2:?--worker-log needs a FILE}; shift 2 ;;
        --worker-log=*) WORKER_LOG=${1#*=}; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "infra/check.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
# A relative path is relative to where the caller stood, not to the repo root.
if [ -n "$WORKER_METRICS" ] && [ "${WORKER_METRICS#/}" = "$WORKER_METRICS" ]; then
    WORKER_METRICS="$OLDPWD_CALLER/$WORKER_METRICS"
fi
if [ -n "$WORKER_LOG" ] && [ "${WORKER_LOG#/}" = "$WORKER_LOG" ]; then
    WORKER_LOG="$OLDPWD_CALLER/$WORKER_LOG"
fi
WORKER_LOG=${WORKER_LOG:-$ROOT/infra/tests/worker-log-sample.jsonl}

passed=0
failed=0
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

pass() { passed=$((passed + 1)); printf 'PASS %s\n' "$*"; }
fail() { failed=$((failed + 1)); printf 'FAIL %s\n' "$*"; }

# run NAME CMD...: PASS/FAIL on the exit code; the output is shown on failure only.
run() {
    local name=$1
    shift
    # Run in a subshell with errexit live (it is ignored inside `if`), so any failing
    # command of a multi-step check fails the check.
    local rc=0
    set +e
    (set -e; "$@") > "$TMP/out" 2>&1
    rc=$?
    set -e
    if [ "$rc" -eq 0 ]; then
        pass "$name"
    else
        fail "$name"
        sed 's/^/    /' "$TMP/out" | tail -n 40
    fi
}

# ------------------------------------------------------------------ tools
install_tools() {
    bash "$ROOT/infra/tests/setup.sh"
}

install_tools
PATH="$PATH:/usr/sbin:/sbin"
PY="$VENV/bin/python"
[ -x "$PY" ] || PY=python3

# Environment for rendering templates: the values of .env.example.
load_example_env() {
    local line
    while IFS= read -r line || [ -n "$line" ]; do
        case "$line" in ''|'#'*) continue ;; esac
        export "${line%%=*}=${line#*=}"
    done < .env.example
}

# ------------------------------------------------------------------ compose
check_compose_schema() {
    [ -f "$SCHEMA" ] || { echo "schema not found: $SCHEMA (bash infra/tests/setup.sh installs it)"; return 1; }
    "$PY" infra/scripts/check-compose.py --compose docker-compose.yml --env .env.example --schema "$SCHEMA" --infra infra
}

check_compose_config() {
    local d="$TMP/compose"
    mkdir -p "$d"
    cp docker-compose.yml "$d/"
    cp .env.example "$d/.env"
    cp -r infra "$d/infra"
    mkdir -p "$d/worker" && cp worker/Dockerfile "$d/worker/"
    mkdir -p "$d/examples" && cp -r examples/fastapi-app "$d/examples/"
    (cd "$d" && docker-compose config -q)
    (cd "$d" && docker-compose config --services | grep -qx worker) || { echo "worker service missing"; return 1; }
}

# check-compose.py prints one PASS/FAIL line per check; count them.
out=$(check_compose_schema 2>&1) || true
printf '%s\n' "$out"
n_pass=$(printf '%s\n' "$out" | grep -c '^PASS' || true)
n_fail=$(printf '%s\n' "$out" | grep -c '^FAIL' || true)
if [ "$n_pass" -eq 0 ] && [ "$n_fail" -eq 0 ]; then n_fail=1; fi
passed=$((passed + n_pass))
failed=$((failed + n_fail))
run "docker-compose config (docker-compose $(docker-compose version --short 2>/dev/null || echo '?'), .env from .env.example)" check_compose_config

# ------------------------------------------------------------------ Prometheus / Alertmanager
load_example_env
check_prometheus() {
    sh infra/scripts/render-template.sh infra/prometheus/prometheus.yml "$TMP/prometheus.yml"
    sed -i "s#/infra/prometheus/rules#$ROOT/infra/prometheus/rules#" "$TMP/prometheus.yml"
    grep -q "dns_sd_configs" "$TMP/prometheus.yml"
    promtool check config "$TMP/prometheus.yml"
}
run "promtool check config (rendered infra/prometheus/prometheus.yml)" check_prometheus
run "promtool check rules infra/prometheus/rules/*.yml" promtool check rules infra/prometheus/rules/*.yml

check_alertmanager() {
    sh infra/scripts/render-template.sh infra/alertmanager/alertmanager.yml "$TMP/alertmanager.yml"
    amtool check-config "$TMP/alertmanager.yml"
}
run "amtool check-config (rendered infra/alertmanager/alertmanager.yml)" check_alertmanager

# ------------------------------------------------------------------ nginx
check_nginx() {
    local p="$TMP/nginx"
    mkdir -p "$p/mindora" "$p/logs"
    cp -r infra/nginx/. "$p/"
    # Throwaway self-signed cert + htpasswd made by the real script.
    DOMAIN=localhost ADMIN_USER=check ADMIN_PASSWORD=check sh infra/scripts/gen-certs.sh "$p/mindora" >/dev/null
    sed -i "s#/etc/nginx/conf.d/#$p/conf.d/#; s#/var/run/nginx.pid#$p/nginx.pid#" "$p/nginx.conf"
    sed -i "s#/etc/nginx/mindora/#$p/mindora/#g; s#/etc/nginx/snippets/#$p/snippets/#g" "$p"/conf.d/*.conf "$p"/snippets/*.conf
    if [ ! -f /etc/nginx/mime.types ]; then
        sed -i "s#/etc/nginx/mime.types#$p/mime.types#" "$p/nginx.conf"
        echo 'types { text/html html; }' > "$p/mime.types"
    fi
    nginx -t -p "$p/" -c "$p/nginx.conf" -e "$p/logs/error.log"
}
run "nginx -t (infra/nginx, throwaway cert + htpasswd)" check_nginx

# ------------------------------------------------------------------ shell scripts
check_shellcheck() {
    local scripts=()
    while IFS= read -r f; do scripts+=("$f"); done < <(
        { find . \( -path ./target -o -path ./.git \) -prune -o -type f -name '*.sh' -print; echo .ci/run; } | sort)
    [ "${#scripts[@]}" -gt 0 ] || return 1
    echo "${#scripts[@]} scripts"
    shellcheck -x "${scripts[@]}"
}
run "shellcheck (every *.sh in the repo, and .ci/run)" check_shellcheck

# ------------------------------------------------------------------ provisioning files
check_files() {
    "$PY" - <<'PY'
import json, os, re, subprocess, sys, tempfile, yaml
def render(path):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "rendered")
        subprocess.run(["sh", "infra/scripts/render-template.sh", path, out], check=True)
        return open(out).read()
bad = 0
count = 0
for root, _, files in os.walk("infra"):
    for fn in sorted(files):
        p = os.path.join(root, fn)
        if not fn.endswith((".json", ".yml", ".yaml")):
            continue
        text = open(p).read()
        if "${" in text:  # a template: check it as rendered with .env.example values
            text = render(p)
        try:
            json.loads(text) if fn.endswith(".json") else yaml.safe_load(text)
            count += 1
        except Exception as e:  # noqa: BLE001
            print(f"{p}: {e}")
            bad += 1
# Consul seed: KEY<TAB>JSON per line
seed = render("infra/consul/kv-seed.txt")
keys = []
for n, line in enumerate(seed.splitlines(), 1):
    if not line.strip() or line.startswith("#"):
        continue
    key, _, value = line.partition("\t")
    try:
        json.loads(value.replace("{app}", "x").replace("{env}", "dev"))
        keys.append(key)
    except Exception as e:  # noqa: BLE001
        print(f"kv-seed.txt:{n}: {e}")
        bad += 1
count += 1
want = {"{app}/{env}/database", "{app}/{env}/ai", "{app}/{env}/features", "{app}/{env}/security", "{app}/shared", "global/common"}
if not want <= set(keys):
    print(f"kv-seed.txt lacks {sorted(want - set(keys))}")
    bad += 1
print(f"{count} files parsed")
sys.exit(1 if bad else 0)
PY
}
run "JSON/YAML validity of every infra/ provisioning file (templates rendered) and the Consul KV seed" check_files

check_rabbitmq_topology() {
    "$PY" - <<'PY'
import json, sys
d = json.load(open("infra/rabbitmq/definitions.json"))
q = {x["name"]: x["arguments"] for x in d["queues"]}
ex = {x["name"]: x["type"] for x in d["exchanges"]}
errs = []
a = q.get("ai_processing_tasks")
if a is None or a.get("x-max-priority") != 10 or a.get("x-dead-letter-exchange") != "mindora.dlx":
    errs.append("ai_processing_tasks must be a priority queue (10) dead-lettering to mindora.dlx")
if "ai_processing_tasks.dlq" not in q:
    errs.append("ai_processing_tasks.dlq missing")
retries = [n for n in q if n.startswith("ai_processing_tasks.retry.")]
for n in retries:
    s = int(n.rsplit(".", 1)[1])
    args = q[n]
    if args.get("x-message-ttl") != s * 1000 or args.get("x-dead-letter-exchange") != "" or args.get("x-dead-letter-routing-key") != "ai_processing_tasks":
        errs.append(f"{n}: TTL {s}s and dead-letter back to ai_processing_tasks expected")
if len(retries) < 3:
    errs.append("fewer than 3 retry delay queues")
for n, t in (("system_events", "fanout"), ("inter_app_communication", "topic"), ("mindora.dlx", "direct")):
    if ex.get(n) != t:
        errs.append(f"exchange {n} must be {t}")
if "user_notifications" not in q:
    errs.append("user_notifications missing")
app = json.load(open("infra/rabbitmq/definitions-app.json"))
if not any(x["name"] == "{app}_internal_tasks" for x in app["queues"]):
    errs.append("{app}_internal_tasks missing from definitions-app.json")
print("\n".join(errs) or f"{len(q)} queues, {len(ex)} exchanges, retries {sorted(retries)}")
sys.exit(1 if errs else 0)
PY
}
run "RabbitMQ definitions (priority queue, DLX/DLQ, retry TTL queues, exchanges)" check_rabbitmq_topology

check_dockerfile() {
    "$PY" - <<'PY'
import re, sys
df = open("worker/Dockerfile").read()
cargo = open("Cargo.toml").read()
members = re.search(r"members\s*=\s*\[([^\]]*)\]", cargo).group(1)
members = re.findall(r'"([^"]+)"', members)
errs = []
for m in members:
    if f"COPY {m}/Cargo.toml" not in df:
        errs.append(f"workspace member {m}: manifest not copied into the dependency layer")
    if not re.search(rf"^COPY {re.escape(m)} {re.escape(m)}$", df, re.M):
        errs.append(f"workspace member {m}: sources not copied")
if len(re.findall(r"^FROM ", df, re.M)) < 2:
    errs.append("not multi-stage")
if not re.search(r"^USER (?!0|root)\S+", df, re.M):
    errs.append("no non-root USER")
if not re.search(r'^HEALTHCHECK .*\n?.*"mindora-worker", "healthcheck"', df, re.M):
    errs.append("HEALTHCHECK must run mindora-worker healthcheck")
if "cargo build --release --locked -p mindora-worker-app --bin mindora-worker" not in df:
    errs.append("release build of -p mindora-worker missing")
print("\n".join(errs) or f"multi-stage, cached dependency layer for members {members}, non-root, healthcheck")
sys.exit(1 if errs else 0)
PY
}
run "worker/Dockerfile (members copied, multi-stage, non-root, HEALTHCHECK)" check_dockerfile

# ------------------------------------------------------------------ stack vs code
# Image references, ES privileges vs API calls, names, memory, PostgreSQL, versions, logs.
out=$("$PY" infra/scripts/check-stack.py --worker-log "$WORKER_LOG" 2>&1) || true
printf '%s\n' "$out"
n_pass=$(printf '%s\n' "$out" | grep -c '^PASS' || true)
n_fail=$(printf '%s\n' "$out" | grep -c '^FAIL' || true)
if [ "$n_pass" -eq 0 ] && [ "$n_fail" -eq 0 ]; then n_fail=1; fi
passed=$((passed + n_pass))
failed=$((failed + n_fail))

# ------------------------------------------------------------------ image minimums
check_image_minimums() {
    local dfs=()
    while IFS= read -r f; do dfs+=(--dockerfile "$f"); done < <(find infra worker -name '*Dockerfile*' -type f | sort)
    "$PY" infra/scripts/check-image-minimums.py --compose docker-compose.yml "${dfs[@]}"
}
run "every pinned image at or above its minimum patched version (infra/tests/image-minimums.txt)" check_image_minimums

check_image_minimums_refuse_old() {
    # The pins before issue 23 must all be refused (exceptions ignored): a downgrade fails CI.
    local out n want
    if out=$("$PY" infra/scripts/check-image-minimums.py --no-exceptions --images infra/tests/image-pins-before-issue23.txt); then
        echo "$out"; echo "the old pins passed"; return 1
    fi
    n=$(printf '%s\n' "$out" | grep -c '^BELOW ' || true)
    want=$(grep -cv -e '^#' -e '^$' infra/tests/image-pins-before-issue23.txt)
    printf '%s\n' "$out" | tail -n 1
    [ "$n" -eq "$want" ] || { echo "$n of $want old pins refused"; return 1; }
}
run "the image-minimum check refuses each of the pins before issue 23" check_image_minimums_refuse_old

# ------------------------------------------------------------------ secrets
check_secrets_gate() {
    local gen="$TMP/gen.env" out
    if out=$(sh infra/scripts/check-secrets.sh .env.example 2>&1); then
        echo "$out"; echo ".env.example passed the secrets check"; return 1
    fi
    printf '%s\n' "$out" | grep -q '^secrets-check: ADMIN_PASSWORD: ' || { echo "$out"; return 1; }
    printf '%s\n' "$out" | tail -n 1
    bash scripts/gen-env.sh "$gen" >/dev/null
    sh infra/scripts/check-secrets.sh "$gen"
    # a weak value is refused by name
    sed 's/^REDIS_PASSWORD=.*/REDIS_PASSWORD=password123456789/' "$gen" > "$TMP/weak.env"
    if out=$(sh infra/scripts/check-secrets.sh "$TMP/weak.env" 2>&1); then echo "weak REDIS_PASSWORD passed"; return 1; fi
    printf '%s\n' "$out" | grep -q '^secrets-check: REDIS_PASSWORD: a well-known' || { echo "$out"; return 1; }
}
run "secrets-check refuses .env.example (naming each variable) and a weak value; a scripts/gen-env.sh .env passes" check_secrets_gate

check_reserved_app_name() {
    # An app named mindora would share mindora-logs-* with the container-logs data stream.
    if APPS=demo,mindora sh -c '. infra/scripts/lib.sh; app_list' >/dev/null 2>"$TMP/err"; then
        echo "APPS=demo,mindora accepted"; return 1
    fi
    cat "$TMP/err"
    APPS=demo,billing_eu sh -c '. infra/scripts/lib.sh; app_list' >/dev/null
}
run "app name mindora refused (its logs indices would fall under the container-logs template)" check_reserved_app_name

check_self_contained() {
    # Nothing of the checks may depend on files beside the repository.
    if grep -rn --include='*.sh' --include='*.py' -e '\.\./shared' -e 'ROOT/\.\.' infra tests/e2e; then return 1; fi
    if grep -n -e '\.\./shared' -e 'ROOT/\.\.' .ci/run; then return 1; fi
    echo "infra/, tests/e2e/ and .ci/run name no path beside the repository"
}
run "infra checks read nothing outside the repository" check_self_contained

# ------------------------------------------------------------------ alert rule unit tests
check_rule_tests() {
    promtool test rules infra/prometheus/tests/*.yml
    "$PY" - <<'PY'
import glob, sys, yaml
alerts = {r["alert"] for f in glob.glob("infra/prometheus/rules/*.yml") for g in yaml.safe_load(open(f))["groups"]
          for r in g["rules"] if "alert" in r}
fired = set()
for f in glob.glob("infra/prometheus/tests/*.yml"):
    for t in yaml.safe_load(open(f))["tests"]:
        for a in t.get("alert_rule_test", []):
            if a.get("exp_alerts"):
                fired.add(a["alertname"])
missing = sorted(alerts - fired)
print(f"{len(alerts)} alert rules, {len(fired & alerts)} with a firing unit test" + (f"; untested: {missing}" if missing else ""))
sys.exit(1 if missing else 0)
PY
}
run "promtool test rules: every alert rule has a unit test that fires it" check_rule_tests

# ------------------------------------------------------------------ dashboards and alerts
check_metrics() {
    local args=(--dashboards infra/grafana/dashboards --rules infra/prometheus/rules --emit-promtool-rules "$TMP/dashboard-queries.yml")
    if [ -n "$WORKER_METRICS" ]; then
        args+=(--worker-metrics "$WORKER_METRICS")
    fi
    "$PY" infra/scripts/check-dashboard-metrics.py "${args[@]}"
    echo "--- PromQL syntax of every dashboard query"
    promtool check rules "$TMP/dashboard-queries.yml"
}
if [ -n "$WORKER_METRICS" ]; then
    label="dashboards + alert rules name only real metrics (worker: $WORKER_METRICS)"
else
    label="dashboards + alert rules name only real metrics (exporters; worker metrics vs contract only)"
fi
run "$label" check_metrics
if [ -z "$WORKER_METRICS" ]; then
    echo "NOTE set MINDORA_WORKER_METRICS=FILE (a scraped worker /metrics) to check mindora_* names against the real worker"
fi

check_dashboards_present() {
    "$PY" - <<'PY'
import json, sys
titles = {json.load(open(f"infra/grafana/dashboards/{f}"))["title"] for f in ("mindora-tasks.json", "infrastructure.json")}
need = {"mindora tasks", "infrastructure"}
print(sorted(titles))
sys.exit(0 if need <= titles else 1)
PY
}
run "Grafana dashboards 'mindora tasks' and 'infrastructure' provisioned as files" check_dashboards_present

echo "infra: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
