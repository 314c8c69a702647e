#!/usr/bin/env bash
# Start the server on a fresh SQLite file (on loopback, without auth), send the story of three videos,
# show one of them, and keep serving until Ctrl-C. `stagewatch demo` shows much more.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
port="${STAGEWATCH_PORT:-8000}"
export STAGEWATCH_URL="http://127.0.0.1:${port}"
workdir="$(mktemp -d)"
stagewatch serve --no-auth --port "$port" --db "sqlite:///${workdir}/stagewatch.db" &
server=$!
trap 'kill $server 2>/dev/null' EXIT
for _ in $(seq 1 50); do curl -sf "$STAGEWATCH_URL/healthz" >/dev/null && break; sleep 0.2; done
stagewatch send-events "$here/first-videos.jsonl"
stagewatch summary
stagewatch status video-123
echo
echo "API: $STAGEWATCH_URL/docs   Try: stagewatch items --status failed   (Ctrl-C to stop)"
wait $server
