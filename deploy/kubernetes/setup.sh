#!/usr/bin/env bash
# Offline validators for deploy/kubernetes (idempotent; quick when already installed):
# - kubernetes-validate (PyPI, pinned): ships the Kubernetes OpenAPI schemas per version;
# - @kubernetes-models/keda (npm, pinned): KEDA's CRD schemas (ScaledObject,
#   TriggerAuthentication, ...) compiled into validators; js-yaml to read the manifests.
set -euo pipefail
tools="${MINDORA_CACHE:-$HOME/.cache/mindora}/k8s-tools"
mkdir -p "$tools"
if ! "$tools/venv/bin/kubernetes-validate" --version 2>/dev/null | grep -q '1.37.0'; then
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install -q 'kubernetes-validate==1.37.0'
fi
if [ ! -f "$tools/node/node_modules/@kubernetes-models/keda/package.json" ] \
  || ! grep -q '"version": "2.0.0"' "$tools/node/node_modules/@kubernetes-models/keda/package.json"; then
  npm install --silent --no-audit --no-fund --prefix "$tools/node" \
    '@kubernetes-models/keda@2.0.0' 'js-yaml@4.1.0'
fi
