#!/usr/bin/env bash
# Creates the Python venv the AMQP interop tests and the AMQP benchmark use:
#   ${MINDORA_CACHE:-$HOME/.cache/mindora}/venv-pika  with pika pinned.
# Idempotent: does nothing when the venv already has the pinned version.
# RabbitMQ itself is started by the machine (or by .ci/run).
set -euo pipefail

cache="${MINDORA_CACHE:-$HOME/.cache/mindora}"
venv="$cache/venv-pika"
pika_version="1.3.2"

if [ ! -x "$venv/bin/python" ]; then
    mkdir -p "$cache"
    echo "amqp setup: creating $venv"
    python3 -m venv "$venv"
fi
installed=$("$venv/bin/python" -c 'import pika; print(pika.__version__)' 2>/dev/null || true)
if [ "$installed" != "$pika_version" ]; then
    echo "amqp setup: installing pika==$pika_version"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "pika==$pika_version"
else
    echo "amqp setup: pika $pika_version present"
fi
