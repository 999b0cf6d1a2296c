#!/usr/bin/env bash
# Builds the deployment package the way azd does (infra/hooks/package.sh: a
# static musl binary, `flotilla package --require-static`), then proves it runs
# on a machine without the build's libraries: the zip is unpacked (modes from
# the zip) into an empty directory -- no /lib, /usr, /etc, /proc or /dev, just
# the package and an empty data folder -- and the binary is run there under
# chroot with an empty environment: `flotilla --version`, then `flotilla serve`
# answering the Functions host's readiness `GET /` from outside the chroot.
#
# Needs root (chroot; the hook's apt-get). Not part of scripts/test.sh: the
# musl build of std and of every dependency takes tens of minutes.
# Usage: scripts/check_static_package.sh [--no-build]  (--no-build: check dist/functionapp.zip as it is)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root (chroot)" >&2; exit 1; }
start=$(date +%s)

if [ "${1:-}" != "--no-build" ]; then
  echo "== build and package (infra/hooks/package.sh)"
  nice -n 19 sh infra/hooks/package.sh
fi
zip=dist/functionapp.zip
echo "== the package"
ls -l "$zip"
exe="${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-musl/release/flotilla"
file "$exe"
ls -l "$exe"
if readelf -lW "$exe" | grep -q INTERP || readelf -dW "$exe" | grep -q NEEDED; then
  echo "FAIL: $exe asks for a loader or a shared library" >&2
  readelf -lW "$exe" | grep INTERP >&2 || true
  readelf -dW "$exe" | grep NEEDED >&2 || true
  exit 1
fi
echo "readelf: no PT_INTERP, no DT_NEEDED"

CHROOT=$(command -v chroot)
root=$(mktemp -d /tmp/flotilla-chroot.XXXXXX)
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$root"
}
trap cleanup EXIT
# Unpack like the platform does: the files and the modes the zip records.
python3 - "$zip" "$root/home/site/wwwroot" <<'EOF'
import os, sys, zipfile
zf, dest = zipfile.ZipFile(sys.argv[1]), sys.argv[2]
for info in zf.infolist():
    path = os.path.join(dest, info.filename)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(zf.read(info))
    os.chmod(path, (info.external_attr >> 16) & 0o7777 or 0o644)
EOF
mkdir -p "$root/home/data"
echo "== the chroot ($root): every file in it"
(cd "$root" && find . -mindepth 1 | sort)

app=/home/site/wwwroot/flotilla
echo "== chroot: flotilla --version"
env -i "$CHROOT" "$root" "$app" --version

echo "== chroot: flotilla serve, readiness GET / from outside"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
env -i FUNCTIONS_CUSTOMHANDLER_PORT="$port" FLOTILLA_DATA_DIR=/home/data RUST_LOG=warn \
  "$CHROOT" "$root" "$app" serve >"$root/serve.log" 2>&1 &
pid=$!
ok=""
for _ in $(seq 1 100); do
  if code=$(curl -s -o "$root/ready.body" -w '%{http_code}' "http://127.0.0.1:$port/" 2>/dev/null) &&
    [ "$code" = 200 ]; then
    ok=1
    break
  fi
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.2
done
if [ -z "$ok" ]; then
  echo "FAIL: flotilla serve in the chroot did not answer GET /" >&2
  cat "$root/serve.log" >&2
  exit 1
fi
echo "GET / -> $code $(head -c 200 "$root/ready.body")"
# A job submitted as the host would (the HTTP trigger's envelope): the engine
# writes it to SQLite in the data folder, inside the chroot.
env -i "$CHROOT" "$root" "$app" spec >"$root/spec.json"
python3 - "$port" "$root/spec.json" <<'EOF'
import json, sys, urllib.request
port, spec = sys.argv[1], open(sys.argv[2]).read()
def invoke(function, method, params, body, content_type=None):
    headers = {"Content-Type": [content_type]} if content_type else {}
    env = {"Data": {"req": {"Url": f"http://localhost:7071/api/{function}", "Method": method, "Query": {},
                            "Headers": headers, "Params": params, "Identities": [], "Body": body}},
           "Metadata": {}}
    req = urllib.request.Request(f"http://127.0.0.1:{port}/{function}", data=json.dumps(env).encode(),
                                 headers={"Content-Type": "application/json"})
    res = json.load(urllib.request.urlopen(req, timeout=60))["Outputs"]["res"]
    return res["StatusCode"], json.loads(res["Body"] or "null")
status, body = invoke("submit", "POST", {}, spec, "application/json")
print(f"POST /submit (the `flotilla spec` example job) -> {status} {json.dumps(body)[:160]}")
assert str(status).startswith("2"), body
job = body["job"]
status, body = invoke("status", "GET", {"id": job}, "")
print(f"POST /status (job {job}) -> {status} {json.dumps(body)[:160]}")
assert str(status) == "200", body
EOF
kill "$pid"
wait "$pid" 2>/dev/null || true
pid=""
echo "serve log:"
sed 's/^/  /' "$root/serve.log"
echo "== static package checks passed in $(($(date +%s) - start))s"
