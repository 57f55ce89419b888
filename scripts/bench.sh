#!/usr/bin/env bash
# Benchmark mindora-worker against Python rq's SimpleWorker on the local Redis (same run,
# same jobs). Usage: bash scripts/bench.sh [--rq-jobs N] [--mindora-jobs N] [--concurrency N]
#   [--baseline OTHER_MINDORA_BINARY [--rounds N]]  (before/after a change, alternating rounds)
# Tracing overhead (off / 10 % sampled / all sampled, exporting over OTLP to a local
# receiver): bash scripts/bench.sh --tracing [--mindora-jobs N] [--rounds N] [--concurrency N]
# Job history overhead (off / on, writing every attempt to the local PostgreSQL):
#   bash scripts/bench.sh --history [--mindora-jobs N] [--rounds N] [--concurrency N]
# Console (history search over 1,000,000 rows, overview with 100,000 queued jobs):
#   bash scripts/bench.sh --console [--rows N] [--queued N]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--console" ]; then
  shift
  exec cargo run --release -p mindora-console --example console_bench --quiet -- "$@"
fi
bash tests/setup-python.sh >/dev/null
cargo build --release -p mindora-worker-app --bin mindora-worker --quiet
target="${CARGO_TARGET_DIR:-target}"
python="${MINDORA_CACHE:-$HOME/.cache/mindora}/venv-rq212/bin/python"
if [ "${1:-}" = "--tracing" ]; then
  shift
  cargo build --release -p mindora-tests --example otlp_sink --quiet
  exec "$python" tests/bench/trace_bench.py --worker "$target/release/mindora-worker" \
    --sink "$target/release/examples/otlp_sink" "$@"
fi
if [ "${1:-}" = "--history" ]; then
  shift
  exec "$python" tests/bench/history_bench.py --worker "$target/release/mindora-worker" "$@"
fi
"$python" tests/bench/rq_bench.py --worker "$target/release/mindora-worker" "$@"
