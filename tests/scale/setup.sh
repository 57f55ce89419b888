#!/usr/bin/env bash
# Tools for the "past one machine" tests and checks (idempotent, quick when present):
# redis-sentinel (Sentinel failover tests), openssl (test CA and certificates), and the
# offline Kubernetes / KEDA schema validator for deploy/kubernetes (deploy/kubernetes/check.sh).
# The amqps test starts a private node of the rabbitmq-server that .ci/run already needs
# (its own node name, ports and data dir, a TLS listener); the shared broker is untouched.
set -euo pipefail
cd "$(dirname "$0")/../.."

need=()
command -v redis-sentinel >/dev/null 2>&1 || need+=(redis-sentinel)
command -v rabbitmq-server >/dev/null 2>&1 || need+=(rabbitmq-server)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Debian's package starts a Sentinel service on 26379; the tests start their own on free
# ports and need none.
if command -v service >/dev/null 2>&1 && service redis-sentinel status >/dev/null 2>&1; then
  service redis-sentinel stop >/dev/null 2>&1 || true
fi

bash deploy/kubernetes/setup.sh
