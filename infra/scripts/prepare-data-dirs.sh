#!/bin/sh
# prepare-data-dirs.sh ROOT: create ${DATA_ROOT}/<service> folders with the owner each
# image runs as. Idempotent. Runs in the data-init container (ROOT=/data) or on the host
# (manage.sh deploy, as root).
set -eu
root=${1:?usage: prepare-data-dirs.sh DATA_ROOT}

# dir uid:gid mode
while read -r dir owner mode; do
    [ -n "$dir" ] || continue
    mkdir -p "$root/$dir"
    chown "$owner" "$root/$dir"
    chmod "$mode" "$root/$dir"
done <<LIST
nginx 0:0 755
consul 100:1000 750
postgres 999:999 700
redis 999:999 750
rabbitmq 999:999 750
s3 0:0 750
elasticsearch 1000:0 770
elasticsearch/data 1000:0 770
elasticsearch/snapshots 1000:0 770
kibana 1000:0 770
qdrant 0:0 750
qdrant/storage 0:0 750
qdrant/snapshots 0:0 750
ollama 0:0 750
prometheus 65534:65534 750
alertmanager 65534:65534 750
grafana 472:0 750
filebeat 0:0 750
jaeger 10001:10001 750
console 10004:10004 750
LIST
echo "data directories ready under $root"
