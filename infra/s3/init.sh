#!/bin/sh
# S3 (SeaweedFS) initialisation, idempotent; the replacement for infra/minio/init.sh (not yet
# wired into docker-compose.yml: see infra/README.md "S3 server"). For every app in APPS a
# bucket (the app name with _ turned into -) with versioning on and an access key "app-{app}"
# (secret derived from APP_CREDENTIALS_SECRET) limited to that bucket; the worker's key reads
# (GetObject, the only call the pipelines make) and lists every app bucket, nothing else;
# S3_ROOT_ACCESS_KEY is the admin identity. Runs `weed shell` (the SeaweedFS image ships weed).
#   SEAWEED_MASTER   master address for weed shell (host:port[.grpcPort]), default s3:9333
set -eu
INIT_NAME=s3-init
INFRA=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=infra/scripts/lib.sh
. "$INFRA/scripts/lib.sh"
master=${SEAWEED_MASTER:-s3:9333}
WEED=${WEED:-weed}

# shell CMD...: run weed shell commands; fail on any reported error.
shell() {
    out=$(printf '%s\n' "$@" | "$WEED" shell -master="$master" 2>&1) || { printf '%s\n' "$out" >&2; return 1; }
    if printf '%s\n' "$out" | grep -Eiq '^(error|.*: error|.*failed)'; then
        printf '%s\n' "$out" >&2
        return 1
    fi
    printf '%s\n' "$out"
}

tries=0
until shell "s3.bucket.list" >/dev/null 2>&1; do
    tries=$((tries + 1))
    [ "$tries" -lt 60 ] || { log "SeaweedFS master $master not reachable"; exit 1; }
    log "waiting for SeaweedFS"
    sleep 2
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
json_str() { printf '"%s"' "$1"; }

identities="{\"name\":\"admin\",\"credentials\":[{\"accessKey\":$(json_str "${S3_ROOT_ACCESS_KEY:?}"),\"secretKey\":$(json_str "${S3_ROOT_SECRET_KEY:?}")}],\"actions\":[\"Admin\",\"Read\",\"Write\",\"List\",\"Tagging\"]}"
worker_actions=""
existing=$(shell "s3.bucket.list")
for app in $(app_list); do
    bucket=$(app_bucket "$app")
    if printf '%s\n' "$existing" | grep -Eq "^[[:space:]]*${bucket}[[:space:]]"; then
        log "app $app: bucket $bucket exists"
    else
        shell "s3.bucket.create -name $bucket" >/dev/null
        log "app $app: bucket $bucket created"
    fi
    shell "s3.bucket.versioning -name $bucket -enable" >/dev/null
    identities="$identities,{\"name\":\"app-$app\",\"credentials\":[{\"accessKey\":\"app-$app\",\"secretKey\":\"$(app_secret "$app" s3)\"}],\"actions\":[\"Read:$bucket\",\"Write:$bucket\",\"List:$bucket\",\"Tagging:$bucket\"]}"
    worker_actions="$worker_actions\"Read:$bucket\",\"List:$bucket\","
    log "app $app: versioning on, access key app-$app (bucket $bucket only)"
done
if [ -n "$worker_actions" ]; then
    identities="$identities,{\"name\":\"mindora-worker\",\"credentials\":[{\"accessKey\":$(json_str "${S3_WORKER_ACCESS_KEY:?}"),\"secretKey\":$(json_str "${S3_WORKER_SECRET_KEY:?}")}],\"actions\":[${worker_actions%,}]}"
fi
printf '{"identities":[%s]}\n' "$identities" > "$tmp/iam.json"
chmod 600 "$tmp/iam.json"
# The whole identity set is replaced each run: a key removed from APPS loses its access.
shell "s3.iam.import -file $tmp/iam.json -apply" >/dev/null
log "identities: admin, mindora-worker (read), one per app"
log "done"
