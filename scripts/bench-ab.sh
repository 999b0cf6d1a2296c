#!/usr/bin/env bash
# Is a change faster? (not part of CI; documented in the README). Builds two
# revisions of flotilla in release mode and alternates `flotilla bench`
# between them (scripts/bench_ab.py), then prints each build's jobs/s and CPU
# per job and the pairs' differences, with a verdict that says whether every
# pair agrees. Writes target/bench-ab/result.json.
#
# Usage: scripts/bench-ab.sh BASE [NEW] [--pairs 6] [--jobs 1000] [--simulator in-process|none|apart]
#   BASE, NEW  git revisions (a commit, a branch, HEAD~1); NEW defaults to the
#              working tree as it is, uncommitted changes included.
# Each revision is built from a throwaway worktree into target/bench-ab/build
# (the dependencies compile once for both) and kept as
# target/bench-ab/flotilla-<commit>, so a second comparison with the same
# commit does not build it again.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/target/bench-ab"
PY="${PYTHON:-python3}"

usage() { echo "usage: $0 BASE [NEW] [--pairs N] [--jobs N] [--simulator in-process|none|apart]" >&2; exit 2; }
REVS=()
PASS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --pairs|--jobs|--simulator) [ $# -ge 2 ] || usage; PASS+=("$1" "$2"); shift 2 ;;
    -h|--help) usage ;;
    -*) echo "unknown option: $1" >&2; usage ;;
    *) REVS+=("$1"); shift ;;
  esac
done
if [ ${#REVS[@]} -lt 1 ] || [ ${#REVS[@]} -gt 2 ]; then usage; fi
mkdir -p "$OUT"

# Prints the path of a release binary of revision $1 ("worktree": the checkout as it is).
build() {
  local rev="$1"
  if [ "$rev" = worktree ]; then
    echo "building the working tree (release)" >&2
    cargo build --release -p flotilla --manifest-path "$ROOT/Cargo.toml" >&2
    cp "$ROOT/target/release/flotilla" "$OUT/flotilla-worktree"
    echo "$OUT/flotilla-worktree"
    return
  fi
  local sha
  sha="$(git -C "$ROOT" rev-parse --verify --quiet "$rev^{commit}")" \
    || { echo "not a revision of this repository: $rev" >&2; exit 2; }
  local bin="$OUT/flotilla-$sha"
  if [ ! -x "$bin" ]; then
    local src="$OUT/src-$sha"
    echo "building $rev ($sha, release)" >&2
    git -C "$ROOT" worktree remove --force "$src" 2>/dev/null || rm -rf "$src"
    git -C "$ROOT" worktree add --detach --quiet "$src" "$sha"
    CARGO_TARGET_DIR="$OUT/build" cargo build --release -p flotilla \
      --manifest-path "$src/Cargo.toml" >&2
    cp "$OUT/build/release/flotilla" "$bin"
    git -C "$ROOT" worktree remove --force "$src"
  fi
  echo "$bin"
}

BASE="${REVS[0]}"
NEW="${REVS[1]:-worktree}"
A="$(build "$BASE")"
B="$(build "$NEW")"
exec "$PY" "$ROOT/scripts/bench_ab.py" --a "$A" --b "$B" \
  --labels "$BASE,$NEW" --out "$OUT/result.json" "${PASS[@]}"
