#!/usr/bin/env bash
# Runs every test flotilla has, on a fresh machine: builds once, then runs the
# Rust suites (unit, conformance, simulator protocol, end-to-end CLI), the
# lint gates, and the infra checks (installs checkov into target/).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== Rust tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi

echo "== infra checks"
bash scripts/infra_checks.sh
