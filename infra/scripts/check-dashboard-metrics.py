#!/usr/bin/env python3
"""Check that every PromQL query in the Grafana dashboards (and alert rules) names only
metrics that really exist.

  check-dashboard-metrics.py --dashboards infra/grafana/dashboards \
      [--rules infra/prometheus/rules] [--worker-metrics worker-metrics.txt] \
      [--exporter-metrics infra/tests/exporter-metrics.txt] [--emit-promtool-rules OUT.yml]

A metric name is accepted when it is
  * a mindora_* name present in --worker-metrics (the text of a real worker's /metrics,
    produced by the Rust test suite; histograms count with their _bucket/_sum/_count series),
  * any other name listed in --exporter-metrics (names verified against the pinned exporters).
Without --worker-metrics, mindora_* names are checked against the worker's metric contract
(infra/tests/worker-metrics-contract.txt) only and reported as such.

--emit-promtool-rules writes every dashboard query as a recording rule (Grafana variables
replaced) so `promtool check rules` can check their syntax.
Exit status: 0 when every query passes, 1 otherwise.
"""
import argparse
import glob
import json
import os
import re
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
INFRA = os.path.dirname(HERE)

KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "and", "or", "unless", "atan2", "inf", "nan", "start", "end",
}
LABEL_LIST_KW = ("by", "without", "on", "ignoring", "group_left", "group_right")
GRAFANA_DURATIONS = ("$__rate_interval", "$__interval", "$__range", "${__rate_interval}", "${__interval}", "${__range}")
IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def strip_strings(expr):
    """Remove string literals ("..", '..', `..`) so label values don't look like names."""
    out, i, n = [], 0, len(expr)
    while i < n:
        c = expr[i]
        if c in "\"'`":
            j = i + 1
            while j < n and expr[j] != c:
                j += 2 if expr[j] == "\\" and c != "`" else 1
            out.append(' "" ')
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def strip_braces(expr):
    """Remove label matchers {...} (after strings are gone, braces don't nest)."""
    return re.sub(r"\{[^{}]*\}", " ", expr)


def metric_names(expr):
    """Metric names referenced by a PromQL expression (best effort, no full parser)."""
    e = expr
    for d in GRAFANA_DURATIONS:
        e = e.replace(d, "5m")
    e = re.sub(r"\[\[[A-Za-z0-9_]+\]\]", "x", e)  # old [[var]] syntax
    e = strip_strings(e)
    e = re.sub(r"#[^\n]*", " ", e)  # comments
    e = strip_braces(e)
    e = re.sub(r"\[[^\]]*\]", " ", e)  # range / subquery selectors
    # label lists after by/without/on/ignoring/group_left/group_right
    e = re.sub(r"\b(%s)\s*\([^)]*\)" % "|".join(LABEL_LIST_KW), " ", e)
    e = re.sub(r"\$\{?[A-Za-z0-9_]+\}?", " ", e)  # leftover Grafana variables
    names = set()
    for m in IDENT.finditer(e):
        word = m.group(0)
        start, end = m.start(), m.end()
        if start > 0 and (e[start - 1].isdigit() or e[start - 1] == "."):
            continue  # part of a number / duration like 1e-9, 5m
        rest = e[end:].lstrip()
        if rest.startswith("("):
            continue  # function or aggregation
        if word.lower() in KEYWORDS:
            continue
        names.add(word)
    return names


def template_exprs(var):
    """PromQL hidden in a Grafana template variable query."""
    q = var.get("query")
    if isinstance(q, dict):
        q = q.get("query", "")
    q = q or var.get("definition", "") or ""
    m = re.match(r"\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$", q, re.S)
    if m:
        return [m.group(1)]
    m = re.match(r"\s*label_values\(\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$", q)
    if m:
        return []
    m = re.match(r"\s*(?:query_result|metrics)\((.*)\)\s*$", q, re.S)
    if m:
        return [m.group(1)] if q.strip().startswith("query_result") else []
    return [q] if q.strip() else []


def dashboard_queries(path):
    with open(path) as f:
        d = json.load(f)
    out = []

    def walk(panels):
        for p in panels or []:
            for t in p.get("targets", []) or []:
                if t.get("expr"):
                    out.append((f"panel '{p.get('title', '?')}' {t.get('refId', '')}", t["expr"]))
            walk(p.get("panels"))

    walk(d.get("panels"))
    for var in (d.get("templating") or {}).get("list", []):
        if var.get("type") == "query":
            for e in template_exprs(var):
                out.append((f"variable '{var.get('name')}'", e))
    return d.get("title", os.path.basename(path)), out


def rule_queries(path):
    with open(path) as f:
        doc = yaml.safe_load(f) or {}
    out = []
    for g in doc.get("groups", []):
        for r in g.get("rules", []):
            out.append((f"{g.get('name')}/{r.get('alert') or r.get('record')}", r["expr"]))
    return out


def read_names(path):
    names = set()
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                names.add(line.split()[0])
    return names


def read_exposition(path):
    """Metric names in a Prometheus text exposition (a scraped /metrics)."""
    names, types = set(), {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            if line.startswith("#"):
                parts = line.split()
                if len(parts) >= 4 and parts[1] == "TYPE":
                    types[parts[2]] = parts[3]
                continue
            m = IDENT.match(line)
            if m:
                names.add(m.group(0))
    for name, kind in types.items():
        if kind == "histogram":
            names.update({name + "_bucket", name + "_sum", name + "_count"})
        elif kind == "summary":
            names.update({name, name + "_sum", name + "_count"})
        # a TYPE line alone (no samples yet) does not prove the series exists
    return names


def promtool_expr(expr):
    e = expr
    for d in GRAFANA_DURATIONS:
        e = e.replace(d, "5m")
    e = re.sub(r"\$\{?[A-Za-z0-9_]+\}?", ".*", e)
    return e


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dashboards", help="directory of Grafana dashboard JSON files")
    ap.add_argument("--rules", help="directory of Prometheus rule files")
    ap.add_argument("--worker-metrics", help="scraped /metrics text of a real mindora-worker")
    ap.add_argument("--exporter-metrics", default=os.path.join(INFRA, "tests", "exporter-metrics.txt"))
    ap.add_argument("--worker-contract", default=os.path.join(INFRA, "tests", "worker-metrics-contract.txt"))
    ap.add_argument("--emit-promtool-rules", help="write dashboard queries as a rules file for promtool")
    args = ap.parse_args()
    if not args.dashboards and not args.rules:
        ap.error("give --dashboards and/or --rules")

    exporter = read_names(args.exporter_metrics)
    worker = None
    if args.worker_metrics:
        if not os.path.isfile(args.worker_metrics):
            print(f"FAIL worker metrics file {args.worker_metrics} does not exist")
            return 1
        worker = read_exposition(args.worker_metrics)
        if not any(n.startswith("mindora_") for n in worker):
            print(f"FAIL {args.worker_metrics} holds no mindora_* metric")
            return 1
    contract = read_names(args.worker_contract) if os.path.isfile(args.worker_contract) else set()

    sources = []  # (file, title, [(where, expr)])
    if args.dashboards:
        files = sorted(glob.glob(os.path.join(args.dashboards, "*.json")))
        if not files:
            print(f"FAIL no dashboards in {args.dashboards}")
            return 1
        for p in files:
            title, qs = dashboard_queries(p)
            sources.append((p, f"dashboard '{title}'", qs))
    if args.rules:
        files = sorted(glob.glob(os.path.join(args.rules, "*.yml")) + glob.glob(os.path.join(args.rules, "*.yaml")))
        for p in files:
            sources.append((p, "rules", rule_queries(p)))

    failures, checked, worker_unverified = 0, 0, set()
    for path, label, queries in sources:
        bad_here = 0
        for where, expr in queries:
            checked += 1
            names = metric_names(expr)
            if not names:
                print(f"FAIL {label} {where}: names no metric: {expr}")
                bad_here += 1
                continue
            unknown = []
            for n in sorted(names):
                if n.startswith("mindora_"):
                    if worker is not None:
                        if n not in worker:
                            unknown.append(f"{n} (not in the worker's /metrics)")
                    elif contract and n not in contract and re.sub(r"_(bucket|sum|count)$", "", n) not in contract:
                        unknown.append(f"{n} (not in the worker metric contract)")
                    else:
                        worker_unverified.add(n)
                elif n not in exporter:
                    unknown.append(f"{n} (not exported by any pinned exporter)")
            if unknown:
                bad_here += 1
                print(f"FAIL {label} {where}: {', '.join(unknown)}\n     query: {expr}")
        failures += bad_here
        status = "PASS" if not bad_here else "FAIL"
        print(f"{status} {os.path.relpath(path)}: {len(queries)} queries, {bad_here} with unknown metrics")

    if worker is None and worker_unverified:
        print(f"NOTE no --worker-metrics given: {len(worker_unverified)} mindora_* names checked against the "
              f"contract only: {', '.join(sorted(worker_unverified))}")

    if args.emit_promtool_rules:
        rules = []
        for path, label, queries in sources:
            if label == "rules":
                continue
            for i, (where, expr) in enumerate(queries):
                if where.startswith("variable"):
                    continue
                rules.append({"record": f"dashboard:query:{len(rules)}", "expr": promtool_expr(expr)})
        with open(args.emit_promtool_rules, "w") as f:
            yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, f, sort_keys=False)

    print(f"checked {checked} queries: {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
