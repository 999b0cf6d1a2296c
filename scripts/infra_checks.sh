#!/usr/bin/env bash
# Infra checks: installs checkov (pinned) into target/venv-checkov if missing,
# runs scripts/check_infra.py on the repo, then its unit tests. Ends with
# "N passed, M failed" (checks + tests); exits non-zero on any failure.
set -uo pipefail

CHECKOV_VERSION="3.3.30"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/target/venv-checkov"
PY="${PYTHON:-python3}"

if ! "$VENV/bin/checkov" --version 2>/dev/null | grep -qx "$CHECKOV_VERSION"; then
  echo "installing checkov $CHECKOV_VERSION into $VENV"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV" || { echo "infra: 0 passed, 1 failed"; exit 1; }
  if ! "$VENV/bin/pip" install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION"; then
    echo "could not install checkov $CHECKOV_VERSION from PyPI"
    echo "infra: 0 passed, 1 failed"
    exit 1
  fi
fi
export CHECKOV="$VENV/bin/checkov"

passed=0
failed=0

# 1. The three checks on the real tree.
out="$("$PY" "$ROOT/scripts/check_infra.py" "$ROOT" --checkov "$CHECKOV")"
echo "$out"
ok=$(grep -c '^ok ' <<<"$out" || true)
bad=$(grep -c '^FAIL ' <<<"$out" || true)
passed=$((passed + ok))
failed=$((failed + bad))

# 2. Unit tests (checkov-based ones included: checkov is installed above).
log="$(mktemp)"
(cd "$ROOT" && "$PY" -m unittest discover -s scripts/tests -v) >"$log" 2>&1
rc=$?
grep -E ' \.\.\. (ok|FAIL|ERROR|skipped)' "$log" | sed 's/^/  /'
t_ok=$(grep -cE ' \.\.\. ok$' "$log" || true)
t_bad=$(grep -cE ' \.\.\. (FAIL|ERROR)$' "$log" || true)
t_skip=$(grep -cE ' \.\.\. skipped' "$log" || true)
if [ "$rc" -ne 0 ]; then
  sed -n '/^======/,$p' "$log"
  [ "$t_bad" -eq 0 ] && t_bad=1   # e.g. an import error: count it
fi
rm -f "$log"
passed=$((passed + t_ok))
failed=$((failed + t_bad))

if [ "$t_skip" -gt 0 ]; then
  echo "infra: $passed passed, $failed failed, $t_skip skipped"
else
  echo "infra: $passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
