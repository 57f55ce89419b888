#!/usr/bin/env bash
# The quoted scripts below run inside the containers and expand their variables there.
# shellcheck disable=SC2016
# Restore a stack from an archive made by backup.sh:  manage.sh restore ARCHIVE [--yes]
# The stack must be up (manage.sh deploy). Workers are stopped during the restore and
# started again at the end. Existing data is overwritten.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
archive=${1:?usage: manage.sh restore ARCHIVE [--yes]}
[ -f "$archive" ] || { echo "no such archive: $archive" >&2; exit 1; }
if [ "${2:-}" != "--yes" ]; then
    read -r -p "Overwrite the running stack's data from $archive? [y/N] " answer
    [ "$answer" = y ] || [ "$answer" = Y ] || exit 1
fi

compose() {
    if docker compose version >/dev/null 2>&1; then docker compose "$@"; else docker-compose "$@"; fi
}
log() { printf '[restore] %s\n' "$*"; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -C "$work" -xzf "$archive"
cat "$work/MANIFEST"

log "stopping workers"
compose stop worker

log "PostgreSQL"
compose exec -T postgres sh -c 'psql -q -U "$POSTGRES_USER" -d postgres -v ON_ERROR_STOP=0' < "$work/postgres.sql" >/dev/null

log "Redis (RDB replaces the dataset; AOF is rebuilt from it)"
compose exec -T redis sh -c 'cat > /data/restore.rdb' < "$work/redis.rdb"
compose stop redis
compose run --rm --no-deps -T --entrypoint sh redis -c '
    set -eu
    cd /data
    mv restore.rdb dump.rdb
    rm -rf appendonlydir
    redis-server --dir /data --appendonly no --requirepass "$REDIS_PASSWORD" --daemonize yes
    until redis-cli --no-auth-warning -a "$REDIS_PASSWORD" ping 2>/dev/null | grep -q PONG; do sleep 1; done
    redis-cli --no-auth-warning -a "$REDIS_PASSWORD" config set appendonly yes >/dev/null
    until redis-cli --no-auth-warning -a "$REDIS_PASSWORD" info persistence | grep -q "aof_rewrite_in_progress:0"; do sleep 1; done
    sleep 2
    redis-cli --no-auth-warning -a "$REDIS_PASSWORD" shutdown save || true
    chown -R redis:redis /data'
compose up -d redis

log "Consul KV"
compose exec -T -e CONSUL_HTTP_TOKEN="${CONSUL_MANAGEMENT_TOKEN:?load .env first (use manage.sh restore)}" consul consul kv import - < "$work/consul-kv.json" >/dev/null

log "S3 buckets (s3sync.py, admin key)"
if [ -d "$work/s3" ]; then
    compose run --rm --no-deps -T -v "$work/s3:/backup:ro" -e S3_URL=http://s3:8333 \
        -e S3_ACCESS_KEY="$S3_ROOT_ACCESS_KEY" -e S3_SECRET_KEY="$S3_ROOT_SECRET_KEY" -e S3_REGION="$S3_REGION" \
        --entrypoint python3 rabbitmq-init /infra/scripts/s3sync.py upload /backup
else
    log "  no s3/ in the archive (an archive of the MinIO stack has minio/: upload it with s3sync.py upload)"
fi

log "Elasticsearch"
compose exec -T elasticsearch sh -c 'tar -C /usr/share/elasticsearch/snapshots -xf -' < "$work/elasticsearch.tar"
compose exec -T elasticsearch bash -c '
    set -euo pipefail
    es() { curl -fsS -u "elastic:$ELASTIC_PASSWORD" -H "Content-Type: application/json" "$@"; }
    snap=$(es "http://127.0.0.1:9200/_snapshot/mindora/_all" | grep -o "\"snapshot\":\"snap-[0-9-]*\"" | cut -d\" -f4 | sort | tail -n1)
    [ -n "$snap" ] || { echo "no snapshot in repository" >&2; exit 1; }
    es -X POST "http://127.0.0.1:9200/*,-.*/_close?expand_wildcards=open&ignore_unavailable=true&allow_no_indices=true" >/dev/null
    es -X POST "http://127.0.0.1:9200/_snapshot/mindora/$snap/_restore?wait_for_completion=true" \
        -d "{\"indices\":\"*,-.*\",\"include_global_state\":false}" >/dev/null
    echo "  restored $snap"'

log "Qdrant collections"
compose exec -T qdrant sh -c 'tar -C /qdrant/snapshots -xf -' < "$work/qdrant.tar"
compose run --rm --no-deps -T -v "$work:/restore:ro" --entrypoint /bin/sh qdrant-init -c '
    set -eu
    tar -tf /restore/qdrant.tar | sed -n "s#^\./\([^/]*\)/\([^/]*\.snapshot\)\$#\1 \2#p" | sort | awk "{last[\$1]=\$2} END {for (c in last) print c, last[c]}" |
    while read -r c snap; do
        curl -fsS -X PUT -H "api-key: $QDRANT_API_KEY" -H "Content-Type: application/json" \
            "$QDRANT_URL/collections/$c/snapshots/recover?wait=true" \
            -d "{\"location\":\"file:///qdrant/snapshots/$c/$snap\",\"priority\":\"snapshot\"}" >/dev/null
        echo "  collection $c <- $snap"
    done'

log "starting workers"
compose up -d worker
log "done"
