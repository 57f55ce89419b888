#!/usr/bin/env bash
# Installs what the mindora-pipelines tests and benchmarks need. Idempotent and quick when
# everything is there; CI (.ci/run) runs it before the tests.
#  - s3s-fs (a real S3-protocol server) into ~/.cargo/bin, from crates.io
#  - PDFium (the PDF engine): libpdfium.so from the pinned pypdfium2 wheel on PyPI, into
#    $MINDORA_CACHE/pdfium/ (where the extractor looks; or point MINDORA_PDFIUM_LIB at it)
#  - a CJK fallback font for PDFium (Debian's fonts-droid-fallback, pinned, unpacked into
#    $MINDORA_CACHE/pdfium/fonts/): without one PDFium drops text set in non-embedded
#    Japanese/Chinese fonts (Ryumin-Light, HeiseiMin...), which pdftotext reads
#  - poppler-utils + poppler-data (pdftotext, the independent PDF reference) from Debian
#  - a Python venv with pinned reference/baseline tools: python-docx, openpyxl, xlrd, odfpy,
#    BeautifulSoup (corpus references), pypdf and PyMuPDF (benchmark peers), psutil
#  - OCR: tesseract-ocr with chi_sim/chi_tra/jpn/eng, and img2pdf, from Debian (OCR block)
#  - the real-document corpus (tests/corpus/fetch.sh): Debian doc packages and PyPI sdists,
#    cached under $MINDORA_CACHE/corpus, with reference texts
# PostgreSQL, RabbitMQ and Redis are started by the machine itself.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cache="${MINDORA_CACHE:-$HOME/.cache/mindora}"
s3s_version="0.14.1"
# PDFium build 8149 (chromium/7459-era), BSD/Apache-2.0, as shipped in this wheel.
pypdfium2_version="5.15.2"
pypdfium2_wheel="pypdfium2-${pypdfium2_version}-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
pypdfium2_sha256="dc31aea5b0fb9fefc9b537a65f4113980b2c40798445736a7e6565bc85161e37"
mkdir -p "$cache"

if ! command -v s3s-fs >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/s3s-fs" ]; then
    echo "setup: installing s3s-fs $s3s_version"
    cargo install s3s-fs --version "$s3s_version" --features binary --locked
else
    echo "setup: s3s-fs present"
fi

if ! command -v pdftotext >/dev/null 2>&1 || [ ! -d /usr/share/poppler/cMap ]; then
    echo "setup: installing poppler-utils and poppler-data"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        poppler-utils poppler-data >/dev/null
else
    echo "setup: pdftotext and poppler-data present"
fi

venv="$cache/venv-pipelines"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
py_pins=(pypdf==7.1.1 python-docx==1.2.0 openpyxl==3.1.5 xlrd==2.0.1 odfpy==1.4.1
    beautifulsoup4==4.12.3 pymupdf==2.0 psutil==7.2.2)
if ! "$venv/bin/python" - "${py_pins[@]}" <<'EOF' >/dev/null 2>&1; then
import sys
from importlib.metadata import version
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    assert version(name) == want, pin
EOF
    echo "setup: installing pinned Python reference and benchmark packages"
    "$venv/bin/pip" install --quiet "${py_pins[@]}"
else
    echo "setup: Python reference and benchmark packages present"
fi

pdfium_dir="$cache/pdfium"
if [ "$(cat "$pdfium_dir/VERSION" 2>/dev/null)" != "pypdfium2-$pypdfium2_version" ] \
    || [ ! -f "$pdfium_dir/libpdfium.so" ]; then
    echo "setup: installing PDFium from pypdfium2 $pypdfium2_version"
    tmp="$(mktemp -d)"
    "$venv/bin/pip" download --quiet --no-deps --only-binary :all: \
        --platform manylinux2014_x86_64 -d "$tmp" "pypdfium2==$pypdfium2_version"
    echo "$pypdfium2_sha256  $tmp/$pypdfium2_wheel" | sha256sum -c --quiet
    "$venv/bin/python" - "$tmp/$pypdfium2_wheel" "$tmp/lib" <<'EOF'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extract("pypdfium2_raw/libpdfium.so", sys.argv[2])
EOF
    mkdir -p "$pdfium_dir"
    install -m 0644 "$tmp/lib/pypdfium2_raw/libpdfium.so" "$pdfium_dir/libpdfium.so"
    echo "pypdfium2-$pypdfium2_version" >"$pdfium_dir/VERSION"
    rm -rf "$tmp"
else
    echo "setup: PDFium present ($pdfium_dir)"
fi

droid_version="1:6.0.1r16-1.1"
if [ "$(cat "$pdfium_dir/fonts/VERSION" 2>/dev/null)" != "fonts-droid-fallback-$droid_version" ]; then
    echo "setup: installing the CJK fallback font for PDFium (fonts-droid-fallback $droid_version)"
    tmp="$(mktemp -d)"
    chmod 0777 "$tmp"
    (
        cd "$tmp"
        if ! apt-get download -qq "fonts-droid-fallback=$droid_version" 2>/dev/null; then
            apt-get update -qq
            apt-get download -qq "fonts-droid-fallback=$droid_version"
        fi
    )
    dpkg-deb -x "$tmp"/fonts-droid-fallback_*.deb "$tmp/x"
    mkdir -p "$pdfium_dir/fonts"
    install -m 0644 "$tmp/x/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf" "$pdfium_dir/fonts/"
    echo "fonts-droid-fallback-$droid_version" >"$pdfium_dir/fonts/VERSION"
    rm -rf "$tmp"
else
    echo "setup: PDFium CJK fallback font present"
fi

# ---- OCR (pipelines/tests/ocr.rs) -------------------------------------------------------
# Tesseract with the Simplified/Traditional Chinese, Japanese and English language packs, and
# img2pdf (wraps a scanned page image as an image-only PDF), from Debian bookworm (tesseract-ocr
# 5.3.0-2, language packs 1:4.1.0-2, img2pdf 0.4.4-3); the same tesseract packages as
# worker/Dockerfile.
ocr_ready() {
    command -v tesseract >/dev/null 2>&1 && command -v img2pdf >/dev/null 2>&1 || return 1
    local langs
    langs="$(tesseract --list-langs 2>/dev/null)" || return 1
    for l in eng chi_sim chi_tra jpn; do
        grep -qx "$l" <<<"$langs" || return 1
    done
}
if ocr_ready; then
    echo "setup: tesseract (chi_sim, chi_tra, jpn, eng) and img2pdf present"
else
    echo "setup: installing tesseract-ocr, its chi_sim/chi_tra/jpn/eng packs and img2pdf"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        tesseract-ocr tesseract-ocr-eng tesseract-ocr-chi-sim tesseract-ocr-chi-tra \
        tesseract-ocr-jpn img2pdf >/dev/null
    ocr_ready || { echo "setup: tesseract or a language pack is still missing" >&2; exit 1; }
fi
# ---- end OCR -----------------------------------------------------------------------------

MINDORA_CACHE="$cache" bash "$here/corpus/fetch.sh"
