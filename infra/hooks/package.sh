#!/bin/sh
# azd `prepackage` hook: builds the release binary against glibc 2.31 and lays
# out the function app with `flotilla package --max-glibc 2.31`, which writes
# dist/functionapp.zip (what azd deploys, see azure.yaml) and refuses a binary
# that needs a newer glibc than the Functions Linux images have, or a shared
# library beyond glibc's own (docs/deploy.md, "The package").
#
# Linking against an older glibc than the build machine's uses cargo-zigbuild;
# when it is not on PATH it is installed from PyPI into target/venv-zig.
set -eu
cd "$(dirname "$0")/../.."
GLIBC=2.31
TARGET=x86_64-unknown-linux-gnu
if ! command -v cargo-zigbuild >/dev/null 2>&1; then
  if [ ! -x target/venv-zig/bin/cargo-zigbuild ]; then
    echo "installing cargo-zigbuild and zig into target/venv-zig" >&2
    python3 -m venv target/venv-zig
    target/venv-zig/bin/pip install --quiet --disable-pip-version-check \
      "ziglang==0.17.1" "cargo-zigbuild==0.24.1"
  fi
  PATH="$PWD/target/venv-zig/bin:$PATH"
  export PATH
fi
cargo zigbuild --release --locked -p flotilla --target "$TARGET.$GLIBC"
rm -rf dist/functionapp dist/functionapp.zip
"target/$TARGET/release/flotilla" package --out dist/functionapp --max-glibc "$GLIBC"
