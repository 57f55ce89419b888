#!/usr/bin/env bash
# Validates deploy/kubernetes offline (run by .ci/run; tools from setup.sh):
# 1. every built-in resource against the Kubernetes 1.31 OpenAPI schemas, strictly
#    (unknown fields are errors), with kubernetes-validate;
# 2. every KEDA resource against KEDA's CRD schemas (@kubernetes-models/keda 2.0.0);
# 3. the rules the manifests must keep (lint.py): grace period above the worker's shutdown
#    grace, probes on /healthz and /readyz, memory limit per the pipelines' rule, PDB and
#    autoscalers aimed at the Deployment, and (given a real /metrics scrape) the backlog
#    metric the autoscalers query exists.
# Usage: check.sh [--worker-metrics FILE]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tools="${MINDORA_CACHE:-$HOME/.cache/mindora}/k8s-tools"
k8s_version=1.31.0
metrics=""
if [ "${1:-}" = "--worker-metrics" ]; then metrics="${2:-}"; fi

mapfile -t files < <(find "$here" -name '*.yaml' | sort)
[ ${#files[@]} -gt 0 ] || { echo "no manifests" >&2; exit 1; }

echo "kubernetes-validate -k $k8s_version --strict (KEDA kinds are checked next)"
out=$("$tools/venv/bin/kubernetes-validate" -k "$k8s_version" --strict --no-warn "${files[@]}" 2>&1) || {
  # Custom resources have no built-in schema: accept only that complaint, for KEDA kinds.
  bad=$(printf '%s\n' "$out" | grep -v '^INFO' | grep -v 'keda.sh' || true)
  if [ -n "$bad" ]; then printf '%s\n' "$out" >&2; exit 1; fi
}
printf '%s\n' "$out" | grep -v 'keda.sh' || true

echo "KEDA CRD schemas (@kubernetes-models/keda)"
KEDA_MODELS="$tools/node" node "$here/validate-keda.mjs" "${files[@]}"

echo "manifest rules"
"$tools/venv/bin/python" "$here/lint.py" "$here" ${metrics:+--worker-metrics "$metrics"}
echo "deploy/kubernetes: ok"
