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
log "done"
