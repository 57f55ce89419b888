#!/usr/bin/env python3
"""The monitoring stack for real, on loopback: Debian's prometheus, prometheus-alertmanager and
prometheus-node-exporter with the project's configs, scraping 3 real mindora-worker processes
that do rq work (private redis-server) and AMQP work (private RabbitMQ node started with the
project's rabbitmq.conf and its Prometheus plugin).

  monitoring.py --worker BIN [--worker-log-out FILE]

What is rewritten in the CI copies, and only that: targets and listen addresses -> free
loopback ports; scrape/evaluation intervals 15s -> 1s; alert `for:` durations -> 3s (the real
durations are covered by `promtool test rules`); Alertmanager group_wait -> 1s and the
webhook URL -> a local receiver. The worker job's DNS discovery (one A record per compose
replica) becomes file discovery of the 3 local replicas. Jobs of services that cannot run here
(grafana, exporters of PostgreSQL/Redis/Elasticsearch, S3 (SeaweedFS), Qdrant, Consul) are dropped.

The 3 replicas also run one cron schedule (`--cron`, a 2-second tick written by this script),
so the dashboard's Cron panels have real series.

Asserts: the 3 replicas are discovered and up, and a 4th started at run time is discovered
without a Prometheus reload; every query of every panel of the Grafana
"mindora tasks" dashboard returns series through Prometheus' HTTP API; the cron entry is
reported by all 3 scheduling replicas and its ticks are enqueued; killing a replica fires
WorkerReplicaDown in Prometheus, Alertmanager holds it, and its webhook receives it.
"""
import argparse
import copy
import glob
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.parse
import urllib.request

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, Procs, Report, free_port, http_json, render, retry, wait_port  # noqa: E402

CACHE = os.environ.get("MINDORA_CACHE", os.path.expanduser("~/.cache/mindora"))
RQ_PY = os.path.join(CACHE, "venv-rq212", "bin", "python")
PIKA_PY = os.path.join(CACHE, "venv-pika", "bin", "python")
REPLICAS = 3
CRON_ENTRY = "monitoring-beat"
# Every 2 s onto "default" (served by the replicas); written next to the other CI copies.
CRON_FILE = f"""[[job]]
name = "{CRON_ENTRY}"
cron = "*/2 * * * * *"
queue = "default"
func = "mindora.noop"
result_ttl = 60
"""
KEEP_JOBS = {"prometheus", "alertmanager", "node", "rabbitmq", "worker"}


class Hook(http.server.BaseHTTPRequestHandler):
    """Alertmanager webhook stand-in: keeps each notification, checks its wire format."""
    received = []
    violations = []

    def do_POST(self):  # noqa: N802 - http.server API
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            msg = json.loads(body)
            if msg.get("version") != "4" or not isinstance(msg.get("alerts"), list):
                Hook.violations.append(f"not an Alertmanager v4 webhook payload: {body[:200]!r}")
            Hook.received.append(msg)
        except ValueError:
            Hook.violations.append(f"webhook body is not JSON: {body[:200]!r}")
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def rabbitmq(procs, tmp):
    """A private RabbitMQ node: the project's rabbitmq.conf (ports moved to free loopback ones),
    the Prometheus + management plugins, its own data dir and node name."""
    amqp, prom, mgmt, dist = free_port(), free_port(), free_port(), free_port()
    conf = open(os.path.join(ROOT, "infra/rabbitmq/rabbitmq.conf")).read()
    conf = re.sub(r"^prometheus\.tcp\.port = .*$", f"prometheus.tcp.port = {prom}", conf, flags=re.M)
    conf = re.sub(r"^management\.tcp\.port = .*$", f"management.tcp.port = {mgmt}", conf, flags=re.M)
    conf += f"\nlisteners.tcp.1 = 127.0.0.1:{amqp}\nprometheus.tcp.ip = 127.0.0.1\nmanagement.tcp.ip = 127.0.0.1\n"
    d = os.path.join(tmp, "rabbitmq")
    os.makedirs(d)
    with open(os.path.join(d, "rabbitmq.conf"), "w") as f:
        f.write(conf)
    with open(os.path.join(d, "enabled_plugins"), "w") as f:
        f.write("[rabbitmq_management,rabbitmq_prometheus].\n")
    node = f"mindora-mon-{os.getpid()}@localhost"
    env = dict(os.environ, RABBITMQ_NODENAME=node, RABBITMQ_NODE_PORT=str(amqp),
               RABBITMQ_DIST_PORT=str(dist), RABBITMQ_CONFIG_FILE=os.path.join(d, "rabbitmq.conf"),
               RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(d, "enabled_plugins"),
               RABBITMQ_MNESIA_BASE=os.path.join(d, "mnesia"), RABBITMQ_LOG_BASE=os.path.join(d, "log"),
               RABBITMQ_PID_FILE=os.path.join(d, "pid"), RABBITMQ_LOGS="-")
    # Debian's rabbitmq-server runs the node as the rabbitmq user when started as root.
    os.chmod(tmp, 0o755)
    if os.getuid() == 0:
        shutil.chown(d, "rabbitmq", "rabbitmq")
    p = procs.start("rabbitmq", ["rabbitmq-server"], env=env, cwd=d)
    return p, node, amqp, prom, env


def prometheus_config(tmp, ports, targets_file, rules_dir):
    text = render(os.path.join(ROOT, "infra/prometheus/prometheus.yml"), os.path.join(tmp, "prom.rendered"))
    cfg = yaml.safe_load(text)
    cfg["global"]["scrape_interval"] = "1s"
    cfg["global"]["evaluation_interval"] = "1s"
    cfg["rule_files"] = [os.path.join(rules_dir, "*.yml")]
    cfg["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [f"127.0.0.1:{ports['alertmanager']}"]
    jobs = []
    dropped = []
    for job in cfg["scrape_configs"]:
        name = job["job_name"]
        if name not in KEEP_JOBS:
            dropped.append(name)
            continue
        job = copy.deepcopy(job)
        job["scrape_timeout"] = "1s"
        if name == "worker":
            assert job.get("dns_sd_configs"), "the worker job must discover replicas by DNS"
            del job["dns_sd_configs"]
            job["file_sd_configs"] = [{"files": [targets_file], "refresh_interval": "1s"}]
        else:
            job["static_configs"] = [{"targets": [f"127.0.0.1:{ports[name]}"]}]
        if name == "rabbitmq":
            # the project's rabbitmq.conf asks for per-object series on /metrics
            job.pop("metrics_path", None)
        jobs.append(job)
    cfg["scrape_configs"] = jobs
    return cfg, dropped


def rules_copy(tmp):
    out = os.path.join(tmp, "rules")
    os.makedirs(out)
    for path in glob.glob(os.path.join(ROOT, "infra/prometheus/rules/*.yml")):
        text = open(path).read()
        text = re.sub(r"^(\s+for:) \S+$", r"\1 3s", text, flags=re.M)
        with open(os.path.join(out, os.path.basename(path)), "w") as f:
            f.write(text)
    return out


def dashboard_queries():
    d = json.load(open(os.path.join(ROOT, "infra/grafana/dashboards/mindora-tasks.json")))
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append((p.get("title", "?"), t["expr"]))
            walk(p.get("panels", []))

    walk(d["panels"])
    return out


def grafana_to_promql(expr):
    for v in ("$__rate_interval", "${__rate_interval}", "$__interval", "${__interval}"):
        expr = expr.replace(v, "20s")
    return re.sub(r"\$\{?(source|queue)\}?", ".*", expr)


def enqueue_rq(redis_url, code):
    subprocess.run([RQ_PY, "-c", code, redis_url], check=True, timeout=120)


RQ_WORK = r"""
import sys
from redis import Redis
from rq import Queue, Retry
conn = Redis.from_url(sys.argv[1])
for q in ("high", "default", "low"):
    queue = Queue(q, connection=conn)
    for i in range(30):
        queue.enqueue("mindora.echo", i, x=q)
    for i in range(3):
        queue.enqueue("mindora.sleep", 0.5)
    for i in range(2):
        queue.enqueue("mindora.fail", "monitoring run: expected failure", retry=Retry(max=1))
    for i in range(5):
        queue.enqueue("pytasks.add", i, y=1)
# A backlog that stays: more long sleeps than the 3 replicas have slots, so jobs wait and the
# oldest-job-age gauge has something to report.
low = Queue("low", connection=conn)
for i in range(40):
    low.enqueue("mindora.sleep", 20)
print("rq jobs enqueued")
"""


def publish_amqp(url, count, function):
    subprocess.run([PIKA_PY, os.path.join(ROOT, "tests/amqp/publish.py"), url, "ai_processing_tasks",
                    str(count), "--function", function], check=True, timeout=120,
                   stdout=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", required=True)
    ap.add_argument("--worker-log-out", help="copy the replicas' JSON log lines here")
    args = ap.parse_args()
    report = Report("monitoring")
    tmp = tempfile.mkdtemp(prefix="mindora-monitoring-")
    procs = Procs(tmp)
    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    rabbit = None
    try:
        ports = {n: free_port() for n in ("prometheus", "alertmanager", "node", "redis")}
        # --- brokers
        rabbit, node, amqp_port, prom_port, rabbit_env = rabbitmq(procs, tmp)
        ports["rabbitmq"] = prom_port
        redis = procs.start("redis", ["redis-server", "--bind", "127.0.0.1", "--port", str(ports["redis"]),
                                      "--save", "", "--appendonly", "no", "--dir", tmp])
        wait_port(ports["redis"], 20, "redis-server", redis)
        # --- alertmanager + node exporter
        am_cfg = os.path.join(tmp, "alertmanager.yml")
        text = render(os.path.join(ROOT, "infra/alertmanager/alertmanager.yml"), am_cfg,
                      {"ALERT_WEBHOOK_URL": f"http://127.0.0.1:{hook.server_address[1]}/hook"})
        with open(am_cfg, "w") as f:
            f.write(re.sub(r"group_wait: \S+", "group_wait: 1s", text))
        am = procs.start("alertmanager", ["prometheus-alertmanager", f"--config.file={am_cfg}",
                                          f"--storage.path={tmp}/am", f"--web.listen-address=127.0.0.1:{ports['alertmanager']}",
                                          "--cluster.listen-address="])
        ne = procs.start("node-exporter", ["prometheus-node-exporter", f"--web.listen-address=127.0.0.1:{ports['node']}"])
        wait_port(ports["alertmanager"], 30, "alertmanager", am)
        wait_port(ports["node"], 30, "node-exporter", ne)
        wait_port(amqp_port, 90, "rabbitmq", rabbit)
        wait_port(prom_port, 60, "rabbitmq prometheus plugin", rabbit)
        conf = open(os.path.join(ROOT, "infra/rabbitmq/rabbitmq.conf")).read()
        want = re.search(r"^vm_memory_high_watermark\.absolute = (\d+)MiB", conf, re.M)
        scraped = urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/metrics", timeout=10).read().decode()
        limit = re.search(r"^rabbitmq_resident_memory_limit_bytes (\S+)", scraped, re.M)
        report.check("private RabbitMQ node with the project's rabbitmq.conf: memory alarm at the absolute watermark",
                     bool(want and limit) and float(limit.group(1)) == int(want.group(1)) * 1024**2,
                     f"node {node}, rabbitmq_resident_memory_limit_bytes {limit.group(1) if limit else '?'}")
        # --- 3 workers: rq + AMQP
        amqp_url = f"amqp://guest:guest@127.0.0.1:{amqp_port}/%2f"
        redis_url = f"redis://127.0.0.1:{ports['redis']}/0"
        workers, targets, logs = [], [], []
        cron_file = os.path.join(tmp, "cron.toml")
        with open(cron_file, "w") as f:
            f.write(CRON_FILE)

        def start_worker(i, cron=False):
            mp = free_port()
            extra = {"MINDORA_CRON": cron_file} if cron else {}
            env = dict(os.environ, **extra, MINDORA_REDIS_URL=redis_url, MINDORA_QUEUES="high,default,low",
                       MINDORA_CONCURRENCY="4", MINDORA_NAME=f"monitoring-{i}", MINDORA_METRICS_ADDR=f"127.0.0.1:{mp}",
                       MINDORA_LOG_FORMAT="json", RUST_LOG="info", MINDORA_AMQP_URL=amqp_url,
                       MINDORA_AMQP_QUEUES="ai_processing_tasks", MINDORA_AMQP_RETRY_DELAYS="1",
                       MINDORA_AMQP_MAX_ATTEMPTS="2", MINDORA_AMQP_DEPTH_EVERY_SECS="1",
                       MINDORA_HEARTBEAT_SECS="2",
                       # Every replica runs the --python pool (one process), as the
                       # python-tasks override does, so the dashboard's Python row has series.
                       MINDORA_PYTHON="true", MINDORA_PYTHON_INTERPRETER=RQ_PY,
                       MINDORA_PYTHON_PATH=os.pathsep.join([os.path.join(ROOT, "python"),
                                                            os.path.join(ROOT, "tests/python")]),
                       MINDORA_PYTHON_PROCESSES="1")
            w = procs.start(f"worker-{i}", [args.worker], env=env)
            workers.append((w, mp))
            logs.append(os.path.join(tmp, f"worker-{i}.log"))
            targets.append(f"127.0.0.1:{mp}")
            return w, mp

        for i in range(REPLICAS):
            start_worker(i, cron=True)
        for w, mp in workers:
            wait_port(mp, 60, "mindora-worker /metrics", w)
        targets_file = os.path.join(tmp, "workers.json")
        with open(targets_file, "w") as f:
            json.dump([{"targets": targets}], f)
        # --- prometheus with the project's config and rules
        rules_dir = rules_copy(tmp)
        cfg, dropped = prometheus_config(tmp, ports, targets_file, rules_dir)
        with open(os.path.join(tmp, "prometheus.yml"), "w") as f:
            yaml.safe_dump(cfg, f)
        prom = procs.start("prometheus", ["prometheus", f"--config.file={tmp}/prometheus.yml",
                                          f"--storage.tsdb.path={tmp}/tsdb", f"--web.listen-address=127.0.0.1:{ports['prometheus']}"])
        wait_port(ports["prometheus"], 30, "prometheus", prom)
        api = f"http://127.0.0.1:{ports['prometheus']}/api/v1"
        # --- work
        enqueue_rq(redis_url, RQ_WORK)
        publish_amqp(amqp_url, 40, "mindora.echo")
        publish_amqp(amqp_url, 3, "mindora.fail")

        def workers_up(n):
            t = http_json(f"{api}/targets?state=active")["data"]["activeTargets"]
            up = sorted(x["labels"]["instance"] for x in t if x["labels"]["job"] == "worker" and x["health"] == "up")
            return up if len(up) == n else None

        up = retry(30, lambda: workers_up(REPLICAS))
        report.check(f"Prometheus discovered {REPLICAS} worker replicas, all up", bool(up), f"{up}")
        # Scale out like `--scale worker=N`: a new replica appears without touching Prometheus.
        w, mp = start_worker(REPLICAS)
        wait_port(mp, 60, "mindora-worker /metrics", w)
        with open(targets_file + ".tmp", "w") as f:
            json.dump([{"targets": targets}], f)
        os.replace(targets_file + ".tmp", targets_file)
        up = retry(30, lambda: workers_up(REPLICAS + 1))
        report.check(f"a replica added at run time is discovered ({REPLICAS + 1} up, no Prometheus reload)",
                     bool(up), f"{up}")
        others = retry(20, lambda: [x for x in http_json(f"{api}/targets?state=active")["data"]["activeTargets"]
                                    if x["labels"]["job"] != "worker" and x["health"] == "up"] or None)
        jobs_up = sorted({x["labels"]["job"] for x in others or []})
        report.check("prometheus, alertmanager, node, rabbitmq targets up", jobs_up == sorted(KEEP_JOBS - {"worker"}),
                     f"{jobs_up}; not run here: {dropped}")

        queries = dashboard_queries()
        missing = {}

        def all_return_series():
            missing.clear()
            for title, expr in queries:
                q = grafana_to_promql(expr)
                r = http_json(f"{api}/query?" + urllib.parse.urlencode({"query": q}))
                if r["status"] != "success" or not r["data"]["result"]:
                    missing[title + " | " + q] = r.get("error", "no series")
            return not missing

        ok = retry(90, all_return_series, every=2)
        report.check(f"every query of the 'mindora tasks' dashboard returns series ({len(queries)} queries)", ok,
                     "; ".join(f"{k}: {v}" for k, v in list(missing.items())[:6]))

        def cron_seen():
            sel = f'{{entry="{CRON_ENTRY}"}}'
            n = http_json(f"{api}/query?" + urllib.parse.urlencode({"query": f"count(mindora_cron_next_run_timestamp_seconds{sel})"}))
            e = http_json(f"{api}/query?" + urllib.parse.urlencode({"query": f"sum(mindora_cron_enqueued_total{sel})"}))
            replicas = int(float(n["data"]["result"][0]["value"][1])) if n["data"]["result"] else 0
            enqueued = int(float(e["data"]["result"][0]["value"][1])) if e["data"]["result"] else 0
            return (replicas, enqueued) if replicas == REPLICAS and enqueued >= 3 else None

        seen = retry(30, cron_seen)
        report.check(f"cron entry {CRON_ENTRY!r} reported by the {REPLICAS} scheduling replicas, its ticks enqueued",
                     bool(seen), f"(replicas, ticks enqueued in total) = {seen}")
        # --- an alert end to end: kill one replica
        victim, vport = workers[-1]
        procs.stop(victim, signal.SIGKILL)

        def firing():
            a = http_json(f"{api}/alerts")["data"]["alerts"]
            return [x for x in a if x["labels"]["alertname"] == "WorkerReplicaDown" and x["state"] == "firing"
                    and x["labels"].get("instance") == f"127.0.0.1:{vport}"]

        f = retry(40, firing)
        report.check("killing a replica fires WorkerReplicaDown in Prometheus", bool(f),
                     f"{[x['labels'] for x in f or []]}")

        def in_am():
            a = http_json(f"http://127.0.0.1:{ports['alertmanager']}/api/v2/alerts")
            return [x for x in a if x["labels"].get("alertname") == "WorkerReplicaDown"]

        held = retry(30, in_am)
        report.check("Alertmanager holds WorkerReplicaDown", bool(held),
                     f"receivers {[r['name'] for x in held or [] for r in x.get('receivers', [])]}")

        def hooked():
            return [a for m in Hook.received for a in m["alerts"]
                    if a["labels"].get("alertname") == "WorkerReplicaDown" and a["status"] == "firing"]

        got = retry(30, hooked)
        report.check("Alertmanager's webhook receiver got WorkerReplicaDown (v4 payload)",
                     bool(got) and not Hook.violations, f"{len(got or [])} alerts; {Hook.violations[:2]}")
        if args.worker_log_out:
            with open(args.worker_log_out, "w") as out:
                for path in logs:
                    for line in open(path, errors="replace"):
                        if line.startswith("{"):
                            out.write(line)
    except Exception as e:  # noqa: BLE001 - report, then clean up
        report.check("run", False, f"{type(e).__name__}: {e}")
        for path in sorted(glob.glob(os.path.join(tmp, "*.log"))):
            print(f"--- {os.path.basename(path)} (tail)")
            print("".join(open(path, errors="replace").readlines()[-15:]))
    finally:
        hook.shutdown()
        if rabbit is not None and rabbit.poll() is None:
            subprocess.run(["rabbitmqctl", "-n", node, "stop"], env=rabbit_env, timeout=60,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    report.finish()


if __name__ == "__main__":
    main()
