#!/usr/bin/env bash
# Runs every test flotilla has, on a fresh machine: builds once, then runs the
# Rust suites (unit, conformance, simulator protocol, end-to-end CLI), the
# lint gates, and the infra checks. Installs what the tests need: the npm
# emulators (scripts/emulators, npm ci), checkov and the Azure SDK for Python
# (venvs under target/).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== emulators (npm ci: Azurite, cosmosdb-server)"
if [ ! -d scripts/emulators/node_modules/azurite ] || [ ! -d scripts/emulators/node_modules/@vercel/cosmosdb-server ]; then
  npm ci --prefix scripts/emulators --no-audit --no-fund
fi
command -v openssl >/dev/null || { echo "openssl is needed by the node bootstrap tests (the join discovery hash) and the scale-out test" >&2; exit 1; }
# The node bootstrap tests run shellcheck on the rendered init scripts.
command -v shellcheck >/dev/null || { apt-get update -qq && apt-get install -y -qq shellcheck; }
# The progress-page test loads the page in headless Chromium (Debian's package).
command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; }

echo "== format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== Rust tests"
# The Functions-host harness (tests/) starts the flotilla binary itself.
cargo build --workspace --bins --locked
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi

echo "== the Azure SDK for Python against the simulator"
bash scripts/sdk_python.sh

echo "== infra checks"
bash scripts/infra_checks.sh
