#!/usr/bin/env bash
# Creates the pinned Python venvs the interop tests and benchmarks use (idempotent):
#   $MINDORA_CACHE/venv-rq212  rq==2.12.0
#   $MINDORA_CACHE/venv-rq30   rq==3.0.0
#   $MINDORA_CACHE/venv-rqtools rq's own monitoring tools, run against the worker by
#                               tests/tests/rq_tools.rs: rq-dashboard==0.9.0 and
#                               rq-exporter==3.1.0 (which needs rq<3 and redis<6, hence
#                               rq==2.12.0 and redis==5.2.1; rq-dashboard imports six
#                               without declaring it)
#   $MINDORA_CACHE/venv-ruff   ruff==0.17.5, the Python linter .ci/run runs (config: ruff.toml)
#   $MINDORA_CACHE/venv-otel   rq==2.12.0 with opentelemetry-api/-sdk==1.45.1: a team venv
#                               with OpenTelemetry, for the --python trace tests (issue 21)
#   $MINDORA_CACHE/venv-fastapi examples/fastapi-app/requirements.txt, for its smoke test
set -euo pipefail
cache="${MINDORA_CACHE:-$HOME/.cache/mindora}"
mkdir -p "$cache"
redis_py=8.1.0
make_venv() {
  local dir="$1" spec="$2"
  # redis-py pinned too: an unpinned one changes under the tests from machine to machine.
  if [ -x "$dir/bin/python" ] && "$dir/bin/python" -c "import rq, redis, sys; sys.exit(0 if (rq.__version__, redis.__version__) == ('${spec#rq==}', '$redis_py') else 1)" 2>/dev/null; then
    return 0
  fi
  rm -rf "$dir"
  python3 -m venv "$dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check "$spec" "redis==$redis_py"
}
make_venv "$cache/venv-rq212" "rq==2.12.0"
make_venv "$cache/venv-rq30" "rq==3.0.0"
tools="$cache/venv-rqtools"
tool_pins=(rq==2.12.0 redis==5.2.1 rq-dashboard==0.9.0 rq-exporter==3.1.0 six==1.17.0
  Flask==3.1.3 Werkzeug==3.1.9 arrow==1.4.0 prometheus_client==0.26.0)
if ! { [ -x "$tools/bin/python" ] && "$tools/bin/python" -c "
import importlib.metadata as m, sys
sys.exit(0 if (m.version('rq-dashboard'), m.version('rq-exporter'), m.version('rq')) == ('0.9.0', '3.1.0', '2.12.0') else 1)" 2>/dev/null; }; then
  rm -rf "$tools"
  python3 -m venv "$tools"
  "$tools/bin/pip" install --quiet --disable-pip-version-check "${tool_pins[@]}"
fi
ruff_venv="$cache/venv-ruff"
ruff_version=0.17.5
if ! { [ -x "$ruff_venv/bin/ruff" ] && [ "$("$ruff_venv/bin/ruff" --version)" = "ruff $ruff_version" ]; }; then
  rm -rf "$ruff_venv"
  python3 -m venv "$ruff_venv"
  "$ruff_venv/bin/pip" install --quiet --disable-pip-version-check "ruff==$ruff_version"
fi
otel="$cache/venv-otel"
otel_version=1.45.1
if ! { [ -x "$otel/bin/python" ] && "$otel/bin/python" -c "
import importlib.metadata as m, sys
sys.exit(0 if (m.version('opentelemetry-sdk'), m.version('rq'), m.version('redis')) == ('$otel_version', '2.12.0', '$redis_py') else 1)" 2>/dev/null; }; then
  rm -rf "$otel"
  python3 -m venv "$otel"
  "$otel/bin/pip" install --quiet --disable-pip-version-check rq==2.12.0 "redis==$redis_py" \
    "opentelemetry-api==$otel_version" "opentelemetry-sdk==$otel_version"
fi
fastapi="$cache/venv-fastapi"
fastapi_req="$(cd "$(dirname "$0")/.." && pwd)/examples/fastapi-app/requirements.txt"
fastapi_stamp="$fastapi/requirements.sha256"
if ! { [ -x "$fastapi/bin/python" ] && [ "$(cat "$fastapi_stamp" 2>/dev/null)" = "$(sha256sum < "$fastapi_req")" ]; }; then
  rm -rf "$fastapi"
  python3 -m venv "$fastapi"
  "$fastapi/bin/pip" install --quiet --disable-pip-version-check -r "$fastapi_req"
  sha256sum < "$fastapi_req" > "$fastapi_stamp"
fi
echo "python venvs ready in $cache"
