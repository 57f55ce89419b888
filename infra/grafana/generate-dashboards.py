#!/usr/bin/env python3
"""Writes infra/grafana/dashboards/*.json. Edit the panel lists here, run
`python3 infra/grafana/generate-dashboards.py`, commit the JSON. infra/check.sh checks
that every metric the queries name really exists."""
import json
import os
import urllib.parse

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dashboards")
DS = {"type": "prometheus", "uid": "prometheus"}
# The Jaeger data source (infra/grafana/provisioning/datasources/): traces, linked to the logs.
JAEGER = {"type": "jaeger", "uid": "jaeger"}


def explore_traces(service, tags=""):
    """A Grafana Explore URL that searches Jaeger for `service`'s traces (logfmt `tags`)."""
    query = {"refId": "A", "datasource": JAEGER, "queryType": "search", "service": service, "limit": 50}
    if tags:
        query["tags"] = tags
    panes = {"traces": {"datasource": JAEGER["uid"], "queries": [query], "range": {"from": "now-1h", "to": "now"}}}
    return "/explore?schemaVersion=1&orgId=1&panes=" + urllib.parse.quote(json.dumps(panes, separators=(",", ":")))


def link(title, url, tooltip):
    return {"title": title, "type": "link", "url": url, "tooltip": tooltip, "icon": "external link",
            "targetBlank": False, "keepTime": False, "includeVars": False, "asDropdown": False, "tags": []}


class Board:
    def __init__(self):
        self.panels = []
        self.x = 0
        self.y = 0
        self.row_h = 0
        self.next_id = 1

    def row(self, title):
        self.newline()
        self.panels.append({"type": "row", "title": title, "id": self.next_id, "collapsed": False,
                            "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1}, "panels": []})
        self.next_id += 1
        self.y += 1

    def newline(self):
        if self.x:
            self.y += self.row_h
            self.x = 0
            self.row_h = 0

    def panel(self, title, targets, kind="timeseries", w=12, h=8, unit=None, desc=None, **extra):
        if self.x + w > 24:
            self.newline()
        p = {
            "id": self.next_id, "type": kind, "title": title, "datasource": DS,
            "gridPos": {"x": self.x, "y": self.y, "w": w, "h": h},
            "targets": [
                {"refId": chr(65 + i), "datasource": DS, "expr": expr, "legendFormat": legend,
                 **({"instant": True, "format": "table"} if kind == "table" else {})}
                for i, (expr, legend) in enumerate(targets)
            ],
            "fieldConfig": {"defaults": {"unit": unit} if unit else {}, "overrides": []},
            "options": {},
        }
        if desc:
            p["description"] = desc
        if kind == "timeseries":
            p["options"] = {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
                            "tooltip": {"mode": "multi", "sort": "desc"}}
        if kind == "stat":
            p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                            "colorMode": "value", "graphMode": "area", "textMode": "auto"}
        p.update(extra)
        self.panels.append(p)
        self.next_id += 1
        self.x += w
        self.row_h = max(self.row_h, h)

    def dump(self, uid, title, tags, templating, filename, links=()):
        d = {
            "uid": uid, "title": title, "tags": tags, "timezone": "browser", "editable": False,
            "schemaVersion": 39, "version": 1, "refresh": "30s",
            "time": {"from": "now-3h", "to": "now"},
            "templating": {"list": templating}, "annotations": {"list": []},
            "links": list(links),
            "panels": self.panels,
        }
        with open(os.path.join(OUT, filename), "w") as f:
            json.dump(d, f, indent=2)
            f.write("\n")


def var(name, query, label):
    return {"name": name, "label": label, "type": "query", "datasource": DS,
            "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
            "definition": query, "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*",
            "current": {"text": "All", "value": "$__all"}, "sort": 1}


def tasks():
    b = Board()
    sel = 'source=~"$source", queue=~"$queue"'
    b.row("Fleet")
    b.panel("Workers up", [('count(up{job="worker"} == 1) or vector(0)', "workers")], kind="stat", w=4, h=5)
    b.panel("Workers down", [('count(up{job="worker"} == 0) or vector(0)', "down")], kind="stat", w=4, h=5)
    b.panel("Jobs in flight", [('sum(mindora_jobs_in_flight{source=~"$source"})', "in flight")], kind="stat", w=4, h=5)
    b.panel("Concurrency slots", [("sum(mindora_worker_concurrency)", "slots")], kind="stat", w=4, h=5)
    b.panel("Utilisation", [('sum(mindora_jobs_in_flight{source=~"$source"}) / clamp_min(sum(mindora_worker_concurrency), 1)', "busy")],
            kind="stat", w=4, h=5, unit="percentunit")
    b.panel("Jobs/s (all)", [(f"sum(rate(mindora_jobs_finished_total{{{sel}}}[$__rate_interval]))", "finished/s")], kind="stat", w=4, h=5, unit="ops")
    b.panel("Worker versions", [("mindora_worker_info", "{{name}} {{version}}")], kind="table", w=12, h=6)
    b.panel("Workers up over time", [('sum(up{job="worker"})', "up"), ('count(up{job="worker"})', "discovered")], w=12, h=6)

    b.row("Throughput")
    b.panel("Jobs finished/s by queue and function",
            [(f"sum by (source, queue, function) (rate(mindora_jobs_finished_total{{{sel}}}[$__rate_interval]))", "{{source}}/{{queue}} {{function}}")], unit="ops")
    b.panel("Jobs started/s by queue",
            [(f"sum by (source, queue) (rate(mindora_jobs_started_total{{{sel}}}[$__rate_interval]))", "{{source}}/{{queue}}")], unit="ops")
    b.panel("Failures/s by queue and function",
            [(f"sum by (source, queue, function) (rate(mindora_jobs_failed_total{{{sel}}}[$__rate_interval]))", "{{source}}/{{queue}} {{function}}")], unit="ops")
    b.panel("Failure ratio by queue",
            [(f"sum by (source, queue) (rate(mindora_jobs_failed_total{{{sel}}}[$__rate_interval])) / clamp_min(sum by (source, queue) (rate(mindora_jobs_finished_total{{{sel}}}[$__rate_interval])) + sum by (source, queue) (rate(mindora_jobs_failed_total{{{sel}}}[$__rate_interval])), 1e-9)", "{{source}}/{{queue}}")],
            unit="percentunit")
    b.panel("Retries/s by queue and function",
            [(f"sum by (source, queue, function) (rate(mindora_jobs_retried_total{{{sel}}}[$__rate_interval]))", "{{source}}/{{queue}} {{function}}")], unit="ops")
    b.panel("Dead-lettered jobs (per interval)",
            [(f"sum by (source, queue, function) (increase(mindora_jobs_dead_lettered_total{{{sel}}}[$__rate_interval]))", "{{source}}/{{queue}} {{function}}")], unit="short")

    b.row("Latency")
    b.panel("Job duration p50 / p95 / p99",
            [(f"histogram_quantile({q}, sum by (le) (rate(mindora_job_duration_seconds_bucket{{{sel}}}[$__rate_interval])))", f"p{int(q * 100)}")
             for q in (0.5, 0.95, 0.99)], unit="s")
    b.panel("Job duration p95 by queue and function",
            [(f"histogram_quantile(0.95, sum by (le, queue, function) (rate(mindora_job_duration_seconds_bucket{{{sel}}}[$__rate_interval])))", "{{queue}} {{function}}")], unit="s")
    b.panel("Mean job duration by queue",
            [(f"sum by (queue) (rate(mindora_job_duration_seconds_sum{{{sel}}}[$__rate_interval])) / clamp_min(sum by (queue) (rate(mindora_job_duration_seconds_count{{{sel}}}[$__rate_interval])), 1e-9)", "{{queue}}")], unit="s")
    b.panel("In-flight jobs by source",
            [('sum by (source) (mindora_jobs_in_flight{source=~"$source"})', "{{source}}"), ("sum(mindora_worker_concurrency)", "capacity")])

    b.row("Queues")
    b.panel("Queue depth per lane",
            [(f"max by (source, queue) (mindora_queue_depth{{{sel}}})", "{{source}}/{{queue}}")], unit="short",
            desc="Jobs waiting per Redis priority lane / AMQP queue (max over replicas: every worker reports the same value).")
    b.panel("Oldest waiting job",
            [(f"max by (source, queue) (mindora_queue_oldest_job_age_seconds{{{sel}}})", "{{source}}/{{queue}}")], unit="s")
    b.panel("RabbitMQ ai_processing_tasks (ready / unacked)",
            [('sum by (queue) (rabbitmq_queue_messages_ready{queue=~"ai_processing_tasks.*"})', "ready {{queue}}"),
             ('sum by (queue) (rabbitmq_queue_messages_unacked{queue=~"ai_processing_tasks.*"})', "unacked {{queue}}")], unit="short")
    b.panel("Redis reconnects",
            [("sum(rate(mindora_redis_reconnects_total[$__rate_interval]))", "reconnects/s")], unit="ops")

    b.row("Cron")
    cron_desc = ("Periodic jobs from `--cron FILE`. Every replica running the schedule reports every entry; "
                 "each tick is enqueued by exactly one of them.")
    b.panel("Cron: seconds until next run",
            [("min by (entry) (mindora_cron_next_run_timestamp_seconds) - time()", "{{entry}}")],
            unit="s", w=8, desc=cron_desc)
    b.panel("Cron: seconds since last run",
            [("time() - max by (entry) (mindora_cron_last_run_timestamp_seconds)", "{{entry}}")],
            unit="s", w=8, desc="Since the entry's last tick, whichever replica enqueued it.")
    b.panel("Cron ticks enqueued / missed (per interval)",
            [("sum by (entry) (increase(mindora_cron_enqueued_total[$__rate_interval]))", "enqueued {{entry}}"),
             ("sum by (entry) (increase(mindora_cron_missed_ticks_total[$__rate_interval]))", "missed {{entry}}")],
            unit="short", w=8,
            desc="Enqueued: summed over replicas, one per tick. Missed: ticks more than 60 s late (every replica down), skipped.")
    b.panel("Cron entries: last run, next run, enqueued total",
            [("max by (entry) (mindora_cron_last_run_timestamp_seconds) * 1000", "last run"),
             ("min by (entry) (mindora_cron_next_run_timestamp_seconds) * 1000", "next run"),
             ("sum by (entry) (mindora_cron_enqueued_total)", "enqueued total")],
            kind="table", w=24, h=6,
            transformations=[{"id": "merge", "options": {}},
                             {"id": "organize", "options": {"excludeByName": {"Time": True},
                                                            "renameByName": {"Value #A": "last run", "Value #B": "next run",
                                                                             "Value #C": "enqueued total"}}}],
            fieldConfig={"defaults": {}, "overrides": [
                {"matcher": {"id": "byRegexp", "options": "last run|next run"},
                 "properties": [{"id": "unit", "value": "dateTimeAsIso"}]}]})

    b.row("Python tasks (--python)")
    py_desc = ("The `--python` pool. A job claimed while every process is busy waits for one (at most "
               "--python-wait-secs); its job_timeout starts when a process takes it.")
    b.panel("Python processes: busy / idle",
            [('sum(mindora_python_processes{state="busy"})', "busy"),
             ('sum(mindora_python_processes{state="idle"})', "idle")],
            unit="short", w=8, desc=py_desc)
    b.panel("Wait for a free Python process (p50 / p95 / p99)",
            [(f"histogram_quantile({q}, sum by (le) (rate(mindora_python_process_wait_seconds_bucket[$__rate_interval])))", f"p{int(q * 100)}")
             for q in (0.5, 0.95, 0.99)]
            + [("sum(rate(mindora_python_process_wait_timeouts_total[$__rate_interval]))", "gave up (--python-wait-secs) /s")],
            unit="s", w=8,
            desc="Time from claim to a process taking the job. Jobs that waited longer than --python-wait-secs fail with PythonProcessWaitTimeout (the last series, per second).")
    b.panel("Python process restarts and recycles (per interval)",
            [("sum by (reason) (increase(mindora_python_process_restarts_total[$__rate_interval]))", "restart: {{reason}}"),
             ("sum by (reason) (increase(mindora_python_process_recycles_total[$__rate_interval]))", "recycle: {{reason}}")],
            unit="short", w=8,
            desc="Restarts: killed at a job's timeout, a stopped job, a callback past its timeout, crashed (segfault, OOM kill, exit) or hung. Recycles: --python-max-jobs / --python-max-rss-mb.")

    b.dump("mindora-tasks", "mindora tasks", ["mindora"],
           [var("source", "label_values(mindora_jobs_started_total, source)", "source"),
            var("queue", 'label_values(mindora_jobs_started_total{source=~"$source"}, queue)', "queue")],
           "mindora-tasks.json",
           # Traces (issue 21): the worker's spans in Jaeger; each span links to its log
           # lines in Elasticsearch (trace-to-logs on the Jaeger data source).
           [link("Traces: worker", explore_traces("mindora-worker"),
                 "Grafana Explore: the worker's traces of the last hour in Jaeger (service mindora-worker)"),
            link("Traces: failed jobs", explore_traces("mindora-worker", "error=true"),
                 "Grafana Explore: the worker's traces with an error span (status ERROR)"),
            # Issue 22: every job, its attempts and actions (nginx redirects to console.DOMAIN).
            link("Task console", "/go/console/", "mindora's task console: queues, jobs, history, actions"),
            link("Failed jobs by error", "/go/console/errors",
                 "The task console's failed attempts grouped by error, with bulk requeue")])


def infra():
    b = Board()
    b.row("Targets")
    b.panel("Scrape targets", [("up", "{{job}} {{instance}}")], kind="table", w=12, h=8)
    b.panel("Targets down", [("count(up == 0) or vector(0)", "down")], kind="stat", w=6, h=8)
    b.panel("Targets up", [("count(up == 1) or vector(0)", "up")], kind="stat", w=6, h=8)

    b.row("Host")
    b.panel("CPU busy", [('100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[$__rate_interval])))', "{{instance}}")], unit="percent", w=8)
    b.panel("Memory used", [("1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes", "{{instance}}")], unit="percentunit", w=8)
    b.panel("Load", [("node_load1", "load1"), ("node_load5", "load5")], w=8)
    b.panel("Disk free", [('node_filesystem_avail_bytes{fstype!~"tmpfs|overlay|squashfs|nsfs"} / node_filesystem_size_bytes{fstype!~"tmpfs|overlay|squashfs|nsfs"}', "{{mountpoint}}")], unit="percentunit", w=8)
    b.panel("Disk I/O", [("sum by (device) (rate(node_disk_read_bytes_total[$__rate_interval]))", "read {{device}}"),
                         ("sum by (device) (rate(node_disk_written_bytes_total[$__rate_interval]))", "write {{device}}")], unit="Bps", w=8)
    b.panel("Network", [('sum by (device) (rate(node_network_receive_bytes_total{device!="lo"}[$__rate_interval]))', "rx {{device}}"),
                        ('sum by (device) (rate(node_network_transmit_bytes_total{device!="lo"}[$__rate_interval]))', "tx {{device}}")], unit="Bps", w=8)

    b.row("PostgreSQL")
    b.panel("PostgreSQL up", [("pg_up", "up")], kind="stat", w=4)
    b.panel("Connections", [("sum by (datname) (pg_stat_database_numbackends)", "{{datname}}"), ("max(pg_settings_max_connections)", "max")], w=10)
    b.panel("Transactions/s", [("sum by (datname) (rate(pg_stat_database_xact_commit[$__rate_interval]))", "commit {{datname}}"),
                               ("sum by (datname) (rate(pg_stat_database_xact_rollback[$__rate_interval]))", "rollback {{datname}}")], unit="ops", w=10)
    b.panel("Database size", [("pg_database_size_bytes", "{{datname}}")], unit="bytes", w=12)
    b.panel("Deadlocks", [("sum by (datname) (increase(pg_stat_database_deadlocks[$__rate_interval]))", "{{datname}}")], w=12)

    b.row("Redis")
    b.panel("Redis up", [("redis_up", "up")], kind="stat", w=4)
    b.panel("Memory", [("redis_memory_used_bytes", "used"), ("redis_memory_max_bytes", "max")], unit="bytes", w=10)
    b.panel("Commands/s and clients", [("rate(redis_commands_processed_total[$__rate_interval])", "commands/s"), ("redis_connected_clients", "clients")], w=10)
    b.panel("Keys per DB", [("sum by (db) (redis_db_keys)", "{{db}}")], w=12)
    b.panel("Last RDB save", [("time() - redis_rdb_last_save_timestamp_seconds", "seconds since save")], unit="s", w=12)

    b.row("RabbitMQ")
    b.panel("Messages ready per queue", [("sum by (queue) (rabbitmq_queue_messages_ready)", "{{queue}}")], w=12)
    b.panel("Messages unacked per queue", [("sum by (queue) (rabbitmq_queue_messages_unacked)", "{{queue}}")], w=12)
    b.panel("Connections / channels / consumers", [("sum(rabbitmq_connections)", "connections"), ("sum(rabbitmq_channels)", "channels"), ("sum(rabbitmq_consumers)", "consumers")], w=8)
    b.panel("Publish / deliver rate", [("sum(rate(rabbitmq_global_messages_received_total[$__rate_interval]))", "received/s"),
                                       ("sum(rate(rabbitmq_global_messages_delivered_total[$__rate_interval]))", "delivered/s")], unit="ops", w=8)
    b.panel("Memory vs watermark", [("rabbitmq_process_resident_memory_bytes", "used"), ("rabbitmq_resident_memory_limit_bytes", "watermark")], unit="bytes", w=8)

    b.row("Elasticsearch")
    b.panel("Cluster status", [('max(elasticsearch_cluster_health_status{color="green"}) * 2 + max(elasticsearch_cluster_health_status{color="yellow"})', "status")], kind="stat", w=4,
            desc="2 = green, 1 = yellow, 0 = red")
    b.panel("JVM heap", [('elasticsearch_jvm_memory_used_bytes{area="heap"}', "used {{name}}"), ('elasticsearch_jvm_memory_max_bytes{area="heap"}', "max {{name}}")], unit="bytes", w=10)
    b.panel("Docs and store size", [("sum(elasticsearch_indices_docs)", "docs"), ("sum(elasticsearch_indices_store_size_bytes)", "store bytes")], w=10)
    b.panel("Indexing and search rate", [("sum(rate(elasticsearch_indices_indexing_index_total[$__rate_interval]))", "indexed/s"),
                                         ("sum(rate(elasticsearch_indices_search_query_total[$__rate_interval]))", "queries/s")], unit="ops", w=12)
    b.panel("Data disk free", [("elasticsearch_filesystem_data_available_bytes / elasticsearch_filesystem_data_size_bytes", "{{name}}")], unit="percentunit", w=12)

    b.row("S3 (SeaweedFS), Qdrant, Consul")
    b.panel("S3 disk free", [('SeaweedFS_volumeServer_resource{type="avail"} / ignoring(type) SeaweedFS_volumeServer_resource{type="all"}', "free")], unit="percentunit", w=6)
    b.panel("S3 requests", [("sum by (type) (rate(SeaweedFS_s3_request_total[$__rate_interval]))", "{{type}}"),
                            ('sum(rate(SeaweedFS_s3_request_total{code=~"5.."}[$__rate_interval]))', "5xx")], unit="ops", w=6)
    b.panel("Qdrant collections / vectors", [("collections_total", "collections"), ("sum(collections_vector_total)", "vectors")], w=6)
    b.panel("Qdrant REST requests", [("sum(rate(rest_responses_total[$__rate_interval]))", "requests/s"),
                                     ("sum(rate(rest_responses_fail_total[$__rate_interval]))", "failures/s")], unit="ops", w=6)
    b.panel("Consul, Grafana, Alertmanager, Prometheus, Jaeger up", [('up{job=~"consul|grafana|alertmanager|prometheus|jaeger"}', "{{job}}")], w=24, h=6)
    b.dump("mindora-infrastructure", "infrastructure", ["mindora"], [], "infrastructure.json")


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    tasks()
    infra()
