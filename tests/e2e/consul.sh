#!/usr/bin/env bash
# Opt-in check of the workers against the real Consul of a running compose stack:
#
#   E2E_KEEP=1 MINDORA_E2E=1 bash tests/e2e/run.sh      # leaves the stack up
#   MINDORA_E2E=1 bash tests/e2e/consul.sh              # then this
#
# E2E_PROJECT (default mindora-e2e) names the compose project, DEPLOY_ENV (default dev) the
# KV environment. Checks: every worker replica is registered as a passing `mindora-worker`
# instance; `consul kv put mindora/$DEPLOY_ENV/worker/concurrency` reaches every replica's
# registration meta and logs; a bad value is rejected with the old one kept; after a Consul
# restart every replica is registered and passing again. Restores the KV values it changed.
set -euo pipefail

if [ "${MINDORA_E2E:-0}" != 1 ]; then
    echo "e2e consul: skipped (set MINDORA_E2E=1 with a running stack)"
    exit 0
fi
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
PROJECT=${E2E_PROJECT:-mindora-e2e}
ENV_NAME=${DEPLOY_ENV:-dev}
KEY="mindora/$ENV_NAME/worker/concurrency"
dc() { docker compose -p "$PROJECT" "$@"; }
# ACLs are on: the management token from the stack's .env (CONSUL_MANAGEMENT_TOKEN, or E2E_ENV_FILE).
ENV_FILE=${E2E_ENV_FILE:-$ROOT/.env}
TOKEN=${CONSUL_MANAGEMENT_TOKEN:-$(sed -n 's/^CONSUL_MANAGEMENT_TOKEN=//p' "$ENV_FILE" 2>/dev/null | tail -n1)}
[ -n "$TOKEN" ] || { echo "e2e consul: CONSUL_MANAGEMENT_TOKEN not set and not in $ENV_FILE"; exit 1; }
consul() { dc exec -T -e CONSUL_HTTP_TOKEN="$TOKEN" consul consul "$@"; }
api() { dc exec -T consul wget -qO- --header "X-Consul-Token: $TOKEN" "http://127.0.0.1:8500$1"; }
passed=0
failed=0
ok() { echo "ok   $1"; passed=$((passed + 1)); }
ko() { echo "FAIL $1"; failed=$((failed + 1)); }

# wait_for SECONDS DESCRIPTION COMMAND...: retry COMMAND until it succeeds.
wait_for() {
    local secs=$1 what=$2
    shift 2
    local end=$((SECONDS + secs))
    while [ $SECONDS -lt $end ]; do
        if "$@" >/dev/null 2>&1; then ok "$what"; return 0; fi
        sleep 2
    done
    ko "$what"
    return 1
}

replicas=$(dc ps -q worker | wc -l)
[ "$replicas" -gt 0 ] || { echo "e2e consul: no worker replicas in project $PROJECT"; exit 1; }

# all_passing: every replica registered with a passing check.
all_passing() {
    api "/v1/health/service/mindora-worker?passing" |
        python3 -c "import json,sys; sys.exit(0 if len(json.load(sys.stdin)) == $replicas else 1)"
}
# meta_is VALUE: every instance announces concurrency VALUE.
meta_is() {
    api "/v1/catalog/service/mindora-worker" | python3 -c "
import json, sys
s = json.load(sys.stdin)
sys.exit(0 if len(s) == $replicas and all(i['ServiceMeta'].get('concurrency') == '$1' for i in s) else 1)"
}

wait_for 120 "$replicas worker replicas registered and passing" all_passing
old=$(consul kv get "$KEY" 2>/dev/null || echo 8)
consul kv put "$KEY" 3 >/dev/null
wait_for 60 "concurrency 3 reaches every replica's registration" meta_is 3
wait_for 30 "the workers log the change old -> new" sh -c \
    "docker compose -p '$PROJECT' logs --since 5m worker | grep 'config change applied' | grep -q concurrency"
consul kv put "$KEY" lots >/dev/null
wait_for 30 "a bad value is rejected" sh -c \
    "docker compose -p '$PROJECT' logs --since 5m worker | grep -q 'config value rejected'"
if meta_is 3; then ok "the last good value stays"; else ko "the last good value stays"; fi
consul kv put "$KEY" "$old" >/dev/null

dc restart consul >/dev/null
wait_for 180 "every replica registered and passing after a Consul restart" all_passing

echo "e2e consul: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
