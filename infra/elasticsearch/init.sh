#!/bin/bash
# Elasticsearch initialisation (idempotent, all PUTs):
# - kibana_system password; users mindora_worker (read/write {app}-documents-*/-logs-*)
#   and elasticsearch_exporter (monitor only); one role + user per app for its own indices;
# - ILM policies mindora-documents / mindora-logs, index templates {app}-documents-* and
#   {app}-logs-* (CJK-capable analyzer from built-in filters: no plugin), and the first
#   write index behind the {app}-documents / {app}-logs rollover aliases;
# - the filesystem snapshot repository used by `manage.sh backup`.
set -euo pipefail
INIT_NAME=es-init
INFRA=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=infra/scripts/lib.sh
. "$INFRA/scripts/lib.sh"

es() {
    local method=$1 path=$2 body=${3:-}
    local args=(-sS -u "elastic:${ELASTIC_PASSWORD:?}" -H 'Content-Type: application/json' -X "$method" -o /tmp/es.out -w '%{http_code}')
    [ -n "$body" ] && args+=(--data-binary "$body")
    local code
    code=$(curl "${args[@]}" "${ES_URL:?}$path")
    case "$code" in
        2??) return 0 ;;
        *) echo "es-init: $method $path -> $code: $(cat /tmp/es.out)" >&2; return 1 ;;
    esac
}
render() { sh "$INFRA/scripts/render-template.sh" "$1" /tmp/rendered.json && cat /tmp/rendered.json; }

until es GET /_cluster/health 2>/dev/null; do log "waiting for Elasticsearch"; sleep 3; done

es POST /_security/user/kibana_system/_password "{\"password\":\"${KIBANA_SYSTEM_PASSWORD:?}\"}"
es PUT /_security/role/mindora_worker '{"cluster":["monitor"],"indices":[{"names":["*-documents-*","*-documents","*-logs-*","*-logs"],"privileges":["read","write","create_index","view_index_metadata","manage"]}]}'
es PUT /_security/user/mindora_worker "{\"password\":\"${ELASTIC_WORKER_PASSWORD:?}\",\"roles\":[\"mindora_worker\"]}"
es PUT /_security/role/elasticsearch_exporter '{"cluster":["monitor","manage_ilm","read_slm"],"indices":[{"names":["*"],"privileges":["monitor","view_index_metadata"]}]}'
es PUT /_security/user/elasticsearch_exporter "{\"password\":\"${ELASTIC_EXPORTER_PASSWORD:?}\",\"roles\":[\"elasticsearch_exporter\"]}"
log "users kibana_system, mindora_worker, elasticsearch_exporter"

es PUT /_ilm/policy/mindora-documents "$(render "$INFRA/elasticsearch/ilm-documents.json")"
es PUT /_ilm/policy/mindora-logs "$(render "$INFRA/elasticsearch/ilm-logs.json")"
log "ILM policies mindora-documents, mindora-logs"

es PUT /_snapshot/mindora '{"type":"fs","settings":{"location":"/usr/share/elasticsearch/snapshots","compress":true}}'
log "snapshot repository mindora"

for app in $(app_list); do
    for kind in documents logs; do
        es PUT "/_index_template/$app-$kind" "$(sed "s/{app}/$app/g" "$INFRA/elasticsearch/template-$kind.json")"
        if ! es GET "/_alias/$app-$kind" 2>/dev/null; then
            es PUT "/%3C$app-$kind-%7Bnow%2Fd%7D-000001%3E" "{\"aliases\":{\"$app-$kind\":{\"is_write_index\":true}}}"
        fi
    done
    es PUT "/_security/role/app_$app" "{\"indices\":[{\"names\":[\"$app-*\"],\"privileges\":[\"read\",\"write\",\"create_index\",\"view_index_metadata\"]}]}"
    es PUT "/_security/user/app_$app" "{\"password\":\"$(app_secret "$app" elasticsearch)\",\"roles\":[\"app_$app\"]}"
    log "app $app: templates, write aliases, role/user app_$app"
done
log "done"
