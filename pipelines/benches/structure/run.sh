#!/usr/bin/env bash
# Structure benchmark: our Markdown beside PyMuPDF4LLM's on the real-document corpus, scored
# against the documents' own structure (see score.py). Pinned: the documents (Debian and PyPI
# versions in tests/corpus/manifest.tsv, their sha256 in sha256.txt, checked here) and the
# Python peers (versions below).
#
#   bash pipelines/benches/structure/run.sh [--layout] [--per-file]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
cache="${MINDORA_CACHE:-$HOME/.cache/mindora}"
corpus="${MINDORA_CORPUS_DIR:-$cache/corpus/v1}"
venv="${MINDORA_PIPELINES_VENV:-$cache/venv-pipelines}"

bash "$root/pipelines/tests/setup.sh" >/dev/null
(cd "$corpus/docs" && sha256sum --quiet -c "$here/sha256.txt")

pins=(pymupdf==2.0 pymupdf4llm==2.0 pymupdf-layout==2.0 pypdf==7.1.1 python-docx==1.2.0
    beautifulsoup4==4.12.3)
if ! "$venv/bin/python" - "${pins[@]}" <<'PY' >/dev/null 2>&1; then
import sys
from importlib.metadata import version
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    assert version(name) == want, pin
PY
    "$venv/bin/pip" install --quiet "${pins[@]}"
fi

target="${CARGO_TARGET_DIR:-$root/target}"
cargo build --release -q -p mindora-pipelines --example to_markdown --bin mindora-pdf
# The example finds the PDF helper next to it or one directory up (target/release).
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
"$venv/bin/python" "$here/score.py" "$corpus" "$target/release/examples/to_markdown" "$@"
