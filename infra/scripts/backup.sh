#!/usr/bin/env bash
# The quoted scripts below run inside the containers and expand their variables there.
# shellcheck disable=SC2016
# Back up every store of a running stack into BACKUP_DIR/mindora-YYYYmmdd-HHMMSS.tar.gz and
# delete archives older than BACKUP_RETENTION_DAYS. Called by `manage.sh backup` (which
# loads .env); runs `docker compose exec` against the live services, no downtime.
#
# Archive contents:
#   postgres.sql            pg_dumpall (roles, schemas, data)
#   redis.rdb               RDB snapshot fetched with redis-cli --rdb
#   consul-kv.json          consul kv export
#   minio/<bucket>/...      mc mirror of every bucket (current object versions)
#   elasticsearch.tar       the fs snapshot repository after a fresh snapshot
#   qdrant.tar              a fresh snapshot of every collection
#   env                     the .env in use (secrets: the archive is mode 600)
#   MANIFEST                timestamp, images, apps
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
: "${BACKUP_DIR:?load .env first (use manage.sh backup)}"
: "${BACKUP_RETENTION_DAYS:?}"

compose() {
    if docker compose version >/dev/null 2>&1; then docker compose "$@"; else docker-compose "$@"; fi
}
log() { printf '[backup] %s\n' "$*"; }

stamp=$(date -u +%Y%m%d-%H%M%S)
mkdir -p "$BACKUP_DIR"
umask 077
work=$(mktemp -d "$BACKUP_DIR/.mindora-$stamp.XXXXXX")
trap 'rm -rf "$work"' EXIT

log "PostgreSQL: pg_dumpall"
compose exec -T postgres sh -c 'pg_dumpall -U "$POSTGRES_USER" --clean --if-exists' > "$work/postgres.sql"

log "Redis: RDB"
compose exec -T redis sh -c 'redis-cli --no-auth-warning -a "$REDIS_PASSWORD" --rdb /tmp/backup.rdb >/dev/null && cat /tmp/backup.rdb && rm -f /tmp/backup.rdb' > "$work/redis.rdb"

log "Consul: KV export"
compose exec -T consul consul kv export '' > "$work/consul-kv.json"

log "MinIO: mirror buckets"
mkdir -p "$work/minio"
compose run --rm --no-deps -T -v "$work/minio:/backup" --entrypoint /bin/bash minio-init -c '
    set -euo pipefail
    mc alias set local "$MINIO_URL" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null
    for b in $(mc ls --json local | sed -n "s/.*\"key\":\"\([^\"]*\)\/\".*/\1/p"); do
        mc mirror --quiet --preserve "local/$b" "/backup/$b" >/dev/null
        echo "  bucket $b"
    done'

log "Elasticsearch: snapshot"
compose exec -T elasticsearch sh -c "curl -fsS -u \"elastic:\$ELASTIC_PASSWORD\" -X PUT -H 'Content-Type: application/json' \
    'http://127.0.0.1:9200/_snapshot/mindora/snap-$stamp?wait_for_completion=true' \
    -d '{\"indices\":\"*,-.*\",\"include_global_state\":false}' >/dev/null"
compose exec -T elasticsearch tar -C /usr/share/elasticsearch/snapshots -cf - . > "$work/elasticsearch.tar"

log "Qdrant: collection snapshots"
compose run --rm --no-deps -T --entrypoint /bin/sh qdrant-init -c '
    set -eu
    for c in $(curl -fsS -H "api-key: $QDRANT_API_KEY" "$QDRANT_URL/collections" | tr "{},[]" "\n\n\n\n\n" | sed -n "s/^\"name\":\"\(.*\)\"$/\1/p"); do
        curl -fsS -X POST -H "api-key: $QDRANT_API_KEY" "$QDRANT_URL/collections/$c/snapshots?wait=true" >/dev/null
        echo "  collection $c"
    done'
compose exec -T qdrant tar -C /qdrant/snapshots -cf - . > "$work/qdrant.tar"

cp .env "$work/env"
{
    echo "created_utc=$stamp"
    echo "apps=${APPS:-}"
    compose config --images 2>/dev/null | sed 's/^/image=/'
} > "$work/MANIFEST"

archive="$BACKUP_DIR/mindora-$stamp.tar.gz"
tar -C "$work" -czf "$archive.tmp" .
mv "$archive.tmp" "$archive"
log "wrote $archive ($(du -h "$archive" | cut -f1))"

find "$BACKUP_DIR" -maxdepth 1 -name 'mindora-*.tar.gz' -mtime "+$BACKUP_RETENTION_DAYS" -print -delete |
    sed 's/^/[backup] expired /'
