#!/bin/sh
# Grafana initialisation (idempotent): the named login GRAFANA_UI_USER (org role Editor: edits
# dashboards, administers nothing) so people do not use the Grafana admin account. Its
# password follows .env on every run. Runs in the grafana-init container (curl image).
set -eu
INIT_NAME=grafana-init
INFRA=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=infra/scripts/lib.sh
. "$INFRA/scripts/lib.sh"

gf() {
    curl -sS -u "${GRAFANA_ADMIN_USER:?}:${GRAFANA_ADMIN_PASSWORD:?}" -H 'Content-Type: application/json' "$@"
}

i=0
until [ "$(gf -o /dev/null -w '%{http_code}' "${GRAFANA_URL:?}/api/health")" = 200 ]; do
    i=$((i + 1))
    [ "$i" -lt 90 ] || { echo "grafana-init: Grafana not ready" >&2; exit 1; }
    log "waiting for Grafana"
    sleep 2
done

user=${GRAFANA_UI_USER:?}
password=${GRAFANA_UI_PASSWORD:?}
[ "$user" != "$GRAFANA_ADMIN_USER" ] || { echo "grafana-init: GRAFANA_UI_USER must differ from GRAFANA_ADMIN_USER" >&2; exit 1; }
found=$(gf -w '\n%{http_code}' "$GRAFANA_URL/api/users/lookup?loginOrEmail=$user")
code=$(printf '%s\n' "$found" | tail -n 1)
if [ "$code" = 200 ]; then
    id=$(printf '%s\n' "$found" | head -n 1 | sed 's/.*"id": *\([0-9]*\).*/\1/')
    gf -f -o /dev/null -X PUT "$GRAFANA_URL/api/admin/users/$id/password" --data-binary "{\"password\":\"$password\"}"
    log "user $user exists (id $id), password set from .env"
elif [ "$code" = 404 ]; then
    created=$(gf -f -X POST "$GRAFANA_URL/api/admin/users" \
        --data-binary "{\"name\":\"$user\",\"login\":\"$user\",\"email\":\"$user@localhost\",\"password\":\"$password\",\"OrgId\":1}")
    id=$(printf '%s' "$created" | sed 's/.*"id": *\([0-9]*\).*/\1/')
    log "user $user created (id $id)"
else
    echo "grafana-init: user lookup answered $code" >&2
    exit 1
fi
gf -f -o /dev/null -X PATCH "$GRAFANA_URL/api/org/users/$id" --data-binary '{"role":"Editor"}'
log "user $user: org role Editor"
log "done"
