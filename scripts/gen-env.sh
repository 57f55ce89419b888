#!/usr/bin/env bash
# gen-env.sh [--force] [OUT]: write OUT (default .env at the repository root) from .env.example
# with a fresh random value for every secret (what infra/scripts/check-secrets.sh checks), then
# run that check on it. EMBED_API_KEY and ALERT_SMTP_PASSWORD are left empty: they are yours to
# fill in. Refuses to overwrite an existing file unless --force. The file is made mode 600.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
force=0
out=""
for a in "$@"; do
    case "$a" in
        --force) force=1 ;;
        -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
        -*) echo "gen-env.sh: unknown option $a" >&2; exit 2 ;;
        *) out=$a ;;
    esac
done
out=${out:-$ROOT/.env}
if [ -e "$out" ] && [ "$force" != 1 ]; then
    echo "gen-env.sh: $out exists; keeping it (--force to replace)" >&2
    exit 1
fi
command -v openssl >/dev/null || { echo "gen-env.sh: openssl is needed" >&2; exit 1; }

secret_name() {
    case "$1" in
        *_PASSWORD|*_SECRET|*_SECRET_KEY|*_API_KEY|*_ENCRYPTION_KEY|*_TOKEN) return 0 ;;
    esac
    return 1
}

umask 077
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
n=0
while IFS= read -r line || [ -n "$line" ]; do
    if [[ "$line" =~ ^([A-Za-z_][A-Za-z0-9_]*)= ]] && secret_name "${BASH_REMATCH[1]}"; then
        name=${BASH_REMATCH[1]}
        case "$name" in
            EMBED_API_KEY|ALERT_SMTP_PASSWORD) printf '%s=\n' "$name" ;;
            # Consul wants token secrets to be UUIDs.
            CONSUL_*_TOKEN)
                printf '%s=%s\n' "$name" "$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n' |
                    sed -E 's/^(.{12})./\14/; s/^(.{16})./\1a/; s/^(.{8})(.{4})(.{4})(.{4})(.{12})$/\1-\2-\3-\4-\5/')"
                n=$((n + 1)) ;;
            # 48 hex characters: URL-safe, 192 random bits.
            *) printf '%s=%s\n' "$name" "$(openssl rand -hex 24)"; n=$((n + 1)) ;;
        esac
    else
        printf '%s\n' "$line"
    fi
done < "$ROOT/.env.example" > "$tmp"
sh "$ROOT/infra/scripts/check-secrets.sh" "$tmp" >/dev/null
mv "$tmp" "$out"
trap - EXIT
echo "gen-env.sh: wrote $out with $n generated secrets; set EMBED_API_KEY (and ALERT_*, DOMAIN) before real use"
