#!/usr/bin/env bash
# Heap at its peak during `flotilla bench`, split between flotilla and the
# in-process Azure simulator (not part of CI; documented in the README).
#
# The bench runs the simulator in its own process and on the same heap, so
# peak RSS cannot be split; heaptrack records every allocation with its call
# stack, and an allocation whose stack passes through the simulator
# (`flotilla_sim::`) is the simulator's. Installs heaptrack from Debian's
# packages when it is missing (needs root or sudo).
#
# Usage: scripts/heap-split.sh [--jobs 1000]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
JOBS=1000
while [ $# -gt 0 ]; do
  case "$1" in
    --jobs) JOBS="$2"; shift 2 ;;
    *) echo "usage: $0 [--jobs N]" >&2; exit 2 ;;
  esac
done
if ! command -v heaptrack >/dev/null || ! command -v heaptrack_print >/dev/null; then
  echo "installing heaptrack (Debian package)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get install -y --no-install-recommends heaptrack >/dev/null
fi
# heaptrack traces malloc, so this build leaves mimalloc out (the bytes held
# are the same with either allocator; RSS is not). The usual release binary
# is built again right after, so target/release/flotilla keeps mimalloc.
OUT="$ROOT/target/heap-split"
rm -rf "$OUT" && mkdir -p "$OUT"
cargo build --release -p flotilla --no-default-features --manifest-path "$ROOT/Cargo.toml"
cp "$ROOT/target/release/flotilla" "$OUT/flotilla-system-malloc"
cargo build --release -p flotilla --manifest-path "$ROOT/Cargo.toml"
BIN="$OUT/flotilla-system-malloc"
heaptrack -o "$OUT/bench" "$BIN" bench --jobs "$JOBS" --output json > "$OUT/run.log" 2>&1
grep '^{' "$OUT/run.log" | tail -1 > "$OUT/bench.json"
heaptrack_print -f "$OUT"/bench.*zst --print-peaks 0 --print-allocators 0 --print-temporary 0 \
  --print-leaks 0 -F "$OUT/peak-stacks.txt" --flamegraph-cost-type peak > /dev/null
python3 "$ROOT/scripts/heap_split.py" "$OUT/peak-stacks.txt" "$OUT/bench.json" "$JOBS"
