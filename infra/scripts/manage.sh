#!/usr/bin/env bash
# mindora stack operations. Run from anywhere; acts on the repo this script lives in.
#
#   manage.sh deploy              create .env (random secrets) if missing, build, start, wait healthy
#   manage.sh status              services, health, worker replicas, Prometheus targets
#   manage.sh logs [SERVICE...]   follow logs (all services by default)
#   manage.sh backup              dated compressed archive in BACKUP_DIR, keeps BACKUP_RETENTION_DAYS
#   manage.sh restore ARCHIVE     restore every store from an archive made by `backup`
#   manage.sh update-config       re-apply configs: init jobs, Consul KV seed (overwrite),
#                                 Prometheus/Alertmanager re-render, nginx reload
#   manage.sh new-app NAME        add NAME to APPS and create its schema, bucket, keys, queues,
#                                 ES templates, collection and KV tree
#   manage.sh app-credentials NAME  print NAME's derived credentials
#   manage.sh scale N             run N worker replicas
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
# shellcheck source=infra/scripts/lib.sh
. "$ROOT/infra/scripts/lib.sh"
INIT_SERVICES=(postgres-init s3-init rabbitmq-init es-init qdrant-init consul-init)

compose() {
    if docker compose version >/dev/null 2>&1; then
        docker compose "$@"
    else
        docker-compose "$@"
    fi
}

die() { echo "manage.sh: $*" >&2; exit 1; }

load_env() {
    [ -f .env ] || die ".env missing: run '$0 deploy' or scripts/gen-env.sh"
    set -a
    # shellcheck disable=SC1091
    . ./.env
    set +a
}

# .env from .env.example with a random value for every secret (scripts/gen-env.sh).
make_env() {
    [ -f .env ] && return 0
    bash "$ROOT/scripts/gen-env.sh" "$ROOT/.env"
}

wait_healthy() {
    local deadline=$((SECONDS + ${1:-600})) unhealthy
    while :; do
        unhealthy=$(compose ps --format '{{.Service}} {{.State}} {{.Health}}' 2>/dev/null |
            awk '$2 == "running" && $3 != "healthy" && $3 != "" {print $1}' | sort -u | tr '\n' ' ')
        [ -z "$unhealthy" ] && return 0
        [ "$SECONDS" -lt "$deadline" ] || { echo "still not healthy: $unhealthy" >&2; return 1; }
        sleep 5
    done
}

cmd_deploy() {
    make_env
    load_env
    compose build worker
    compose up -d --remove-orphans
    wait_healthy 900
    cmd_status
    echo
    echo "Grafana:  https://grafana.${DOMAIN}:${NGINX_HTTPS_PORT}/  (${GRAFANA_ADMIN_USER} / GRAFANA_ADMIN_PASSWORD from .env)"
}

cmd_status() {
    load_env
    compose ps
    echo
    echo "worker replicas: $(compose ps -q worker | wc -l)"
    echo "Prometheus targets up/total:"
    compose exec -T prometheus wget -qO- 'http://127.0.0.1:9090/api/v1/targets?state=active' 2>/dev/null |
        python3 -c '
import collections, json, sys
t = json.load(sys.stdin)["data"]["activeTargets"]
c = collections.defaultdict(lambda: [0, 0])
for x in t:
    c[x["labels"]["job"]][1] += 1
    c[x["labels"]["job"]][0] += x["health"] == "up"
for job, (up, total) in sorted(c.items()):
    print(f"  {job:15} {up}/{total}")
' || echo "  (prometheus not reachable)"
}

cmd_logs() { compose logs -f --tail=200 "$@"; }

cmd_update_config() {
    load_env
    compose up -d --force-recreate --no-deps nginx-init "${INIT_SERVICES[@]}"
    compose run --rm --no-deps -e KV_OVERWRITE=1 consul-init
    compose restart prometheus alertmanager
    compose exec -T nginx nginx -s reload
    wait_healthy 300
    echo "configuration re-applied (Grafana reloads dashboards from infra/grafana by itself)"
}

cmd_new_app() {
    local name=${1:-}
    [[ "$name" =~ ^[a-z][a-z0-9_]*$ ]] || die "app name must match [a-z][a-z0-9_]*"
    load_env
    if printf '%s' "$APPS" | tr ',' '\n' | tr -d ' ' | grep -qx "$name"; then
        echo "$name is already in APPS; re-running the init jobs"
    else
        local apps="${APPS:+$APPS,}$name"
        sed -i.bak "s/^APPS=.*/APPS=$apps/" .env && rm -f .env.bak
        load_env
        echo "APPS=$APPS"
    fi
    compose up -d --force-recreate --no-deps "${INIT_SERVICES[@]}"
    local s state
    for s in "${INIT_SERVICES[@]}"; do
        until state=$(docker inspect -f '{{.State.Status}} {{.State.ExitCode}}' "$(compose ps -a -q "$s")") &&
            [[ "$state" == exited* ]]; do sleep 2; done
        [ "$state" = "exited 0" ] || die "$s failed: see '$0 logs $s'"
    done
    compose up -d worker   # picks up the new MINDORA_APPS
    cmd_app_credentials "$name"
}

cmd_app_credentials() {
    local name=${1:?usage: manage.sh app-credentials NAME}
    load_env
    cat <<EOF
app $name
  PostgreSQL     postgres://$name:$(app_secret "$name" postgres)@postgres:5432/$POSTGRES_DB  (schema $name)
  S3             access key app-$name  secret $(app_secret "$name" s3)  bucket $(app_bucket "$name")
  RabbitMQ       amqp://$name:$(app_secret "$name" rabbitmq)@rabbitmq:5672/$RABBITMQ_VHOST  queue ${name}_internal_tasks
  Elasticsearch  user app_$name  password $(app_secret "$name" elasticsearch)  indices $name-documents-* (read alias $name-documents), $name-logs-*
  Qdrant         collection ${name}_documents (QDRANT_API_KEY)
  Consul KV      $name/shared, $name/$DEPLOY_ENV/{database,ai,features,security}
EOF
}

cmd_scale() {
    local n=${1:?usage: manage.sh scale N}
    load_env
    # PostgreSQL's max_connections is sized for WORKER_MAX_REPLICAS pools (infra/check.sh).
    [ "$n" -le "${WORKER_MAX_REPLICAS:?}" ] ||
        die "at most WORKER_MAX_REPLICAS=$WORKER_MAX_REPLICAS replicas: raise it with POSTGRES_MAX_CONNECTIONS in .env"
    compose up -d --no-recreate --scale "worker=$n" worker
}

main() {
    local cmd=${1:-}
    shift || true
    case "$cmd" in
        deploy) cmd_deploy ;;
        status) cmd_status ;;
        logs) cmd_logs "$@" ;;
        backup) load_env; exec "$ROOT/infra/scripts/backup.sh" "$@" ;;
        restore) load_env; exec "$ROOT/infra/scripts/restore.sh" "$@" ;;
        update-config) cmd_update_config ;;
        new-app) cmd_new_app "$@" ;;
        app-credentials) cmd_app_credentials "$@" ;;
        scale) cmd_scale "$@" ;;
        *) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; [ -z "$cmd" ] || exit 2 ;;
    esac
}

main "$@"
