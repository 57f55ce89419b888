#!/bin/sh
# gen-certs.sh DIR: make a self-signed TLS certificate for local use and the basic-auth
# file for nginx, unless they already exist. Idempotent.
#
#   DIR/certs/fullchain.pem, DIR/certs/privkey.pem   (SAN: DOMAIN and *.DOMAIN)
#   DIR/htpasswd                                     (ADMIN_USER / ADMIN_PASSWORD)
#   DIR/https-port.conf                              (NGINX_HTTPS_PORT, for HTTP -> HTTPS redirects)
#
# Real certificates: put them at ${DATA_ROOT}/nginx/certs/fullchain.pem and privkey.pem
# (e.g. from certbot) and this script leaves them alone. FORCE=1 regenerates both files.
set -eu
dir=${1:?usage: gen-certs.sh DIR}
domain=${DOMAIN:-localhost}
days=${CERT_DAYS:-825}

if ! command -v openssl >/dev/null 2>&1; then
    if [ "${INSTALL_OPENSSL:-0}" = 1 ] && command -v apk >/dev/null 2>&1; then
        apk add --no-cache openssl >/dev/null
    else
        echo "gen-certs: openssl is required" >&2
        exit 1
    fi
fi

mkdir -p "$dir/certs"
if [ "${FORCE:-0}" = 1 ] || [ ! -s "$dir/certs/fullchain.pem" ] || [ ! -s "$dir/certs/privkey.pem" ]; then
    san="DNS:$domain,DNS:*.$domain"
    for sub in grafana kibana rabbitmq minio consul prometheus alertmanager; do
        san="$san,DNS:$sub.$domain"
    done
    openssl req -x509 -newkey rsa:2048 -sha256 -nodes -days "$days" \
        -subj "/CN=$domain/O=mindora local" \
        -addext "subjectAltName=$san" \
        -keyout "$dir/certs/privkey.pem.tmp" -out "$dir/certs/fullchain.pem.tmp" 2>/dev/null
    mv "$dir/certs/privkey.pem.tmp" "$dir/certs/privkey.pem"
    mv "$dir/certs/fullchain.pem.tmp" "$dir/certs/fullchain.pem"
    chmod 600 "$dir/certs/privkey.pem"
    echo "gen-certs: self-signed certificate for $domain written to $dir/certs"
else
    echo "gen-certs: certificate exists in $dir/certs, keeping it"
fi

# The published HTTPS port, for the plain-HTTP redirect (nginx only sees its container port 443).
# Rewritten every run, like htpasswd, so a port change in .env takes effect on the next `up`.
port=${NGINX_HTTPS_PORT:-443}
case "$port" in
    ''|*[!0-9]*) echo "gen-certs: NGINX_HTTPS_PORT must be a number, got '$port'" >&2; exit 1 ;;
esac
suffix=":$port"
[ "$port" != 443 ] || suffix=""
# shellcheck disable=SC2016 # $https_port_suffix is an nginx variable, written literally
printf 'set $https_port_suffix "%s";\n' "$suffix" > "$dir/https-port.conf.tmp"
mv "$dir/https-port.conf.tmp" "$dir/https-port.conf"

if [ -n "${ADMIN_USER:-}" ] && [ -n "${ADMIN_PASSWORD:-}" ]; then
    # Rewritten every run so a password change in .env takes effect on the next `up`.
    hash=$(printf '%s' "$ADMIN_PASSWORD" | openssl passwd -apr1 -stdin)
    printf '%s:%s\n' "$ADMIN_USER" "$hash" > "$dir/htpasswd.tmp"
    chmod 644 "$dir/htpasswd.tmp"
    mv "$dir/htpasswd.tmp" "$dir/htpasswd"
    echo "gen-certs: htpasswd written for $ADMIN_USER"
fi
