#!/usr/bin/env bash
# Side-by-side benchmark (not part of CI): the same cluster-shaped job
# (scripts/bench_peers/shape.json: 6 steps, 17 durable checkpoints) on flotilla
# (`flotilla bench`, release build), DBOS Transact (Python, SQLite) and Restate
# (restate-server + a Node service), alternating engines within each round.
# Prints one table (jobs/s min/median/max, CPU ms per job, peak RSS, ratio) and
# writes target/bench-peers.json. Installs the peers itself, at the exact
# versions pinned in scripts/bench_peers/ (requirements.txt, package-lock.json),
# into target/venv-dbos and target/bench-peers-node.
#
# Usage: scripts/bench-peers.sh [--jobs 200,1000] [--rounds 3] [--engines flotilla,flotilla-apart,flotilla-engine,dbos,restate]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HERE="$ROOT/scripts/bench_peers"
VENV="$ROOT/target/venv-dbos"
NODE_DIR="$ROOT/target/bench-peers-node"
PY="${PYTHON:-python3}"

if ! cmp -s "$HERE/requirements.txt" "$VENV/requirements.txt" 2>/dev/null; then
  echo "installing DBOS Transact into $VENV"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$HERE/requirements.txt"
  cp "$HERE/requirements.txt" "$VENV/requirements.txt"
fi

mkdir -p "$NODE_DIR"
if ! cmp -s "$HERE/package-lock.json" "$NODE_DIR/package-lock.json" 2>/dev/null \
    || [ ! -d "$NODE_DIR/node_modules" ]; then
  echo "installing restate-server and the Restate SDK into $NODE_DIR"
  cp "$HERE/package.json" "$HERE/package-lock.json" "$NODE_DIR/"
  npm ci --prefix "$NODE_DIR" --ignore-scripts --no-audit --no-fund
fi
# The service and client resolve the SDK from node_modules beside them.
cp "$HERE/restate_service.mjs" "$HERE/restate_client.mjs" "$HERE/shape.json" "$NODE_DIR/"

echo "building flotilla (release)"
cargo build --release -p flotilla --manifest-path "$ROOT/Cargo.toml"

exec "$PY" "$HERE/run.py" "$@" \
  --flotilla "$ROOT/target/release/flotilla" \
  --python "$VENV/bin/python" \
  --node-dir "$NODE_DIR" \
  --out "$ROOT/target/bench-peers.json"
