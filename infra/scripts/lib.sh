#!/bin/sh
# Shared helpers for the init scripts (POSIX sh: they run in busybox/alpine/debian images).
# Sourced, not executed.

# app_list: the APPS variable split on commas/whitespace, validated ([a-z][a-z0-9_]*).
app_list() {
    # No grep/sed: this runs in minimal images too (the minio image is ubi-micro).
    for a in $(printf '%s' "${APPS:-}" | tr ',' ' '); do
        case "$a" in
            [a-z]*) ;;
            *) echo "invalid app name '$a' (want [a-z][a-z0-9_]*)" >&2; return 1 ;;
        esac
        case "$a" in
            *[!a-z0-9_]*) echo "invalid app name '$a' (want [a-z][a-z0-9_]*)" >&2; return 1 ;;
        esac
        printf '%s\n' "$a"
    done
}

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
