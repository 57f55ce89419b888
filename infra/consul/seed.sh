#!/bin/sh
# Seed the Consul KV tree from infra/consul/kv-seed.txt for every app in APPS.
# Idempotent: existing keys are left alone unless KV_OVERWRITE=1.
set -eu
INIT_NAME=consul-init
INFRA=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=infra/scripts/lib.sh
. "$INFRA/scripts/lib.sh"
seed=${KV_SEED:-"$INFRA/consul/kv-seed.txt"}
rendered=$(mktemp)
sh "$INFRA/scripts/render-template.sh" "$seed" "$rendered"
env_name=${DEPLOY_ENV:?DEPLOY_ENV is not set}
tab=$(printf '\t')

# put KEY VALUE (POSIX sh has no locals: don't reuse the loop's variable names here)
put() {
    if [ "${KV_OVERWRITE:-0}" != 1 ] && consul kv get "$1" >/dev/null 2>&1; then
        log "keep $1"
    else
        consul kv put "$1" "$2" >/dev/null
        log "put  $1"
    fi
}

apps=$(app_list)
grep -v '^#' "$rendered" | grep -v '^[[:space:]]*$' | while IFS="$tab" read -r key value; do
    case "$key" in
        *"{app}"*)
            for app in $apps; do
                bucket=$(app_bucket "$app")
                k=$(printf '%s' "$key" | sed "s/{app}/$app/g; s/{env}/$env_name/g")
                v=$(printf '%s' "$value" | sed "s/{app}/$app/g; s/{bucket}/$bucket/g; s/{env}/$env_name/g")
                put "$k" "$v"
            done
            ;;
        *)
            k=$(printf '%s' "$key" | sed "s/{env}/$env_name/g")
            v=$(printf '%s' "$value" | sed "s/{env}/$env_name/g")
            put "$k" "$v"
            ;;
    esac
done
rm -f "$rendered"

# ACLs: the worker's policy (read its keys, register itself) and its token, whose secret is
# CONSUL_WORKER_TOKEN from .env. consul-init itself runs with the management token.
if [ -n "${CONSUL_WORKER_TOKEN:-}" ]; then
    rules=$(mktemp)
    while IFS= read -r line; do
        if [ "$line" = "{apps}" ]; then
            for app in $apps; do
                printf 'key_prefix "%s/" {\n  policy = "read"\n}\n' "$app"
            done
        else
            printf '%s\n' "$line"
        fi
    done < "$INFRA/consul/policy-worker.hcl" > "$rules"
    if consul acl policy read -name mindora-worker >/dev/null 2>&1; then
        consul acl policy update -name mindora-worker -rules @"$rules" >/dev/null
    else
        consul acl policy create -name mindora-worker -description "mindora-worker: read settings, register" \
            -rules @"$rules" >/dev/null
    fi
    if ! CONSUL_HTTP_TOKEN=$CONSUL_WORKER_TOKEN consul acl token read -self >/dev/null 2>&1; then
        consul acl token create -secret "$CONSUL_WORKER_TOKEN" -policy-name mindora-worker \
            -description "mindora-worker" >/dev/null
    fi
    rm -f "$rules"
    log "ACL policy mindora-worker and the worker token"
fi
# The named read-only UI login (consul.DOMAIN asks for a token): read keys, services, nodes.
if [ -n "${CONSUL_UI_TOKEN:-}" ]; then
    if ! consul acl policy read -name ui-read >/dev/null 2>&1; then
        printf '%s\n' 'key_prefix "" {' '  policy = "read"' '}' 'service_prefix "" {' '  policy = "read"' '}' \
            'node_prefix "" {' '  policy = "read"' '}' > /tmp/ui-read.hcl
        consul acl policy create -name ui-read -description "Consul UI: read only" -rules @/tmp/ui-read.hcl >/dev/null
    fi
    if ! CONSUL_HTTP_TOKEN=$CONSUL_UI_TOKEN consul acl token read -self >/dev/null 2>&1; then
        consul acl token create -secret "$CONSUL_UI_TOKEN" -policy-name ui-read -description "ui (read only)" >/dev/null
    fi
    log "ACL policy ui-read and the UI token"
fi
# Prometheus scrapes /v1/agent/metrics: agent:read, nothing else.
if [ -n "${CONSUL_PROMETHEUS_TOKEN:-}" ]; then
    if ! consul acl policy read -name prometheus-metrics >/dev/null 2>&1; then
        consul acl policy create -name prometheus-metrics -description "Prometheus: agent metrics" \
            -rules 'agent_prefix "" { policy = "read" }' >/dev/null
    fi
    if ! CONSUL_HTTP_TOKEN=$CONSUL_PROMETHEUS_TOKEN consul acl token read -self >/dev/null 2>&1; then
        consul acl token create -secret "$CONSUL_PROMETHEUS_TOKEN" -policy-name prometheus-metrics \
            -description "prometheus" >/dev/null
    fi
    log "ACL policy prometheus-metrics and Prometheus' token"
fi
log "done"
