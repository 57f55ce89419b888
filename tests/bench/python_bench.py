"""Benchmark: one Python function under rq's own workers and under mindora-worker --python.

Same Redis, same jobs enqueued by Python rq, in one run: `rq worker` (fork per job),
`rq worker` with `SimpleWorker` (no fork), `rq worker-pool -n N` (N forking workers) and
`mindora-worker --python --python-processes N`. For a no-op function and for a 20 ms
I/O-bound one (`time.sleep(0.02)`; plus its `async def` twin on mindora): jobs/s (jobs over
first start to last end, read from the job hashes), CPU per job of the whole worker process
tree, peak RSS of that tree. Prints figures and ratios; asserts nothing.
"""
import argparse
import os
import resource
import subprocess
import sys
import threading
import time

import redis
from rq import Queue

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from rq_bench import lease, span  # noqa: E402


def enqueue(r, n, func):
    q = Queue("pybench", connection=r)
    for start in range(0, n, 1000):
        with r.pipeline() as p:
            for i in range(start, min(n, start + 1000)):
                q.enqueue(func, job_id=f"b{i}", pipeline=p, result_ttl=600)
            p.execute()


def tree_rss_mb(root):
    """Resident memory of `root` and all its descendants, in MB."""
    parents, rss = {}, {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                parents[int(pid)] = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/statm") as f:
                rss[int(pid)] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            pass
    tree, grew = {root}, True
    while grew:
        grew = False
        for pid, ppid in parents.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return sum(rss.get(p, 0) for p in tree) / 1e6


def run(r, n, func, cmd, env):
    r.flushdb()
    enqueue(r, n, func)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = [0.0]

    def sample():
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss_mb(proc.pid))
            time.sleep(0.05)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    proc.wait()
    t.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {"jobs_per_s": n / span(r, n), "cpu_us_per_job": cpu / n * 1e6, "peak_rss_mb": peak[0]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", required=True, help="mindora-worker binary")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--fork-jobs", type=int, default=300)
    ap.add_argument("--rq-jobs", type=int, default=2000)
    ap.add_argument("--mindora-jobs", type=int, default=20000)
    ap.add_argument("--io-jobs", type=int, default=300)
    a = ap.parse_args()
    n = a.processes
    db = lease(a.redis)
    url = f"{a.redis}/{db}"
    r = redis.Redis.from_url(url)
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "tests/python"), RUST_LOG="error")
    rq = os.path.join(os.path.dirname(sys.executable), "rq")
    mindora = [a.worker, "--redis-url", url, "--queues", "pybench", "--burst", "--python",
               "--python-interpreter", sys.executable,
               "--python-path", os.path.join(ROOT, "python") + ":" + os.path.join(ROOT, "tests/python"),
               "--python-processes", str(n), "--concurrency", str(4 * n)]
    peers = {
        "rq worker (fork)": [rq, "worker", "-u", url, "--burst", "pybench"],
        "rq SimpleWorker": [rq, "worker", "-u", url, "--burst", "-w", "rq.worker.SimpleWorker", "pybench"],
        f"rq worker-pool -n {n}": [rq, "worker-pool", "-u", url, "--burst", "-n", str(n), "pybench"],
        f"mindora --python x{n}": mindora,
    }
    try:
        rows = []
        for label, cmd in peers.items():
            jobs = {"rq worker (fork)": a.fork_jobs}.get(label, a.mindora_jobs if label.startswith("mindora") else a.rq_jobs)
            rows.append(("no-op", label, run(r, jobs, "pytasks.noop", cmd, env)))
        for label, cmd in peers.items():
            rows.append(("io 20 ms", label, run(r, a.io_jobs, "pytasks.io20", cmd, env)))
        async_cmd = mindora[:-1] + [str(n * 8)]
        rows.append(("io 20 ms", f"mindora --python x{n}, async def, 8 slots", run(r, a.io_jobs * 5, "pytasks.io20_async", async_cmd, env)))
        print(f"\n{'function':10} {'worker':44} {'jobs/s':>9} {'CPU us/job':>11} {'peak RSS MB':>12}")
        for fn, label, m in rows:
            print(f"{fn:10} {label:44} {m['jobs_per_s']:9.0f} {m['cpu_us_per_job']:11.0f} {m['peak_rss_mb']:12.1f}")
        noop = {label: m for fn, label, m in rows if fn == "no-op"}
        mind = noop[f"mindora --python x{n}"]["jobs_per_s"]
        print(f"\nno-op: mindora --python x{n} = {mind / noop['rq worker (fork)']['jobs_per_s']:.1f}x rq worker (fork), "
              f"{mind / noop[f'rq worker-pool -n {n}']['jobs_per_s']:.1f}x rq worker-pool -n {n}, "
              f"{mind / noop['rq SimpleWorker']['jobs_per_s']:.1f}x SimpleWorker")
    finally:
        r.flushdb()
        redis.Redis.from_url(a.redis + "/0").delete(f"mindora:test-db-lease:{db}")


if __name__ == "__main__":
    main()
