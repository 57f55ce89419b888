#!/bin/bash
# Elasticsearch initialisation (idempotent, all PUTs):
# - kibana_system password; users mindora_worker (exactly the privileges of the API calls the
#   worker makes: infra/check.sh derives them from pipelines/src/index_fulltext.rs),
#   elasticsearch_exporter (monitor, read_ilm) and log_shipper (Filebeat: append to the
#   mindora-logs-* data streams only), grafana_logs (Grafana's logs data source, for
#   trace-to-logs: read mindora-logs-* only); one role + user per app for its own indices;
# - ILM policy mindora-logs and the data-stream template mindora-logs (container logs shipped
#   by Filebeat, worker JSON fields mapped); per app the {app}-logs-* template and the first
#   write index behind the {app}-logs rollover alias (the app's own logs);
# - the filesystem snapshot repository used by `manage.sh backup`.
# Not here, on purpose: the {app}-documents template, its read alias and its monthly indices.
# The worker owns them (pipelines/src/index_fulltext.rs), so their names cannot drift apart.
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
es PUT /_security/role/mindora_worker "$(cat "$INFRA/elasticsearch/role-mindora_worker.json")"
es PUT /_security/user/mindora_worker "{\"password\":\"${ELASTIC_WORKER_PASSWORD:?}\",\"roles\":[\"mindora_worker\"]}"
es PUT /_security/role/elasticsearch_exporter "$(cat "$INFRA/elasticsearch/role-elasticsearch_exporter.json")"
es PUT /_security/user/elasticsearch_exporter "{\"password\":\"${ELASTIC_EXPORTER_PASSWORD:?}\",\"roles\":[\"elasticsearch_exporter\"]}"
es PUT /_security/role/log_shipper "$(cat "$INFRA/elasticsearch/role-log_shipper.json")"
es PUT /_security/user/log_shipper "{\"password\":\"${ELASTIC_SHIPPER_PASSWORD:?}\",\"roles\":[\"log_shipper\"]}"
es PUT /_security/role/grafana_logs "$(cat "$INFRA/elasticsearch/role-grafana_logs.json")"
es PUT /_security/user/grafana_logs "{\"password\":\"${ELASTIC_GRAFANA_PASSWORD:?}\",\"roles\":[\"grafana_logs\"]}"
# The named Kibana login (not the elastic superuser).
es PUT /_security/role/mindora_ui "$(cat "$INFRA/elasticsearch/role-mindora_ui.json")"
es PUT "/_security/user/${KIBANA_UI_USER:?}" "{\"password\":\"${KIBANA_UI_PASSWORD:?}\",\"roles\":[\"mindora_ui\"]}"
log "users kibana_system, mindora_worker, elasticsearch_exporter, log_shipper, grafana_logs, $KIBANA_UI_USER (Kibana login)"

es PUT /_ilm/policy/mindora-logs "$(render "$INFRA/elasticsearch/ilm-logs.json")"
es PUT /_index_template/mindora-logs "$(cat "$INFRA/elasticsearch/template-container-logs.json")"
log "ILM policy mindora-logs, data-stream template mindora-logs (container logs)"

es PUT /_snapshot/mindora '{"type":"fs","settings":{"location":"/usr/share/elasticsearch/snapshots","compress":true}}'
log "snapshot repository mindora"

for app in $(app_list); do
    es PUT "/_index_template/$app-logs" "$(sed "s/{app}/$app/g" "$INFRA/elasticsearch/template-logs.json")"
    if ! es GET "/_alias/$app-logs" 2>/dev/null; then
        es PUT "/%3C$app-logs-%7Bnow%2Fd%7D-000001%3E" "{\"aliases\":{\"$app-logs\":{\"is_write_index\":true}}}"
    fi
    es PUT "/_security/role/app_$app" "{\"indices\":[{\"names\":[\"$app-*\"],\"privileges\":[\"read\",\"write\",\"create_index\",\"view_index_metadata\"]}]}"
    es PUT "/_security/user/app_$app" "{\"password\":\"$(app_secret "$app" elasticsearch)\",\"roles\":[\"app_$app\"]}"
    log "app $app: logs template + write alias, role/user app_$app"
done
log "done"
