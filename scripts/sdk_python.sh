#!/usr/bin/env bash
# Runs the official Azure SDK for Python (pinned in scripts/sdk_python/requirements.txt,
# installed into target/venv-sdk) against `flotilla sim` at the SDK's default
# api-versions. Needs a built flotilla binary (default target/debug/flotilla).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${FLOTILLA_BIN:-$ROOT/target/debug/flotilla}"
VENV="$ROOT/target/venv-sdk"
REQ="$ROOT/scripts/sdk_python/requirements.txt"
PY="${PYTHON:-python3}"

if ! cmp -s "$REQ" "$VENV/requirements.txt" 2>/dev/null; then
  echo "installing the Azure SDK for Python into $VENV"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQ"
  cp "$REQ" "$VENV/requirements.txt"
fi

dir="$(mktemp -d)"
"$BIN" sim --lro-seconds 0.05 >"$dir/info" 2>"$dir/err" &
sim=$!
trap 'kill $sim 2>/dev/null || true; wait $sim 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 1 100); do
  [ -s "$dir/info" ] && break
  kill -0 $sim 2>/dev/null || { cat "$dir/err" >&2; exit 1; }
  sleep 0.1
done
[ -s "$dir/info" ] || { echo "flotilla sim printed no endpoints" >&2; exit 1; }
"$VENV/bin/python" "$ROOT/scripts/sdk_python/check.py" <"$dir/info"
