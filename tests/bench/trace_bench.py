"""Tracing overhead: mindora-worker throughput with tracing off, on with 10 % of jobs
sampled, and on with every job sampled, exporting over OTLP/HTTP to the test kit's receiver
(tests/examples/otlp_sink.rs, which decodes every request with opentelemetry-proto).

Every job carries a producer's `traceparent` in `job.meta`, as an instrumented FastAPI app
sends it; the producer's sampled flag says which jobs are traced (the worker's default
sampler is parent-based), so "0.1" is 10 % of jobs flagged sampled. Rounds alternate the
three modes; medians are printed with the ratio to "off". No figure is asserted.

Usage: bash scripts/bench.sh --tracing [--mindora-jobs N] [--rounds N] [--concurrency N]
"""

import argparse
import os
import random
import statistics
import subprocess
import sys

import redis
from rq import Queue

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rq_bench  # noqa: E402


def enqueue_traced(r, n, ratio, queue="bench"):
    q = Queue(queue, connection=r)
    rnd = random.Random(7)
    for start in range(0, n, 1000):
        with r.pipeline() as p:
            for i in range(start, min(n, start + 1000)):
                flags = "01" if rnd.random() < ratio else "00"
                tp = f"00-{rnd.getrandbits(128):032x}-{rnd.getrandbits(64):016x}-{flags}"
                q.enqueue("mindora.noop", job_id=f"b{i}", pipeline=p, result_ttl=600, meta={"traceparent": tp})
            p.execute()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", required=True)
    ap.add_argument("--sink", required=True, help="path to the otlp_sink example binary")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379")
    ap.add_argument("--mindora-jobs", type=int, default=30000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    sink = subprocess.Popen([a.sink], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    http_endpoint = sink.stdout.readline().split()[0]
    db = rq_bench.lease(a.redis)
    url = f"{a.redis}/{db}"
    r = redis.Redis.from_url(url)
    cmd = [a.worker, "--redis-url", url, "--queues", "bench", "--burst", "--concurrency", str(a.concurrency)]
    base = dict(os.environ, RUST_LOG="error")
    for k in [k for k in base if k.startswith("OTEL_")]:
        del base[k]
    on = dict(base, OTEL_EXPORTER_OTLP_ENDPOINT=http_endpoint, OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf")
    modes = (("off", base, 0.0), ("0.1", on, 0.1), ("1.0", on, 1.0))
    runs = {name: [] for name, _, _ in modes}
    try:
        print(f"tracing overhead: {a.mindora_jobs} no-op jobs per run, --concurrency {a.concurrency}, "
              f"{a.rounds} alternating rounds, {os.cpu_count()} cores (the receiver shares them)")
        for i in range(a.rounds):
            for name, env, ratio in modes:
                r.flushdb()
                enqueue_traced(r, a.mindora_jobs, ratio)
                t = rq_bench.run_throughput(r, url, a.mindora_jobs, cmd, env, enqueued=True)
                runs[name].append(t)
                print(f"round {i + 1} {name:>4}: {t['jobs_per_s']:.0f} jobs/s, "
                      f"{t['worker_cpu_us_per_job']:.1f} us worker CPU/job", flush=True)
        sink.stdin.write("count\n")
        sink.stdin.flush()
        spans, refused = sink.stdout.readline().split()
        off = statistics.median(t["jobs_per_s"] for t in runs["off"])
        off_cpu = statistics.median(t["worker_cpu_us_per_job"] for t in runs["off"])
        print(f"\n{'sampled':>8}{'jobs/s':>10}{'vs off':>9}{'worker CPU/job (us)':>22}{'vs off':>9}")
        for name, _, _ in modes:
            jps = statistics.median(t["jobs_per_s"] for t in runs[name])
            cpu = statistics.median(t["worker_cpu_us_per_job"] for t in runs[name])
            print(f"{name:>8}{jps:>10.0f}{jps / off:>8.3f}x{cpu:>22.1f}{cpu / off_cpu:>8.3f}x")
        print(f"spans received by the OTLP receiver: {spans} (requests refused: {refused})")
    finally:
        sink.stdin.close()
        sink.wait(timeout=30)
        r.flushdb()
        redis.Redis.from_url(a.redis + "/0").delete(f"mindora:test-db-lease:{db}")


if __name__ == "__main__":
    main()
