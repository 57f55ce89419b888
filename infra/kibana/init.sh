#!/bin/sh
# Kibana initialisation (idempotent): the data views of infra/kibana/data-views.json
# (container logs shipped by Filebeat, the worker's document chunks). Existing views are kept.
# Runs in the kibana-init container (curl image) once Kibana is healthy.
set -eu
INIT_NAME=kibana-init
INFRA=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=infra/scripts/lib.sh
. "$INFRA/scripts/lib.sh"

kb() {
    curl -sS -u "elastic:${ELASTIC_PASSWORD:?}" -H 'kbn-xsrf: mindora' -H 'Content-Type: application/json' "$@"
}

i=0
until [ "$(kb -o /dev/null -w '%{http_code}' "${KIBANA_URL:?}/api/status")" = 200 ]; do
    i=$((i + 1))
    [ "$i" -lt 90 ] || { echo "kibana-init: Kibana not ready" >&2; exit 1; }
    log "waiting for Kibana"
    sleep 2
done

# One JSON object per line, from the pretty-printed list (no jq in the curl image).
tr -d '\n' < "$INFRA/kibana/data-views.json" | sed 's/^ *\[ *//; s/ *\] *$//; s/} *, *{/}\n{/g' > /tmp/views
while IFS= read -r view || [ -n "$view" ]; do
    id=$(printf '%s' "$view" | sed 's/.*"id": *"\([^"]*\)".*/\1/')
    code=$(kb -o /dev/null -w '%{http_code}' "$KIBANA_URL/api/data_views/data_view/$id")
    if [ "$code" = 200 ]; then
        log "data view $id exists"
        continue
    fi
    kb -f -o /dev/null -X POST "$KIBANA_URL/api/data_views/data_view" --data-binary "{\"data_view\":$view}"
    log "data view $id created"
done < /tmp/views
log "done"
