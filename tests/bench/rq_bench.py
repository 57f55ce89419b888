"""Benchmark: Python rq's SimpleWorker vs mindora-worker on the same Redis, same jobs.

Both consume no-op jobs enqueued by Python rq; throughput is jobs / (last ended_at -
first started_at) read from the job hashes, latency is ended_at - enqueued_at of jobs sent
one at a time to an idle worker. Prints figures and ratios; asserts nothing.

With --baseline OTHER_BINARY (e.g. a build of an earlier commit), the two mindora-worker
binaries also run the throughput test alternately, --rounds times each on the same Redis, and
the medians are printed side by side: Redis commands and CPU per job before/after a change,
measured in one run.
"""
import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime

import redis
from rq import Queue

HERE = os.path.dirname(os.path.abspath(__file__))


def ts(v):
    return datetime.strptime(v.decode().rstrip("Z"), "%Y-%m-%dT%H:%M:%S.%f").timestamp()


def lease(base):
    r0 = redis.Redis.from_url(base + "/0")
    for db in range(15, 0, -1):
        if r0.set(f"mindora:test-db-lease:{db}", "bench", nx=True, ex=3600):
            return db
    sys.exit("no free Redis database")


def enqueue(r, n, queue="bench"):
    q = Queue(queue, connection=r)
    for start in range(0, n, 1000):
        with r.pipeline() as p:
            for i in range(start, min(n, start + 1000)):
                q.enqueue("mindora.noop", job_id=f"b{i}", pipeline=p, result_ttl=600)
            p.execute()


def span(r, n):
    with r.pipeline() as p:
        for i in range(n):
            p.hmget(f"rq:job:b{i}", "status", "started_at", "ended_at", "enqueued_at")
        rows = p.execute()
    assert all(row[0] == b"finished" for row in rows), "not all jobs finished"
    starts = [ts(row[1]) for row in rows]
    ends = [ts(row[2]) for row in rows]
    return max(ends) - min(starts)


def redis_counters(r):
    cpu, stats = r.info("cpu"), r.info("stats")
    return cpu["used_cpu_sys"] + cpu["used_cpu_user"], stats["total_commands_processed"]


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_throughput(r, url, n, cmd, env, enqueued=False):
    if not enqueued:
        r.flushdb()
        enqueue(r, n)
    cpu0, cmds0 = redis_counters(r)
    child0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.time() - t0
    child1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    worker_cpu = (child1.ru_utime + child1.ru_stime) - (child0.ru_utime + child0.ru_stime)
    cpu1, cmds1 = redis_counters(r)
    busy = span(r, n)
    return {"jobs_per_s": n / busy, "wall_s": wall, "redis_cpu_us_per_job": (cpu1 - cpu0) / n * 1e6,
            "redis_cmds_per_job": (cmds1 - cmds0) / n, "worker_cpu_us_per_job": worker_cpu / n * 1e6}


def run_latency(r, n, cmd, env):
    r.flushdb()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(2.0)
        idle_rss = rss_mb(proc.pid)
        q = Queue("bench", connection=r)
        lat = []
        for i in range(n):
            job = q.enqueue("mindora.noop", job_id=f"l{i}")
            deadline = time.time() + 10
            while r.hget(f"rq:job:l{i}", "status") != b"finished":
                if time.time() > deadline:
                    raise SystemExit(f"job l{i} did not finish")
                time.sleep(0.0002)
            enq, end = r.hmget(f"rq:job:l{i}", "enqueued_at", "ended_at")
            lat.append((ts(end) - ts(enq)) * 1000)
        lat.sort()
        return {"p50_ms": statistics.median(lat), "p99_ms": lat[int(len(lat) * 0.99) - 1], "idle_rss_mb": idle_rss}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def compare(r, url, a, env):
    """Alternating throughput rounds of the baseline binary and ours; medians side by side."""
    def cmd(binary):
        return [binary, "--redis-url", url, "--queues", "bench", "--burst", "--concurrency", str(a.concurrency)]
    runs = {"baseline": [], "this": []}
    for i in range(a.rounds):
        for name, binary in (("baseline", a.baseline), ("this", a.worker)):
            t = run_throughput(r, url, a.mindora_jobs, cmd(binary), env)
            runs[name].append(t)
            print(f"round {i + 1} {name:>8}: {t['jobs_per_s']:.0f} jobs/s, {t['redis_cmds_per_job']:.1f} Redis commands/job, "
                  f"{t['redis_cpu_us_per_job']:.1f} us Redis CPU/job, {t['worker_cpu_us_per_job']:.1f} us worker CPU/job", flush=True)
    med = {n: {k: statistics.median(t[k] for t in ts) for k in ts[0]} for n, ts in runs.items()}
    b, t = med["baseline"], med["this"]
    print(f"\nmedians of {a.rounds} alternating rounds, {a.mindora_jobs} jobs, --concurrency {a.concurrency}")
    print(f"{'':34}{'baseline':>18}{'this build':>18}{'this/baseline':>15}")
    for key, label in (("jobs_per_s", "throughput (no-op jobs/s)"), ("redis_cmds_per_job", "Redis commands per job"),
                       ("redis_cpu_us_per_job", "Redis CPU per job (us)"), ("worker_cpu_us_per_job", "worker CPU per job (us)")):
        print(f"{label:34}{b[key]:>18.1f}{t[key]:>18.1f}{t[key] / b[key]:>14.2f}x")
    for name, m in (("baseline", b), ("this build", t)):
        print(f"{'Redis CPU busy, ' + name:34}{m['redis_cpu_us_per_job'] * m['jobs_per_s'] / 1e6 * 100:>17.0f}%")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", required=True, help="path to the release mindora-worker")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379")
    ap.add_argument("--rq-jobs", type=int, default=2000)
    ap.add_argument("--mindora-jobs", type=int, default=50000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--latency-jobs", type=int, default=300)
    ap.add_argument("--baseline", help="another mindora-worker binary to compare against")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds with --baseline")
    a = ap.parse_args()
    db = lease(a.redis)
    url = f"{a.redis}/{db}"
    r = redis.Redis.from_url(url)
    env = dict(os.environ, PYTHONPATH=HERE, RUST_LOG="error")
    rqw = os.path.join(os.path.dirname(sys.executable), "rq")
    rq_cmd = [rqw, "worker", "--burst", "-w", "rq.worker.SimpleWorker", "--url", url, "-q", "bench"]
    mw_cmd = [a.worker, "--redis-url", url, "--queues", "bench", "--burst", "--concurrency", str(a.concurrency)]
    try:
        import rq
        print(f"rq {rq.__version__} vs mindora-worker; Redis {r.info('server')['redis_version']}; {os.cpu_count()} cores")
        rq_t = run_throughput(r, url, a.rq_jobs, rq_cmd, env)
        mw_t = run_throughput(r, url, a.mindora_jobs, mw_cmd, env)
        mw_1 = run_throughput(r, url, a.mindora_jobs // 5, mw_cmd[:-1] + ["1"], env)
        rq_l = run_latency(r, a.latency_jobs, [rqw, "worker", "-w", "rq.worker.SimpleWorker", "--url", url, "bench"], env)
        mw_l = run_latency(r, a.latency_jobs, [a.worker, "--redis-url", url, "--queues", "bench", "--concurrency", str(a.concurrency)], env)
        print(f"\n{'':34}{'rq SimpleWorker':>18}{'mindora-worker':>18}{'ratio':>10}")
        print(f"{'throughput (no-op jobs/s)':34}{rq_t['jobs_per_s']:>18.0f}{mw_t['jobs_per_s']:>18.0f}{mw_t['jobs_per_s'] / rq_t['jobs_per_s']:>9.1f}x")
        print(f"{'  mindora --concurrency 1':34}{'':>18}{mw_1['jobs_per_s']:>18.0f}{mw_1['jobs_per_s'] / rq_t['jobs_per_s']:>9.1f}x")
        print(f"{'worker CPU per job (us)':34}{rq_t['worker_cpu_us_per_job']:>18.1f}{mw_t['worker_cpu_us_per_job']:>18.1f}{rq_t['worker_cpu_us_per_job'] / mw_t['worker_cpu_us_per_job']:>9.1f}x")
        print(f"{'Redis commands per job':34}{rq_t['redis_cmds_per_job']:>18.1f}{mw_t['redis_cmds_per_job']:>18.1f}")
        print(f"{'Redis CPU per job (us)':34}{rq_t['redis_cpu_us_per_job']:>18.1f}{mw_t['redis_cpu_us_per_job']:>18.1f}")
        print(f"{'Redis CPU busy at mindora rate':34}{'':>18}{mw_t['redis_cpu_us_per_job'] * mw_t['jobs_per_s'] / 1e6 * 100:>17.0f}%")
        print(f"{'enqueue-to-finish p50 (ms)':34}{rq_l['p50_ms']:>18.2f}{mw_l['p50_ms']:>18.2f}")
        print(f"{'enqueue-to-finish p99 (ms)':34}{rq_l['p99_ms']:>18.2f}{mw_l['p99_ms']:>18.2f}")
        print(f"{'idle RSS (MB)':34}{rq_l['idle_rss_mb']:>18.1f}{mw_l['idle_rss_mb']:>18.1f}")
        if a.baseline:
            compare(r, url, a, env)
    finally:
        r.flushdb()
        redis.Redis.from_url(a.redis + "/0").delete(f"mindora:test-db-lease:{db}")


if __name__ == "__main__":
    main()
