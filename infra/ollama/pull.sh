#!/bin/sh
# ollama-pull: puts EMBED_MODEL into the ollama service's volume before the worker starts.
# Idempotent: a model already pulled is only checked (ollama pull skips the layers it has).
# Nothing to do when the worker embeds elsewhere (EMBED_BASE_URL not the local ollama).
# Waits up to 5 minutes for the server (OLLAMA_HOST, started by the "ollama" profile).
set -eu
: "${OLLAMA_HOST:?}" "${EMBED_MODEL:?}"
case "${EMBED_BASE_URL:-}" in
    "$OLLAMA_HOST"|"$OLLAMA_HOST"/*) ;;
    *)
        echo "ollama-pull: EMBED_BASE_URL=${EMBED_BASE_URL:-} is not $OLLAMA_HOST; nothing to pull"
        exit 0
        ;;
esac
tries=0
until ollama list >/dev/null 2>&1; do
    tries=$((tries + 1))
    if [ "$tries" -ge 150 ]; then
        echo "ollama-pull: no answer from $OLLAMA_HOST after 300 s (is the \"ollama\" profile in COMPOSE_PROFILES?)" >&2
        exit 1
    fi
    sleep 2
done
ollama pull "$EMBED_MODEL"
ollama show "$EMBED_MODEL" >/dev/null
echo "ollama-pull: $EMBED_MODEL ready on $OLLAMA_HOST"
