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
#   s3/<bucket>/...         every object of every bucket (current versions; infra/scripts/s3sync.py)
#   elasticsearch.tar       the fs snapshot repository after a fresh snapshot
#   qdrant.tar              a fresh snapshot of every collection
#   env                     the .env in use (secrets: the archive is mode 600)
#   MANIFEST                timestamp, images, apps
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
: "${BACKUP_DIR:?load .env first (use manage.sh backup)}"
: "${BACKUP_RETENTION_DAYS:?}"
: "${S3_ROOT_ACCESS_KEY:?}" "${S3_ROOT_SECRET_KEY:?}" "${CONSUL_MANAGEMENT_TOKEN:?}"

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
compose exec -T -e CONSUL_HTTP_TOKEN="${CONSUL_MANAGEMENT_TOKEN:?}" consul consul kv export '' > "$work/consul-kv.json"

log "S3: every bucket (s3sync.py, admin key, in the Python image of rabbitmq-init)"
mkdir -p "$work/s3"
compose run --rm --no-deps -T -v "$work/s3:/backup" -e S3_URL=http://s3:8333 \
    -e S3_ACCESS_KEY="$S3_ROOT_ACCESS_KEY" -e S3_SECRET_KEY="$S3_ROOT_SECRET_KEY" -e S3_REGION="$S3_REGION" \
    --entrypoint python3 rabbitmq-init /infra/scripts/s3sync.py download /backup

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
