#!/bin/sh
# check-secrets.sh [ENV_FILE]: refuse placeholder and weak secrets, naming each variable.
#
# Checks every variable whose name ends in _PASSWORD, _SECRET, _SECRET_KEY, _API_KEY,
# _ENCRYPTION_KEY or _TOKEN: from ENV_FILE (a .env) when given, else from the environment
# (the secrets-check service, which every service holding a secret waits for). A secret must
# not contain change-me/changeme, must be at least 16 characters (KIBANA_ENCRYPTION_KEY 32),
# must be URL-safe (letters, digits, - and _: several go into connection URLs), must not be a
# well-known default, and no two secrets may be equal. Consul tokens must be UUIDs.
# Optional (may be empty, never a placeholder): EMBED_API_KEY, ALERT_SMTP_PASSWORD.
# Exit 1 with one line per refused variable; `scripts/gen-env.sh` writes a .env that passes.
set -eu

is_secret() {
    case "$1" in
        *_PASSWORD|*_SECRET|*_SECRET_KEY|*_API_KEY|*_ENCRYPTION_KEY|*_TOKEN) return 0 ;;
    esac
    return 1
}

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
if [ $# -gt 0 ]; then
    [ -f "$1" ] || { echo "secrets-check: $1 not found" >&2; exit 2; }
    # KEY=VALUE lines; comments and blank lines skipped (no shell evaluation of the file).
    grep -E '^[A-Za-z_][A-Za-z0-9_]*=' "$1" > "$tmp" || true
    src=$1
else
    env > "$tmp"
    src=environment
fi

bad=0
checked=0
seen=""
refuse() { echo "secrets-check: $1: $2" >&2; bad=$((bad + 1)); }
while IFS= read -r line; do
    name=${line%%=*}
    value=${line#*=}
    is_secret "$name" || continue
    checked=$((checked + 1))
    case "$name" in
        EMBED_API_KEY|ALERT_SMTP_PASSWORD) optional=1 ;;
        *) optional=0 ;;
    esac
    lower=$(printf '%s' "$value" | tr '[:upper:]' '[:lower:]')
    case "$lower" in
        *change-me*|*changeme*|*change_me*) refuse "$name" "still the placeholder from .env.example (run scripts/gen-env.sh)"; continue ;;
    esac
    if [ -z "$value" ]; then
        [ "$optional" = 1 ] || refuse "$name" "empty"
        continue
    fi
    [ "$optional" = 1 ] && continue
    min=16
    [ "$name" = KIBANA_ENCRYPTION_KEY ] && min=32
    if [ "${#value}" -lt "$min" ]; then
        refuse "$name" "too short (${#value} characters, at least $min)"
        continue
    fi
    case "$value" in
        *[!A-Za-z0-9_-]*) refuse "$name" "not URL-safe (letters, digits, - and _ only)"; continue ;;
    esac
    case "$lower" in
        password*|admin*|secret*|minioadmin*|guest*|elastic*|qwerty*|letmein*|123456*|0000000*|abcdefgh*)
            refuse "$name" "a well-known default or guessable value"; continue ;;
    esac
    case "$name" in
        CONSUL_*_TOKEN)
            if ! printf '%s' "$lower" | grep -Eq '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'; then
                refuse "$name" "not a UUID (Consul token secrets are UUIDs)"; continue
            fi ;;
    esac
    for other in $seen; do
        if [ "${other#*=}" = "$value" ]; then
            refuse "$name" "same value as ${other%%=*}"
            continue 2
        fi
    done
    seen="$seen $name=$value"
done < "$tmp"

if [ "$checked" -eq 0 ]; then
    echo "secrets-check: no secret variables found in $src" >&2
    exit 1
fi
if [ "$bad" -gt 0 ]; then
    echo "secrets-check: $bad of $checked secrets refused in $src; the stack does not start" >&2
    exit 1
fi
echo "secrets-check: $checked secrets accepted ($src)"
