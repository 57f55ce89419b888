#!/bin/bash
# MinIO initialisation (idempotent): for every app in APPS a bucket (the app name with _
# turned into -) with versioning on,
# a policy limited to that bucket and an access key ("app-{app}", secret derived from
# APP_CREDENTIALS_SECRET) bound to it. The worker's key gets every app bucket.
# Runs in the minio-init container (the minio image ships mc).
set -euo pipefail
INIT_NAME=minio-init
INFRA=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=infra/scripts/lib.sh
. "$INFRA/scripts/lib.sh"

export MC_CONFIG_DIR=${MC_CONFIG_DIR:-/tmp/.mc}
for _ in {1..30}; do
    if mc alias set local "${MINIO_URL:?}" "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}" >/dev/null 2>&1; then
        break
    fi
    log "waiting for MinIO"
    sleep 2
done
mc admin info local >/dev/null

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# ensure_policy NAME FILE / ensure_user KEY SECRET POLICY
ensure_policy() { mc admin policy create local "$1" "$2" >/dev/null; }
ensure_user() {
    mc admin user add local "$1" "$2" >/dev/null
    # attach fails if already attached; that is fine
    mc admin policy attach local "$3" --user "$1" >/dev/null 2>&1 || true
}

worker_resources=""
for app in $(app_list); do
    bucket=$(app_bucket "$app")
    mc mb --ignore-existing "local/$bucket" >/dev/null
    mc version enable "local/$bucket" >/dev/null
    policy=$(< "$INFRA/minio/app-policy.json")
    printf '%s\n' "${policy//\{bucket\}/$bucket}" > "$tmp/$app.json"
    ensure_policy "app-$app" "$tmp/$app.json"
    ensure_user "app-$app" "$(app_secret "$app" minio)" "app-$app"
    worker_resources="$worker_resources\"arn:aws:s3:::$bucket\",\"arn:aws:s3:::$bucket/*\","
    log "app $app: bucket $bucket (versioned), policy app-$app, access key app-$app"
done

if [ -n "$worker_resources" ]; then
    cat > "$tmp/worker.json" <<JSON
{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:*"],"Resource":[${worker_resources%,}]}]}
JSON
    ensure_policy mindora-worker "$tmp/worker.json"
    ensure_user "${MINIO_WORKER_ACCESS_KEY:?}" "${MINIO_WORKER_SECRET_KEY:?}" mindora-worker
    log "worker key ${MINIO_WORKER_ACCESS_KEY}"
fi
# The named console login (built-in readonly policy) instead of the root user.
ensure_user "${MINIO_UI_USER:?}" "${MINIO_UI_PASSWORD:?}" readonly
log "console user ${MINIO_UI_USER} (readonly)"
log "done"
