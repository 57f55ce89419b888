#!/bin/sh
# Qdrant initialisation (idempotent): one collection per app in APPS, named {app}_documents
# like the worker's (pipelines/src/model.rs qdrant_collection), vector size EMBED_DIMENSIONS,
# distance QDRANT_DISTANCE, and a keyword payload index on document_id (the worker filters
# on it to replace a document's points).
# Existing collections are left untouched. Runs in the qdrant-init container (curl image).
set -eu
INIT_NAME=qdrant-init
INFRA=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=infra/scripts/lib.sh
. "$INFRA/scripts/lib.sh"

qd() {
    curl -sS -f -H "api-key: ${QDRANT_API_KEY:?}" -H 'Content-Type: application/json' "$@"
}

i=0
until qd "${QDRANT_URL:?}/collections" >/dev/null 2>&1; do
    i=$((i + 1))
    [ "$i" -lt 60 ] || { echo "qdrant-init: Qdrant not reachable" >&2; exit 1; }
    log "waiting for Qdrant"
    sleep 2
done

body=$(mktemp)
sh "$INFRA/scripts/render-template.sh" "$INFRA/qdrant/collection.json" "$body"
for app in $(app_list); do
    collection="${app}_documents"
    if qd "$QDRANT_URL/collections/$collection" >/dev/null 2>&1; then
        log "collection $collection exists"
    else
        qd -X PUT "$QDRANT_URL/collections/$collection" --data-binary "@$body" >/dev/null
        log "collection $collection created"
    fi
    qd -X PUT "$QDRANT_URL/collections/$collection/index?wait=true" \
        --data-binary '{"field_name":"document_id","field_schema":"keyword"}' >/dev/null
done
rm -f "$body"
log "done"
