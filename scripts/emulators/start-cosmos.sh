#!/usr/bin/env bash
# Starts the Cosmos DB emulator (@vercel/cosmosdb-server) over HTTPS on
# 127.0.0.1 with a throwaway certificate generated into a temporary directory.
#
#   scripts/emulators/start-cosmos.sh [port]     (default 0: the OS picks one)
#
# Prints the endpoint line (COSMOS_READY https://127.0.0.1:<port>/) and the
# certificate path (COSMOS_CERT <path>: trust exactly this file; it is marked
# CA:FALSE so rustls accepts it as a self-signed end-entity certificate), then keeps
# running in the foreground until interrupted; the key and certificate are
# deleted on exit. Never commit the generated key.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
port="${1:-0}"

command -v node >/dev/null || { echo "node is not installed" >&2; exit 1; }
command -v openssl >/dev/null || { echo "openssl is not installed" >&2; exit 1; }
if [ ! -d "$here/node_modules/@vercel/cosmosdb-server" ]; then
  echo "@vercel/cosmosdb-server is missing: run npm ci --prefix scripts/emulators" >&2
  exit 1
fi

dir="$(mktemp -d)"
cleanup() { [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

openssl req -x509 -newkey rsa:2048 -nodes -keyout "$dir/key.pem" -out "$dir/cert.pem" \
  -days 1 -subj "/CN=localhost" \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -addext "basicConstraints=critical,CA:FALSE" -addext "extendedKeyUsage=serverAuth" 2>/dev/null
echo "COSMOS_CERT $dir/cert.pem"

node "$here/cosmos.js" --cert "$dir/cert.pem" --key "$dir/key.pem" --port "$port" --host 127.0.0.1 &
pid=$!
wait "$pid"
