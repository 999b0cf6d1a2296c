#!/bin/sh
# azd `prepackage` hook: builds a statically linked (musl) release binary and
# lays out the function app with `flotilla package --require-static`, which
# writes dist/functionapp.zip (what azd deploys, see azure.yaml; the binary's
# entry keeps mode 0755) and refuses a binary that asks for a dynamic loader or
# any shared library. A static binary needs nothing from the Functions image:
# not its glibc version, not any /lib (docs/deploy.md, "The package").
#
# rustup cannot add the musl standard library on this project's machines, so
# std is built for musl from source (cargo -Zbuild-std) with Debian 12's Rust
# 1.96 and its std sources, and linked by zig (which brings musl's libc and
# LLVM's libunwind). Everything is installed here, idempotently:
#   - Debian packages rustc-web, cargo-web, rust-web-src (apt-get, as root;
#     otherwise the command to run is printed). They install /usr/bin/rustc and
#     /usr/bin/cargo, which a rustup install earlier on PATH keeps shadowing.
#   - ziglang and cargo-zigbuild, pinned, from PyPI into target/venv-zig.
# Environment: CARGO_TARGET_DIR (default target); FLOTILLA_PACKAGE_OUT (the
# package folder, default dist/functionapp; the zip is written beside it).
set -eu
cd "$(dirname "$0")/../.."
TARGET=x86_64-unknown-linux-musl
DEBIAN_PACKAGES="rustc-web cargo-web rust-web-src"
PYPI_PINS="ziglang==0.17.1 cargo-zigbuild==0.24.1"
TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT=${FLOTILLA_PACKAGE_OUT:-dist/functionapp}
VENV="$TARGET_DIR/venv-zig"
case $VENV in /*) ;; *) VENV="$PWD/$VENV" ;; esac

missing=""
for p in $DEBIAN_PACKAGES; do
  if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing="$missing $p"
  fi
done
if [ -n "$missing" ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "the static build needs Debian 12's packages$missing (Rust 1.96 and its std sources)" >&2
    exit 1
  fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "the static build needs Debian packages:$missing; install them with:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends$missing" >&2
    exit 1
  fi
  echo "installing Debian packages:$missing" >&2
  apt-get update -qq
  # shellcheck disable=SC2086 # one argument per package
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
fi
RUSTC=/usr/bin/rustc
CARGO=/usr/bin/cargo
RUST_VERSION=$("$RUSTC" -vV | sed -n 's/^release: //p')
SYSROOT=$("$RUSTC" --print sysroot)
if [ ! -f "$SYSROOT/lib/rustlib/src/rust/library/std/Cargo.toml" ] ||
  [ "$(readlink -f "$SYSROOT/lib/rustlib/src/rust")" != "$(readlink -f "/usr/src/rustc-$RUST_VERSION")" ]; then
  echo "$RUSTC $RUST_VERSION has no matching std sources in $SYSROOT/lib/rustlib/src/rust" \
    "(rust-web-src must be the same version as rustc-web)" >&2
  exit 1
fi

if [ "$(cat "$VENV/pins" 2>/dev/null || true)" != "$PYPI_PINS" ]; then
  echo "installing $PYPI_PINS into $VENV" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  # shellcheck disable=SC2086 # one argument per pin
  "$VENV/bin/pip" install --quiet --disable-pip-version-check $PYPI_PINS
  echo "$PYPI_PINS" >"$VENV/pins"
fi

# RUSTC_BOOTSTRAP=1 lets this stable rustc take -Zbuild-std (std rebuilt for
# musl; its crates.io dependencies come from std's own Cargo.lock).
# link-self-contained=no: the Debian rustc has no musl crt objects; zig supplies
# them, musl's libc and libunwind.
PATH="$VENV/bin:/usr/bin:$PATH" \
  RUSTC="$RUSTC" RUSTDOC=/usr/bin/rustdoc CARGO="$CARGO" RUSTC_BOOTSTRAP=1 \
  CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="-C link-self-contained=no" \
  "$VENV/bin/cargo-zigbuild" zigbuild --release --locked -p flotilla \
  -Zbuild-std=std,panic_abort --target "$TARGET"
rm -rf "$OUT" "$OUT.zip"
"$TARGET_DIR/$TARGET/release/flotilla" package --out "$OUT" --require-static
