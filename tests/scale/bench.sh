#!/usr/bin/env bash
# Figures for docs/scaling.md, each against its peer in the same run (no timing assertions):
# worker throughput over TLS vs plain for Redis (one redis-server, TLS port vs plain port)
# and for AMQP (one private RabbitMQ node, TLS listener vs plain listener), and recovery
# after a Sentinel failover (plain, and TLS + Sentinel auth + ACL).
# Usage: bash tests/scale/bench.sh   (debug build, as the tests run; prints FIGURES lines)
# MINDORA_FIGURES=1 makes redis_tls and amqp_tls run their measured passes and print; the test
# suite runs the same paths on few jobs and prints nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash tests/scale/setup.sh >/dev/null
cargo build --workspace --bins --quiet
export MINDORA_FIGURES=1
export MINDORA_METRICS_SNAPSHOT="${CARGO_TARGET_DIR:-target}/worker-metrics.txt"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo nextest run --no-fail-fast --retries 0 --no-capture \
  -p mindora-tests --test redis_tls --test redis_sentinel --test redis_sentinel_secure \
  -p mindora-worker-app --test amqp_tls \
  -E 'test(/over_tls_with_an_acl_user|failover|native_rabbitmq/)' \
  >"$log" 2>&1 || { tail -50 "$log"; exit 1; }
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
grep '^FIGURES' "$log"
