#!/bin/sh
# Shared helpers for the init scripts (POSIX sh: they run in busybox/alpine/debian images).
# Sourced, not executed.

# app_list: the APPS variable split on commas/whitespace, validated ([a-z][a-z0-9_]*).
app_list() {
    # No grep/sed: this runs in minimal images too.
    for a in $(printf '%s' "${APPS:-}" | tr ',' ' '); do
        case "$a" in
            [a-z]*) ;;
            *) echo "invalid app name '$a' (want [a-z][a-z0-9_]*)" >&2; return 1 ;;
        esac
        case "$a" in
            *[!a-z0-9_]*) echo "invalid app name '$a' (want [a-z][a-z0-9_]*)" >&2; return 1 ;;
        esac
        # mindora-logs-* belongs to the container-logs data stream: an app named mindora
        # would put its {app}-logs-* indices under that template.
        if [ "$a" = mindora ]; then
            echo "invalid app name 'mindora' (reserved: the stack's own logs are mindora-logs-*)" >&2
            return 1
        fi
        if [ "${#a}" -lt 3 ] || [ "${#a}" -gt 40 ]; then
            echo "invalid app name '$a' (3 to 40 characters: it names an S3 bucket)" >&2
            return 1
        fi
        printf '%s\n' "$a"
    done
}

# app_bucket APP: the app's S3 bucket (bucket names may not contain '_').
app_bucket() { printf '%s' "$1" | tr '_' '-'; }

# app_secret APP SERVICE: deterministic per-app credential derived from
# APP_CREDENTIALS_SECRET, so every init job (and manage.sh) computes the same value
# without storing it anywhere. 32 hex characters.
app_secret() {
    if [ -z "${APP_CREDENTIALS_SECRET:-}" ]; then
        echo "APP_CREDENTIALS_SECRET is not set" >&2
        return 1
    fi
    printf '%s' "${APP_CREDENTIALS_SECRET}:$1:$2" | sha256sum | cut -c1-32
}

log() { printf '[%s] %s\n' "${INIT_NAME:-init}" "$*"; }
