#!/usr/bin/env bash
# Install stagewatch with its test tools, make sure the services the tests use are up, then run the
# linters, the type checker and the whole test suite (SQLite and the real PostgreSQL).
# Usage: scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
python3 -m pip install -q -e '.[server,dev]'

ensure_postgres() {
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then return 0; fi
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && return 0; sleep 1; done
  fi
  return 1
}
if ensure_postgres; then
  export STAGEWATCH_TEST_POSTGRES="${STAGEWATCH_TEST_POSTGRES:-1}"
else
  echo "warning: no PostgreSQL at 127.0.0.1:5432; its tests will be skipped" >&2
  if [ "${CI:-}" = "true" ]; then echo "error: CI needs PostgreSQL" >&2; exit 1; fi
fi

# The dashboard's browser tests drive Debian's chromium (never a downloaded browser): install it when it
# is missing and apt can (as root, e.g. in CI). Without it they skip locally and fail in CI.
ensure_chromium() {
  command -v chromium >/dev/null && return 0
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    echo "installing chromium for the dashboard's browser tests"
    (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium) >/dev/null || true
  fi
  command -v chromium >/dev/null || echo "warning: no chromium; the dashboard's browser tests will skip" >&2
}
ensure_chromium

# One command per line: under `set -e` a failure inside an `a && b` list would not stop the script.
echo "== ruff"
python3 -m ruff check .
python3 -m ruff format --check .
echo "== mypy"; python3 -m mypy
echo "== pytest"
set +e
python3 -m pytest -p no:cacheprovider "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then echo "error: no test ran" >&2; exit 1; fi
exit "$status"
