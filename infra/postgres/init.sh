#!/bin/bash
# PostgreSQL initialisation (idempotent): for every app in APPS a login role and a schema
# owned by it, nothing else. Plus the mindora_worker role (member of every app role, used
# by mindora-worker's pipelines) and postgres_exporter (pg_monitor only).
# Runs in the postgres-init container with PGHOST/PGUSER/PGPASSWORD/PGDATABASE set.
set -euo pipefail
INIT_NAME=postgres-init
# shellcheck source=infra/scripts/lib.sh
. "$(dirname "$0")/../scripts/lib.sh"

export PGOPTIONS="-c client_min_messages=warning"
psql_q() { psql -v ON_ERROR_STOP=1 -qAt "$@"; }

# ensure_role NAME PASSWORD [EXTRA]: create or update a LOGIN role.
ensure_role() {
    psql_q -v name="$1" -v pw="$2" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION', :'name')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'name') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', :'name', :'pw') \gexec
SQL
}

db=${PGDATABASE:?}
# The healthcheck gates on TCP, but a server restarting after first-boot initdb can still drop
# the first connection: wait until a real query works (up to 2 minutes) instead of failing.
for i in $(seq 1 60); do
    psql_q -c 'SELECT 1' >/dev/null 2>&1 && break
    [ "$i" -lt 60 ] || { echo "postgres-init: PostgreSQL at ${PGHOST:-?} not accepting queries" >&2; exit 1; }
    log "waiting for PostgreSQL"
    sleep 2
done
log "database $db: revoking default privileges from PUBLIC"
psql_q -v db="$db" <<'SQL'
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'db') \gexec
REVOKE ALL ON SCHEMA public FROM PUBLIC;
SQL

ensure_role postgres_exporter "${POSTGRES_EXPORTER_PASSWORD:?}"
ensure_role mindora_worker "${POSTGRES_WORKER_PASSWORD:?}"
ensure_role mindora_console "${POSTGRES_CONSOLE_PASSWORD:?}"
psql_q -v db="$db" <<'SQL'
GRANT pg_monitor TO postgres_exporter;
SELECT format('GRANT CONNECT ON DATABASE %I TO postgres_exporter, mindora_worker, mindora_console', :'db') \gexec
SQL

# Job history (issue 22): schema mindora_history, owned by mindora_worker, which migrates it at
# start and writes it; the console reads it and writes its audit rows. pg_trgm (the error-text
# index) is created here, by the superuser, once per database.
log "job history: schema mindora_history, pg_trgm, console grants"
psql_q <<'SQL'
CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public;
CREATE SCHEMA IF NOT EXISTS mindora_history AUTHORIZATION mindora_worker;
ALTER SCHEMA mindora_history OWNER TO mindora_worker;
REVOKE ALL ON SCHEMA mindora_history FROM PUBLIC;
GRANT USAGE ON SCHEMA mindora_history TO mindora_console;
GRANT USAGE ON SCHEMA public TO mindora_worker, mindora_console;
ALTER ROLE mindora_console SET search_path = mindora_history, public;
-- tables the worker's migrations create: read by the console (history/migrations/0002 lets it
-- write its audit table)
ALTER DEFAULT PRIVILEGES FOR ROLE mindora_worker IN SCHEMA mindora_history GRANT SELECT ON TABLES TO mindora_console;
ALTER DEFAULT PRIVILEGES FOR ROLE mindora_worker IN SCHEMA mindora_history GRANT USAGE ON SEQUENCES TO mindora_console;
GRANT SELECT ON ALL TABLES IN SCHEMA mindora_history TO mindora_console;
SQL

for app in $(app_list); do
    log "app $app: role + schema"
    ensure_role "$app" "$(app_secret "$app" postgres)"
    # The schema the pipelines use: mindora_{app}, with '-' as '_' (pipelines/README.md).
    schema="mindora_${app//-/_}"
    psql_q -v app="$app" -v db="$db" -v schema="$schema" <<'SQL'
SELECT format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I', :'db', :'app') \gexec
SELECT format('CREATE SCHEMA IF NOT EXISTS %I AUTHORIZATION %I', :'schema', :'app') \gexec
SELECT format('ALTER SCHEMA %I OWNER TO %I', :'schema', :'app') \gexec
SELECT format('REVOKE ALL ON SCHEMA %I FROM PUBLIC', :'schema') \gexec
SELECT format('ALTER ROLE %I SET search_path = %I', :'app', :'schema') \gexec
SELECT format('GRANT %I TO mindora_worker', :'app') \gexec
-- objects the worker creates in the app schema (migrations at start-up, or
-- `mindora-worker migrate --app`) stay usable by the app role
SELECT format('ALTER DEFAULT PRIVILEGES FOR ROLE mindora_worker IN SCHEMA %I GRANT ALL ON TABLES TO %I', :'schema', :'app') \gexec
SELECT format('ALTER DEFAULT PRIVILEGES FOR ROLE mindora_worker IN SCHEMA %I GRANT ALL ON SEQUENCES TO %I', :'schema', :'app') \gexec
SQL
done
log "done"
