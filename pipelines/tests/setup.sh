#!/usr/bin/env bash
# Installs what the mindora-pipelines tests and benchmark need. Idempotent; CI runs it before
# the tests.
#  - s3s-fs (a real S3-protocol server) into ~/.cargo/bin, from crates.io
#  - a Python venv with pypdf, python-docx and openpyxl for the extraction benchmark baseline
#    (and for regenerating tests/fixtures/encrypted.pdf)
# PostgreSQL, RabbitMQ and Redis are started by the machine itself.
set -euo pipefail

cache="${MINDORA_CACHE:-$HOME/.cache/mindora}"
s3s_version="0.14.1"

if ! command -v s3s-fs >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/s3s-fs" ]; then
    echo "setup: installing s3s-fs $s3s_version"
    cargo install s3s-fs --version "$s3s_version" --features binary --locked
else
    echo "setup: s3s-fs present"
fi

venv="$cache/venv-pipelines"
if [ ! -x "$venv/bin/python" ]; then
    mkdir -p "$cache"
    python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import pypdf, docx, openpyxl, psutil" >/dev/null 2>&1; then
    echo "setup: installing Python benchmark packages"
    "$venv/bin/pip" install --quiet pypdf python-docx openpyxl psutil
else
    echo "setup: Python benchmark packages present"
fi
