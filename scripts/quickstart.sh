#!/usr/bin/env bash
# Set up and run mindora-worker against the local Redis: builds the worker, makes a Python
# venv with rq, enqueues a few jobs from Python rq, runs the worker until the queues are
# empty, and reads every outcome back with Python rq.
#   REDIS_URL=redis://127.0.0.1:6379/9 bash scripts/quickstart.sh
set -euo pipefail
cd "$(dirname "$0")/.."
url="${REDIS_URL:-redis://127.0.0.1:6379/9}"
bash tests/setup-python.sh
py="${MINDORA_CACHE:-$HOME/.cache/mindora}/venv-rq30/bin/python"
cargo build -p mindora-app --bin mindora-worker
target="${CARGO_TARGET_DIR:-target}"
REDIS_URL="$url" "$py" - <<'PY'
import os, redis
from datetime import timedelta
from rq import Queue, Retry
r = redis.Redis.from_url(os.environ["REDIS_URL"])
q = Queue("default", connection=r)
q.enqueue("mindora.echo", "hello", lang="python", job_id="qs-echo")
q.enqueue("mindora.fail", "this one fails on purpose", job_id="qs-fail", retry=Retry(max=1))
q.enqueue_in(timedelta(seconds=1), "mindora.echo", "scheduled", job_id="qs-later")
q.enqueue("mindora.echo", "after echo", job_id="qs-child", depends_on="qs-echo")
print("enqueued 4 jobs on", os.environ["REDIS_URL"])
PY
echo "running mindora-worker (burst mode: exits when the queues are empty)"
sleep 1.2
"$target/debug/mindora-worker" --redis-url "$url" --queues default --burst --concurrency 8
REDIS_URL="$url" "$py" - <<'PY'
import os, redis
from rq.job import Job
r = redis.Redis.from_url(os.environ["REDIS_URL"])
for jid in ["qs-echo", "qs-child", "qs-later", "qs-fail"]:
    j = Job.fetch(jid, connection=r)
    res = j.latest_result()
    out = j.return_value() if j.get_status() == "finished" else res.exc_string.strip().splitlines()[-1]
    print(f"{jid:10} {j.get_status():9} {out}")
PY
