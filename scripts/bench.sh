#!/usr/bin/env bash
# Benchmark mindora-worker against Python rq's SimpleWorker on the local Redis (same run,
# same jobs). Usage: bash scripts/bench.sh [--rq-jobs N] [--mindora-jobs N] [--concurrency N]
#   [--baseline OTHER_MINDORA_BINARY [--rounds N]]  (before/after a change, alternating rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup-python.sh >/dev/null
cargo build --release -p mindora-worker-app --bin mindora-worker --quiet
target="${CARGO_TARGET_DIR:-target}"
"${MINDORA_CACHE:-$HOME/.cache/mindora}/venv-rq212/bin/python" tests/bench/rq_bench.py \
  --worker "$target/release/mindora-worker" "$@"
