#!/usr/bin/env bash
# Benchmark one Python function under rq's workers (fork, SimpleWorker, worker-pool -n N) and
# under mindora-worker --python with N processes, same Redis, same run.
# Usage: bash scripts/bench-python.sh [--processes N] [--fork-jobs N] [--rq-jobs N] [--mindora-jobs N] [--io-jobs N]
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup-python.sh >/dev/null
cargo build --release -p mindora-worker-app --bin mindora-worker --quiet
target="${CARGO_TARGET_DIR:-target}"
"${MINDORA_CACHE:-$HOME/.cache/mindora}/venv-rq212/bin/python" tests/bench/python_bench.py \
  --worker "$target/release/mindora-worker" "$@"
