#!/usr/bin/env bash
# One recorder stub for every system command a node's init script may call
# (the harness links it under each name). It appends its name and arguments
# to $FLOTILLA_HARNESS/calls.log (fields separated by \x1f), fails when a
# rule in $FLOTILLA_HARNESS/fail/<name> matches its arguments, and otherwise
# does what the script needs the real command to have done, inside
# $FLOTILLA_ROOT. Cluster-wide facts (tokens, CA, certificate key) live in
# $FLOTILLA_STUB_CLUSTER, shared by the nodes of one cluster.
set -uo pipefail
H="$FLOTILLA_HARNESS"
R="$FLOTILLA_ROOT"
C="$FLOTILLA_STUB_CLUSTER"
prog=$(basename "$0")
{
  printf '%s' "$prog"
  for a in "$@"; do printf '\x1f%s' "$a"; done
  printf '\n'
} >>"$H/calls.log"

# A failure rule: "<substring of the arguments>\t<message>" per line.
if [ -f "$H/fail/$prog" ]; then
  joined="$*"
  while IFS=$'\t' read -r pattern message; do
    case "$joined" in
      *"$pattern"*)
        printf '%s\n' "$message" >&2
        exit 1
        ;;
    esac
  done <"$H/fail/$prog"
fi

rand() { tr -dc "$1" </dev/urandom | head -c "$2"; }
config_value() { grep -m1 "$1" "$2" | sed 's/^[^:]*:[[:space:]]*//; s/^\[//; s/\]$//; s/"//g'; }
register_node() {
  # Tells the simulated API server that this node registered (kubelet's job).
  [ -n "${FLOTILLA_STUB_KUBE_API:-}" ] || return 0
  local labels
  labels=$(grep -m1 'value: "flotilla.io' "$1" | sed 's/^.*value: "//; s/"$//; s/=/":"/g; s/,/","/g')
  printf '{"kind":"Node","apiVersion":"v1","metadata":{"name":"%s","labels":{"%s"}}}' \
    "${FLOTILLA_STUB_NODE_NAME:-node}" "$labels" >"$H/register.json"
  curl.real -sS -f -o /dev/null -X POST -H 'Content-Type: application/json' \
    -H "@$FLOTILLA_STUB_KUBE_AUTH" --data-binary "@$H/register.json" "$FLOTILLA_STUB_KUBE_API/api/v1/nodes" ||
    { echo "the API server did not accept the node" >&2; exit 1; }
}
ca_hash() {
  openssl x509 -pubkey -noout -in "$1" | openssl pkey -pubin -outform der | openssl dgst -sha256 -hex | sed 's/^.* //'
}

case "$prog" in
  apt-get)
    if [ "${1:-}" != update ]; then
      mkdir -p "$H/state/pkgs"
      for a in "$@"; do
        case "$a" in
          -* | install | DPkg::* | update) ;;
          *)
            touch "$H/state/pkgs/$a"
            if [ "$a" = kubernetes-cni ]; then
              mkdir -p "$R/opt/cni/bin"
              for p in bridge host-local loopback portmap; do
                printf '#!/bin/sh\n' >"$R/opt/cni/bin/$p"
                chmod 755 "$R/opt/cni/bin/$p"
              done
            fi
            ;;
        esac
      done
    fi
    ;;
  dpkg-query)
    pkg="${!#}"
    [ -f "$H/state/pkgs/$pkg" ] || exit 1
    printf 'install ok installed'
    ;;
  systemctl)
    if [ "${1:-}" = is-active ]; then
      [ -f "$H/state/kubelet-active" ] || exit 3
    fi
    ;;
  gpg)
    out='' in=''
    while [ $# -gt 0 ]; do
      case "$1" in
        -o) out=$2; shift ;;
        -*) ;;
        *) in=$1 ;;
      esac
      shift
    done
    cp "$in" "$out"
    ;;
  containerd)
    printf 'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]\n  SystemdCgroup = false\n'
    ;;
  kubeadm)
    case "${1:-} ${2:-}" in
      "version -o") printf '%s\n' "${FLOTILLA_STUB_KUBE_VERSION:-v1.34.1}" ;;
      "certs certificate-key") rand 0-9a-f 64; echo ;;
      "token generate") printf '%s.%s\n' "$(rand a-z0-9 6)" "$(rand a-z0-9 16)" ;;
      "token create")
        t="$(rand a-z0-9 6).$(rand a-z0-9 16)"
        echo "$t" >>"$C/tokens"
        echo "$t"
        ;;
      "init phase") ;;
      "init --config")
        cfg=$3
        mkdir -p "$C" "$R/etc/kubernetes/pki"
        config_value 'token:' "$cfg" >>"$C/tokens"
        config_value 'certificateKey:' "$cfg" >"$C/cert-key"
        cp "$FLOTILLA_STUB_CA" "$R/etc/kubernetes/pki/ca.crt"
        endpoint=$(config_value 'controlPlaneEndpoint:' "$cfg")
        ca_data=$(base64 -w0 <"${FLOTILLA_STUB_KUBE_CA:-$FLOTILLA_STUB_CA}")
        printf '{"apiVersion":"v1","kind":"Config","clusters":[{"name":"%s","cluster":{"server":"%s","certificate-authority-data":"%s"}}],"users":[{"name":"admin","user":{"token":"%s"}}],"contexts":[{"name":"admin","context":{"cluster":"%s","user":"admin"}}],"current-context":"admin"}\n' \
          "$(config_value 'clusterName:' "$cfg")" "${FLOTILLA_STUB_KUBE_SERVER:-https://$endpoint}" "$ca_data" "${FLOTILLA_STUB_ADMIN_TOKEN:-admin-token}" "$(config_value 'clusterName:' "$cfg")" >"$R/etc/kubernetes/admin.conf"
        register_node "$cfg"
        touch "$H/state/kubelet-active"
        ;;
      "join --config")
        cfg=$3
        token=$(config_value 'token:' "$cfg")
        hash=$(config_value 'caCertHashes:' "$cfg")
        grep -qx "$token" "$C/tokens" 2>/dev/null || { echo "error: the bootstrap token is not known to the cluster" >&2; exit 1; }
        [ "$hash" = "sha256:$(ca_hash "$FLOTILLA_STUB_CA")" ] || { echo "error: the CA hash does not match the cluster CA" >&2; exit 1; }
        if grep -q '^controlPlane:' "$cfg"; then
          [ "$(config_value 'certificateKey:' "$cfg")" = "$(cat "$C/cert-key")" ] ||
            { echo "error: the certificate key cannot decrypt the uploaded certificates" >&2; exit 1; }
        fi
        mkdir -p "$R/etc/kubernetes"
        printf 'kubelet\n' >"$R/etc/kubernetes/kubelet.conf"
        register_node "$cfg"
        touch "$H/state/kubelet-active"
        ;;
      *) echo "stub kubeadm: unexpected arguments: $*" >&2; exit 1 ;;
    esac
    ;;
  kubectl)
    if [ "${3:-}" = config ]; then
      cat "$2"
    fi
    ;;
  curl)
    # Package repositories and release downloads come from fixtures; every
    # other URL (metadata, Key Vault, Blob, token endpoint) goes to the real curl.
    url='' out='' fmt=''
    prev=''
    for a in "$@"; do
      case "$prev" in
        -o) out=$a ;;
        -w) fmt=$a ;;
      esac
      case "$a" in http://* | https://*) url=$a ;; esac
      prev=$a
    done
    case "$url" in
      https://pkgs.k8s.io/*/Release.key)
        printf -- '-----BEGIN PGP PUBLIC KEY BLOCK-----\nfixture\n-----END PGP PUBLIC KEY BLOCK-----\n' >"${out:-/dev/stdout}"
        ;;
      https://github.com/flannel-io/*)
        printf 'kind: ConfigMap\ndata:\n  net-conf.json: |\n    {"Network": "10.244.0.0/16"}\n' >"${out:-/dev/stdout}"
        ;;
      *) exec curl.real "$@" ;;
    esac
    [ -z "$fmt" ] || printf '200'
    ;;
  modprobe | sysctl | swapoff | apt-mark) ;;
  *) echo "stub: $prog is not simulated" >&2; exit 1 ;;
esac
exit 0
