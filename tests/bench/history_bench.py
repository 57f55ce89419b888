"""Job history overhead: mindora-worker throughput with the history off and on (writing every
attempt to PostgreSQL in batches), in the same run on the same Redis.

Rounds alternate the two modes on the same no-op jobs; the medians are printed with the ratio
"on / off", and for "on" the rows the history wrote and dropped (read back with psql from a
schema of this run, dropped afterwards). No figure is asserted.

Usage: bash scripts/bench.sh --history [--mindora-jobs N] [--rounds N] [--concurrency N]
  [--database-url postgres://...]
"""

import argparse
import os
import statistics
import subprocess
import sys
import uuid

import redis

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rq_bench  # noqa: E402


def psql(url, sql):
    out = subprocess.run(["psql", url, "-Atc", sql], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", required=True)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379")
    ap.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/test")
    ap.add_argument("--mindora-jobs", type=int, default=30000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    db = rq_bench.lease(a.redis)
    url = f"{a.redis}/{db}"
    r = redis.Redis.from_url(url)
    schema = f"hist_bench_{uuid.uuid4().hex[:8]}"
    base_cmd = [a.worker, "--redis-url", url, "--queues", "bench", "--burst", "--concurrency", str(a.concurrency)]
    env = dict(os.environ, RUST_LOG="error")
    for k in [k for k in env if k.startswith(("OTEL_", "MINDORA_HISTORY_"))]:
        del env[k]
    on_cmd = base_cmd + ["--history-database-url", a.database_url, "--history-schema", schema]
    modes = (("off", base_cmd), ("on", on_cmd))
    runs = {name: [] for name, _ in modes}
    rows = []
    try:
        # Schema and partitions made once, outside the measured runs (as a deployment's first
        # start or `mindora-worker migrate --history` does).
        subprocess.run([a.worker, "migrate", "--history", "--history-database-url", a.database_url,
                        "--history-schema", schema], check=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(f"history overhead: {a.mindora_jobs} no-op jobs per run, --concurrency {a.concurrency}, "
              f"{a.rounds} alternating rounds, {os.cpu_count()} cores (PostgreSQL and Redis share them)")
        for i in range(a.rounds):
            for name, cmd in modes:
                before = int(psql(a.database_url, f"SELECT count(*) FROM {schema}.mindora_job_attempts"))
                t = rq_bench.run_throughput(r, url, a.mindora_jobs, cmd, env)
                runs[name].append(t)
                extra = ""
                if name == "on":
                    after = int(psql(a.database_url, f"SELECT count(*) FROM {schema}.mindora_job_attempts"))
                    dropped = int(psql(a.database_url, f"SELECT coalesce(sum(dropped), 0) FROM {schema}.mindora_history_writers") or 0)
                    rows.append((after - before, dropped))
                    extra = f", {after - before} rows written (total dropped so far: {dropped})"
                print(f"round {i + 1} {name:>3}: {t['jobs_per_s']:.0f} jobs/s, "
                      f"{t['worker_cpu_us_per_job']:.1f} us worker CPU/job{extra}", flush=True)
        off = statistics.median(t["jobs_per_s"] for t in runs["off"])
        off_cpu = statistics.median(t["worker_cpu_us_per_job"] for t in runs["off"])
        print(f"\n{'history':>8}{'jobs/s':>10}{'vs off':>9}{'worker CPU/job (us)':>22}{'vs off':>9}")
        for name, _ in modes:
            jps = statistics.median(t["jobs_per_s"] for t in runs[name])
            cpu = statistics.median(t["worker_cpu_us_per_job"] for t in runs[name])
            print(f"{name:>8}{jps:>10.0f}{jps / off:>8.3f}x{cpu:>22.1f}{cpu / off_cpu:>8.3f}x")
        written = sum(w for w, _ in rows)
        dropped = rows[-1][1] if rows else 0
        print(f"history rows written: {written} of {a.mindora_jobs * a.rounds} attempts, dropped: {dropped}")
    finally:
        r.flushdb()
        redis.Redis.from_url(a.redis + "/0").delete(f"mindora:test-db-lease:{db}")
        subprocess.run(["psql", a.database_url, "-qc", f"DROP SCHEMA IF EXISTS {schema} CASCADE"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
