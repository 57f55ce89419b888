#!/usr/bin/env bash
# Set up and run mindora-worker against the local Redis: builds the worker, makes a Python
# venv with rq, enqueues a few jobs from Python rq, runs the worker until the queues are
# empty, and reads every outcome back with Python rq.
#   REDIS_URL=redis://127.0.0.1:6379/9 bash scripts/quickstart.sh
# When nothing answers on a loopback REDIS_URL, it starts a redis-server there itself (as
# .ci/run does), installing Debian's redis-server first when it is missing and this runs
# as root; that server keeps running (its pid file is printed). MINDORA_WORKER_BIN: use
# this worker binary instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."
url="${REDIS_URL:-redis://127.0.0.1:6379/9}"

# host and port of redis://[user:pass@]host[:port][/db]
hostport="${url#*://}"; hostport="${hostport##*@}"; hostport="${hostport%%/*}"
host="${hostport%:*}"; port="${hostport##*:}"
[ "$port" = "$hostport" ] && port=6379
redis_up() { (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; }
if ! redis_up; then
  case "$host" in
    127.0.0.1|localhost) ;;
    *) echo "no Redis answers at $host:$port (only a loopback one is started here)" >&2; exit 1 ;;
  esac
  if ! command -v redis-server >/dev/null; then
    if [ "$(id -u)" != 0 ]; then
      echo "Redis is not installed: run 'sudo apt-get install -y redis-server' (or start one on $host:$port)" >&2
      exit 1
    fi
    echo "installing redis-server (Debian package)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  fi
  state="${MINDORA_CACHE:-$HOME/.cache/mindora}/quickstart-redis-$port"
  mkdir -p "$state"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
    --dir "$state" --logfile "$state/redis.log" --pidfile "$state/redis.pid"
  for _ in $(seq 1 100); do redis_up && break; sleep 0.1; done
  redis_up || { echo "redis-server did not start; see $state/redis.log" >&2; exit 1; }
  echo "started redis-server on $host:$port (pid file $state/redis.pid)"
fi

bash tests/setup-python.sh
py="${MINDORA_CACHE:-$HOME/.cache/mindora}/venv-rq30/bin/python"
if [ -n "${MINDORA_WORKER_BIN:-}" ]; then
  worker="$MINDORA_WORKER_BIN"
else
  cargo build -p mindora-worker-app --bin mindora-worker
  worker="${CARGO_TARGET_DIR:-target}/debug/mindora-worker"
fi
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
"$worker" --redis-url "$url" --queues default --burst --concurrency 8
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
