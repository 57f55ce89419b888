#!/usr/bin/env bash
# Tools for the "past one machine" tests and checks (idempotent, quick when present):
# redis-sentinel (Sentinel failover test), stunnel4 (amqps test: a TLS proxy in front of the
# shared RabbitMQ, which is never reconfigured), openssl (test CA and certificates), and
# the offline Kubernetes / KEDA schema validator for deploy/kubernetes (deploy/kubernetes/check.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."

need=()
command -v redis-sentinel >/dev/null 2>&1 || need+=(redis-sentinel)
command -v stunnel4 >/dev/null 2>&1 || need+=(stunnel4)
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
