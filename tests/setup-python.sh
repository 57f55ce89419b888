#!/usr/bin/env bash
# Creates the pinned Python venvs the interop tests and benchmarks use (idempotent):
#   $MINDORA_CACHE/venv-rq212  rq==2.12.0
#   $MINDORA_CACHE/venv-rq30   rq==3.0.0
set -euo pipefail
cache="${MINDORA_CACHE:-$HOME/.cache/mindora}"
mkdir -p "$cache"
make_venv() {
  local dir="$1" spec="$2"
  if [ -x "$dir/bin/python" ] && "$dir/bin/python" -c "import rq, sys; sys.exit(0 if rq.__version__ == '${spec#rq==}' else 1)" 2>/dev/null; then
    return 0
  fi
  rm -rf "$dir"
  python3 -m venv "$dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check "$spec" "redis>=5,<9"
}
make_venv "$cache/venv-rq212" "rq==2.12.0"
make_venv "$cache/venv-rq30" "rq==3.0.0"
echo "python venvs ready in $cache"
