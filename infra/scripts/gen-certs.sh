#!/bin/sh
# gen-certs.sh DIR: make a self-signed TLS certificate for local use (unless one exists) and
# nginx's generated configuration. Idempotent.
#
#   DIR/certs/fullchain.pem, DIR/certs/privkey.pem   (SAN: DOMAIN and *.DOMAIN)
#   DIR/htpasswd                                     (ADMIN_USER / ADMIN_PASSWORD: every UI)
#   DIR/htpasswd-rabbitmq                            (RABBITMQ_UI_USER / RABBITMQ_UI_PASSWORD)
#   DIR/https-port.conf                              (NGINX_HTTPS_PORT, for HTTP -> HTTPS redirects)
#   DIR/hosts/<ui>.conf, DIR/hosts/all.conf          (exact server_name <ui>.DOMAIN)
#   DIR/allow.conf                                   (NGINX_ALLOW_FROM: allow CIDR; ... deny all;)
#
# Real certificates: put them at ${DATA_ROOT}/nginx/certs/fullchain.pem and privkey.pem
# (e.g. from certbot) and this script leaves them alone. FORCE=1 regenerates both files.
set -eu
dir=${1:?usage: gen-certs.sh DIR}
domain=${DOMAIN:-localhost}
days=${CERT_DAYS:-825}

# The UI host names (nginx server_name, certificate SAN): keep in step with conf.d/mindora.conf.
UIS="grafana kibana rabbitmq consul prometheus alertmanager rq jaeger console"

# openssl is baked into the nginx-init image (infra/nginx/init.Dockerfile): nothing is
# installed at run time.
if ! command -v openssl >/dev/null 2>&1; then
    echo "gen-certs: openssl is required" >&2
    exit 1
fi
case "$domain" in
    ''|*[!A-Za-z0-9.-]*) echo "gen-certs: DOMAIN must be a host name, got '$domain'" >&2; exit 1 ;;
esac

mkdir -p "$dir/certs"
if [ "${FORCE:-0}" = 1 ] || [ ! -s "$dir/certs/fullchain.pem" ] || [ ! -s "$dir/certs/privkey.pem" ]; then
    san="DNS:$domain,DNS:*.$domain"
    for sub in $UIS; do
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
# Where Grafana's "Task console" link lands (grafana.DOMAIN/go/console redirects there).
# shellcheck disable=SC2016 # $console_url is an nginx variable, written literally
printf 'set $console_url "https://console.%s%s";\n' "$domain" "$suffix" > "$dir/console-url.conf.tmp"
mv "$dir/console-url.conf.tmp" "$dir/console-url.conf"

# Exact host names, one file per UI and one with all of them (the HTTP redirect server).
mkdir -p "$dir/hosts"
all=""
for sub in $UIS; do
    printf 'server_name %s.%s;\n' "$sub" "$domain" > "$dir/hosts/$sub.conf"
    all="$all $sub.$domain"
done
printf 'server_name%s;\n' "$all" > "$dir/hosts/all.conf"

# Optional IP allowlist for every UI: NGINX_ALLOW_FROM="10.0.0.0/8,192.168.1.7" (empty: any
# address that reaches the published port, still behind the logins).
: > "$dir/allow.conf.tmp"
if [ -n "${NGINX_ALLOW_FROM:-}" ]; then
    for net in $(printf '%s' "$NGINX_ALLOW_FROM" | tr ',' ' '); do
        case "$net" in
            *[!0-9A-Fa-f.:/]*) echo "gen-certs: NGINX_ALLOW_FROM: '$net' is not an address or CIDR" >&2; exit 1 ;;
        esac
        printf 'allow %s;\n' "$net" >> "$dir/allow.conf.tmp"
    done
    printf 'deny all;\n' >> "$dir/allow.conf.tmp"
fi
mv "$dir/allow.conf.tmp" "$dir/allow.conf"

# htpasswd FILE USER PASSWORD: rewritten every run so a password change in .env takes effect
# on the next `up`. Without both values the file holds no account (every login fails).
htpasswd() {
    if [ -n "$2" ] && [ -n "$3" ]; then
        hash=$(printf '%s' "$3" | openssl passwd -apr1 -stdin)
        printf '%s:%s\n' "$2" "$hash" > "$1.tmp"
        echo "gen-certs: $(basename "$1") written for $2"
    else
        : > "$1.tmp"
        echo "gen-certs: $(basename "$1") holds no account (user or password empty)" >&2
    fi
    chmod 644 "$1.tmp"
    mv "$1.tmp" "$1"
}
htpasswd "$dir/htpasswd" "${ADMIN_USER:-}" "${ADMIN_PASSWORD:-}"
htpasswd "$dir/htpasswd-rabbitmq" "${RABBITMQ_UI_USER:-}" "${RABBITMQ_UI_PASSWORD:-}"

