#!/usr/bin/env bash
# Issue 23, opt-in (not in .ci/run: it runs for many minutes): the real release mindora-worker
# and its mindora-pdf helper inside a cgroup v1 memory cgroup of exactly MEM_WORKER from
# .env.example, with the compose settings of that file, processing maximum-size documents
# (WORKER_MAX_OBJECT_BYTES) alone and WORKER_CONCURRENCY at once
# (tests/tests/worker_memory_cgroup.rs). Fails on an OOM kill, a dead worker or an unfinished
# job; prints the kernel's peak (memory.max_usage_in_bytes) against the limit.
#
#   bash infra/tests/worker-memory-cgroup.sh
#
# Needs root (a writable /sys/fs/cgroup/memory, or MINDORA_MEMTEST_CGROUP_PARENT), Redis,
# RabbitMQ and PostgreSQL as for the other tests, s3s-fs (pipelines/tests/setup.sh) and the rq
# venvs (tests/setup-python.sh). Where no memory cgroup can be made it prints SKIP and exits 0
# (exit 1 with MINDORA_MEMTEST_REQUIRE=1). Knobs of the test (MINDORA_MEMTEST_PHASES,
# _OBJECT_BYTES, _LIMIT) pass through.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"
parent=${MINDORA_MEMTEST_CGROUP_PARENT:-/sys/fs/cgroup/memory}

skip() {
    echo "SKIP worker memory cgroup test: $*"
    if [ "${MINDORA_MEMTEST_REQUIRE:-0}" = 1 ]; then exit 1; fi
    exit 0
}

[ -f "$parent/memory.limit_in_bytes" ] || skip "no cgroup v1 memory controller at $parent"
probe="$parent/mindora-memtest-probe-$$"
mkdir "$probe" 2>/dev/null || skip "cannot create a memory cgroup under $parent (not root, or read-only cgroupfs)"
if ! echo $((64 << 20)) >"$probe/memory.limit_in_bytes" 2>/dev/null; then
    rmdir "$probe"
    skip "cannot set memory.limit_in_bytes under $parent"
fi
rmdir "$probe"

target=${CARGO_TARGET_DIR:-target}
nice -n 5 cargo build --release -p mindora-worker-app --bin mindora-worker -p mindora-pipelines --bin mindora-pdf
export MINDORA_WORKER_BIN="$target/release/mindora-worker"
case "$MINDORA_WORKER_BIN" in /*) ;; *) MINDORA_WORKER_BIN="$PWD/$MINDORA_WORKER_BIN" ;; esac
# The test process (stand-ins, rq client) is a debug build; only the worker is measured.
time nice -n 5 cargo test -p mindora-tests --test worker_memory_cgroup -- --ignored --nocapture --test-threads 1
