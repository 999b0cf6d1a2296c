# shellcheck shell=bash
# flotilla node bootstrap for Ubuntu 24.04: identity -> install -> activate.
#
# `stage` renders this template once per job and role (one script for the
# control-plane nodes, one per worker pool): the variables above this comment
# are the rendering. The script holds no secret value. In service-principal
# mode the principal's secret arrives in FLOTILLA_SP_SECRET, set by the init
# extension's (encrypted) protected settings; tokens and join material stay in
# shell variables and root-only files, never on a command line or in the log.
#
# Usage: bash init.sh [run|publish]
#   run      (default) the whole bootstrap; running it again does no harm
#   publish  first master only: refresh the join token and the uploaded
#            control-plane certificates, re-publish them to Key Vault (what
#            flotilla-publish.timer runs every 30 minutes)
#
# Every phase logs one line; a failure logs one line to stderr and exits with
# a code that says where it failed (the extension's status carries both):
#   10 bad invocation or rendering
#   21 no Key Vault token              22 no Storage token
#   23 service-principal credentials missing or refused
#   24 Key Vault refused this node's identity
#   25 staged spec unreadable with the Storage token
#   26 no VM name from the instance metadata endpoint
#   31 kernel modules / sysctls        32 containerd + runc
#   33 Kubernetes packages             34 CNI plugins
#   41 kubeadm init                    42 CNI install
#   43 publishing to Key Vault         44 join information never appeared
#   45 kubeadm join                    46 kubelet not running
#
# Tests move every path, endpoint and wait through the environment:
# FLOTILLA_ROOT (prefix of every file path), FLOTILLA_IMDS_URL,
# FLOTILLA_AUTHORITY_HOST, FLOTILLA_WAIT_TRIES, FLOTILLA_WAIT_SECONDS.

set -euo pipefail
umask 077

ROOT="${FLOTILLA_ROOT:-}"
IMDS_URL="${FLOTILLA_IMDS_URL:-http://169.254.169.254}"
AUTHORITY_HOST="${FLOTILLA_AUTHORITY_HOST:-https://login.microsoftonline.com}"
WAIT_TRIES="${FLOTILLA_WAIT_TRIES:-180}"
WAIT_SECONDS="${FLOTILLA_WAIT_SECONDS:-10}"
TOKEN_TTL=1h
K8S_REPO="https://pkgs.k8s.io/core:/stable:/${K8S_MINOR}/deb"
CRI_SOCKET=unix:///run/containerd/containerd.sock
STATE="$ROOT/var/lib/flotilla"
WORK="$STATE/run"
KUBE="$ROOT/etc/kubernetes"
ADMIN_CONF="$KUBE/admin.conf"
export DEBIAN_FRONTEND=noninteractive

PHASE=start
CHANGED=0
APT_UPDATED=0
HTTP_CODE=000
JSON_VALUE=
TOKEN_ERROR=
KV_TOKEN=
STORAGE_TOKEN=
SP_SECRET=
VM_NAME=
KUBEADM_VERSION=
JOIN_TOKEN=
CA_HASH=
CERT_KEY=
INITIALISED=0

if [ "$FLOTILLA_ROLE" = master ]; then
  NODE_LABELS="flotilla.io/role=control-plane"
else
  NODE_LABELS="flotilla.io/role=worker,flotilla.io/pool=$FLOTILLA_POOL"
fi

log() { printf '[flotilla] %s\n' "$*"; }

# fail CODE MESSAGE: one line on stderr, then exit CODE.
fail() {
  local code=$1
  shift
  printf '[flotilla] %s failed (exit %s): %s\n' "$PHASE" "$code" "$*" >&2
  exit "$code"
}

# The last lines of a tool's log, with anything shaped like a token or key masked.
tail_of() {
  tail -n 3 "$1" 2>/dev/null | sed -E 's/[a-z0-9]{6}\.[a-z0-9]{16}/<token>/g; s/[0-9a-fA-F]{64}/<key>/g' | tr '\n' ' '
}

# http METHOD URL [curl options...]: sets HTTP_CODE (000 when there was no
# answer); the body is in $WORK/resp. Secrets go in through files (-H @file,
# --data-binary @file), never through the command line.
http() {
  local method=$1 url=$2
  shift 2
  local args=(-sS -o "$WORK/resp" -w '%{http_code}' --retry 4 --retry-delay 2 --max-time 30)
  if [ "$method" != GET ]; then
    args+=(-X "$method")
  fi
  HTTP_CODE=$(curl "${args[@]}" "$@" "$url" 2>"$WORK/curl.err") || HTTP_CODE=000
}

# json_str FIELD FILE: sets JSON_VALUE to the first string value of FIELD.
json_str() {
  JSON_VALUE=$(grep -o "\"$1\"[[:space:]]*:[[:space:]]*\"[^\"]*\"" "$2" | head -n 1 | sed 's/^[^:]*:[[:space:]]*"//; s/"$//') || JSON_VALUE=
}

# write_file PATH MODE < CONTENT: replaces PATH only when the content differs;
# sets CHANGED=1 when it did, CHANGED=0 when the file was already right.
write_file() {
  local path=$1 mode=$2 tmp
  tmp="$WORK/write.$$"
  cat >"$tmp"
  if [ -f "$path" ] && cmp -s "$tmp" "$path"; then
    rm -f "$tmp"
    CHANGED=0
    return 0
  fi
  (umask 022 && mkdir -p "$(dirname "$path")")
  chmod "$mode" "$tmp"
  mv -f "$tmp" "$path"
  CHANGED=1
}

bearer_file() {
  printf 'Authorization: Bearer %s\n' "$2" >"$WORK/$1.h"
}

valid_token() { [[ $1 =~ ^[a-z0-9]{6}\.[a-z0-9]{16}$ ]]; }
valid_hash() { [[ $1 =~ ^sha256:[0-9a-f]{64}$ ]]; }
valid_key() { [[ $1 =~ ^[0-9a-f]{64}$ ]]; }

# ---- identity ---------------------------------------------------------------

# imds_token RESOURCE VAR: a managed-identity token from the instance metadata
# endpoint, for the job's node identity (NODE_IDENTITY_ID, which holds the
# node's grants) or, without one, the scale set's system-assigned identity.
imds_token() {
  local which=()
  [ -z "$NODE_IDENTITY_ID" ] || which=(--data-urlencode "msi_res_id=$NODE_IDENTITY_ID")
  http GET "$IMDS_URL/metadata/identity/oauth2/token" -G -H 'Metadata: true' \
    --data-urlencode 'api-version=2018-02-01' --data-urlencode "resource=$1" "${which[@]}"
  [ "$HTTP_CODE" = 200 ] || return 1
  json_str access_token "$WORK/resp"
  rm -f "$WORK/resp"
  [ -n "$JSON_VALUE" ] || return 1
  printf -v "$2" '%s' "$JSON_VALUE"
}

# sp_token SCOPE VAR: a client-credentials token for the service principal.
sp_token() {
  http POST "$AUTHORITY_HOST/$TENANT_ID/oauth2/v2.0/token" \
    --data-urlencode grant_type=client_credentials --data-urlencode "client_id=$SP_CLIENT_ID" \
    --data-urlencode "client_secret@$WORK/sp.secret" --data-urlencode "scope=$1"
  if [ "$HTTP_CODE" != 200 ]; then
    json_str error "$WORK/resp"
    TOKEN_ERROR="${JSON_VALUE:-no answer} (HTTP $HTTP_CODE)"
    return 1
  fi
  json_str access_token "$WORK/resp"
  rm -f "$WORK/resp"
  [ -n "$JSON_VALUE" ] || { TOKEN_ERROR="no access_token in the answer"; return 1; }
  printf -v "$2" '%s' "$JSON_VALUE"
}

# The service principal's secret: from the extension (first run) or from the
# root-only azure.json this script wrote (re-runs, the publish timer).
load_sp_secret() {
  SP_SECRET="${FLOTILLA_SP_SECRET:-}"
  unset FLOTILLA_SP_SECRET
  if [ -z "$SP_SECRET" ] && [ -f "$KUBE/azure.json" ]; then
    json_str aadClientSecret "$KUBE/azure.json"
    SP_SECRET=$JSON_VALUE
  fi
  [ -n "$SP_SECRET" ] || fail 23 "service-principal mode, but no secret was delivered (FLOTILLA_SP_SECRET from the extension's protected settings)"
  case "$SP_SECRET" in
    *'"'* | *\\* | *$'\n'*) fail 23 "the service-principal secret holds a quote, backslash or newline, which this script does not accept" ;;
  esac
  [ -n "$SP_CLIENT_ID" ] || fail 23 "service-principal mode needs the principal's client id (CLUSTER_SP_CLIENT_ID)"
  [ -n "$TENANT_ID" ] || fail 23 "service-principal mode needs the tenant id (AZURE_TENANT_ID)"
  printf '%s' "$SP_SECRET" >"$WORK/sp.secret"
}

identity() {
  PHASE=identity
  case "$IDENTITY_MODE" in
    managed-identity)
      imds_token https://vault.azure.net KV_TOKEN ||
        fail 21 "no Key Vault token from the instance metadata endpoint (HTTP $HTTP_CODE); is the job's node identity ${NODE_IDENTITY_ID:-(none)} attached to the scale set?"
      if [ "$STAGING_ACCESS" = identity ]; then
        imds_token https://storage.azure.com/ STORAGE_TOKEN ||
          fail 22 "no Storage token from the instance metadata endpoint (HTTP $HTTP_CODE)"
      fi
      ;;
    service-principal)
      load_sp_secret
      sp_token https://vault.azure.net/.default KV_TOKEN ||
        fail 23 "the token endpoint refused service principal $SP_CLIENT_ID: $TOKEN_ERROR"
      if [ "$STAGING_ACCESS" = identity ]; then
        sp_token https://storage.azure.com/.default STORAGE_TOKEN ||
          fail 22 "no Storage token for service principal $SP_CLIENT_ID: $TOKEN_ERROR"
      fi
      ;;
    *) fail 10 "unknown identity mode '$IDENTITY_MODE'" ;;
  esac
  bearer_file kv "$KV_TOKEN"
  # The node's grants are on its job's join secrets only (no vault-wide
  # list): reading one (a placeholder until the first master writes it)
  # proves the token and the grant.
  http GET "$KEYVAULT_URL/secrets/$SECRET_JOIN_TOKEN?api-version=7.4" -H "@$WORK/kv.h"
  rm -f "$WORK/resp"
  [ "$HTTP_CODE" = 200 ] || fail 24 "Key Vault $KEYVAULT_URL refused this node's $IDENTITY_MODE token reading $SECRET_JOIN_TOKEN (HTTP $HTTP_CODE)"
  # With the account key (STAGING_ACCESS=account-key) the node holds no
  # Storage grant: the extension downloaded the script, nothing else reads.
  if [ "$STAGING_ACCESS" = identity ]; then
    bearer_file storage "$STORAGE_TOKEN"
    http GET "$STAGING_URL$SPEC_BLOB" -H "@$WORK/storage.h" -H 'x-ms-version: 2023-11-03'
    if [ "$HTTP_CODE" != 200 ] || ! grep -q '"name"' "$WORK/resp"; then
      fail 25 "cannot read the staged spec $STAGING_URL$SPEC_BLOB with this node's Storage token (HTTP $HTTP_CODE)"
    fi
  fi
  http GET "$IMDS_URL/metadata/instance/compute/name" -G -H 'Metadata: true' \
    --data-urlencode 'api-version=2021-02-01' --data-urlencode 'format=text'
  if [ "$HTTP_CODE" != 200 ] || [ ! -s "$WORK/resp" ]; then
    fail 26 "the instance metadata endpoint did not give this VM's name (HTTP $HTTP_CODE)"
  fi
  VM_NAME=$(head -n 1 "$WORK/resp")
  log "identity: $IDENTITY_MODE tokens obtained and validated (VM $VM_NAME)"
}

# ---- install ----------------------------------------------------------------

pkg_installed() {
  # shellcheck disable=SC2016 # ${Status} is dpkg-query's format, not a shell expansion
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# apt_install PACKAGE...: installs what is missing (nothing when all are there).
apt_install() {
  local missing=() p
  for p in "$@"; do
    pkg_installed "$p" || missing+=("$p")
  done
  [ "${#missing[@]}" -gt 0 ] || return 0
  if [ "$APT_UPDATED" = 0 ]; then
    apt-get -q -o DPkg::Lock::Timeout=600 update >>"$STATE/apt.log" 2>&1 || return 1
    APT_UPDATED=1
  fi
  apt-get -q -y -o DPkg::Lock::Timeout=600 install --no-install-recommends "${missing[@]}" >>"$STATE/apt.log" 2>&1
}

install_kernel() {
  write_file "$ROOT/etc/modules-load.d/flotilla-k8s.conf" 644 <<'EOF'
overlay
br_netfilter
EOF
  modprobe overlay || fail 31 "modprobe overlay failed"
  modprobe br_netfilter || fail 31 "modprobe br_netfilter failed"
  write_file "$ROOT/etc/sysctl.d/99-flotilla-k8s.conf" 644 <<'EOF'
net.bridge.bridge-nf-call-iptables = 1
net.bridge.bridge-nf-call-ip6tables = 1
net.ipv4.ip_forward = 1
EOF
  sysctl --system >/dev/null 2>&1 || fail 31 "sysctl --system failed"
  swapoff -a || fail 31 "swapoff -a failed (the kubelet needs swap off)"
}

install_containerd() {
  apt_install containerd runc || fail 32 "apt-get could not install containerd and runc: $(tail_of "$STATE/apt.log")"
  containerd config default >"$WORK/containerd.toml" 2>/dev/null || fail 32 "containerd config default failed"
  sed -i 's/SystemdCgroup = false/SystemdCgroup = true/' "$WORK/containerd.toml"
  grep -q 'SystemdCgroup = true' "$WORK/containerd.toml" ||
    fail 32 "could not switch containerd's runc to the systemd cgroup driver"
  write_file "$ROOT/etc/containerd/config.toml" 644 <"$WORK/containerd.toml"
  if [ "$CHANGED" = 1 ]; then
    systemctl restart containerd || fail 32 "containerd did not restart with the new configuration"
  fi
  systemctl enable --now containerd >/dev/null 2>&1 || fail 32 "containerd could not be enabled"
}

install_kubernetes() {
  local keyring="$ROOT/etc/apt/keyrings/kubernetes-apt-keyring.gpg"
  if [ ! -s "$keyring" ]; then
    mkdir -p "$ROOT/etc/apt/keyrings"
    chmod 755 "$ROOT/etc/apt/keyrings"
    http GET "$K8S_REPO/Release.key" -L
    [ "$HTTP_CODE" = 200 ] || fail 33 "cannot download the Kubernetes repository key $K8S_REPO/Release.key (HTTP $HTTP_CODE)"
    gpg --batch --yes --dearmor -o "$keyring" "$WORK/resp" || fail 33 "gpg could not read the Kubernetes repository key"
    chmod 644 "$keyring"
  fi
  write_file "$ROOT/etc/apt/sources.list.d/kubernetes.list" 644 <<EOF
deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] $K8S_REPO/ /
EOF
  if [ "$CHANGED" = 1 ]; then APT_UPDATED=0; fi
  apt_install kubelet kubeadm kubectl kubernetes-cni cri-tools ||
    fail 33 "apt-get could not install kubelet, kubeadm and kubectl $K8S_MINOR: $(tail_of "$STATE/apt.log")"
  apt-mark hold kubelet kubeadm kubectl >/dev/null || fail 33 "apt-mark hold failed"
  KUBEADM_VERSION=$(kubeadm version -o short 2>/dev/null) || fail 33 "kubeadm does not run"
  case "$KUBEADM_VERSION" in
    "$K8S_MINOR".*) ;;
    *) fail 33 "kubeadm is $KUBEADM_VERSION, expected $K8S_MINOR.x" ;;
  esac
  systemctl enable kubelet >/dev/null 2>&1 || fail 33 "kubelet could not be enabled"
}

install_cni_plugins() {
  local p
  for p in bridge host-local loopback portmap; do
    [ -x "$ROOT/opt/cni/bin/$p" ] || fail 34 "CNI plugin $p is missing from /opt/cni/bin (package kubernetes-cni)"
  done
}

install() {
  PHASE=install
  install_kernel
  install_containerd
  install_kubernetes
  install_cni_plugins
  log "install: kernel modules and sysctls, containerd + runc (systemd cgroups), kubelet/kubeadm/kubectl $KUBEADM_VERSION, CNI plugins"
}

# ---- activate ---------------------------------------------------------------

# The Azure cloud configuration, per identity mode, for the node's Azure
# integrations (root-only; the service principal's secret is only ever here).
write_azure_json() {
  if [ "$IDENTITY_MODE" = managed-identity ]; then
    write_file "$KUBE/azure.json" 600 <<EOF
{
  "cloud": "AzurePublicCloud",
  "tenantId": "$TENANT_ID",
  "subscriptionId": "$SUBSCRIPTION_ID",
  "resourceGroup": "$RESOURCE_GROUP",
  "location": "$LOCATION",
  "useManagedIdentityExtension": true,
  "userAssignedIdentityID": ""
}
EOF
  else
    write_file "$KUBE/azure.json" 600 <<EOF
{
  "cloud": "AzurePublicCloud",
  "tenantId": "$TENANT_ID",
  "subscriptionId": "$SUBSCRIPTION_ID",
  "resourceGroup": "$RESOURCE_GROUP",
  "location": "$LOCATION",
  "useManagedIdentityExtension": false,
  "aadClientId": "$SP_CLIENT_ID",
  "aadClientSecret": "$SP_SECRET"
}
EOF
  fi
}

# hosts_entry ADDRESS: resolve the API name to ADDRESS on this node (masters
# reach their own API server directly instead of through the load balancer).
hosts_entry() {
  local hosts="$ROOT/etc/hosts"
  mkdir -p "$ROOT/etc"
  touch "$hosts"
  grep -vF " $API_ENDPOINT # flotilla" "$hosts" >"$WORK/hosts" || true
  printf '%s %s # flotilla\n' "$1" "$API_ENDPOINT" >>"$WORK/hosts"
  write_file "$hosts" 644 <"$WORK/hosts"
}

node_registration() {
  printf '  criSocket: "%s"\n  kubeletExtraArgs:\n  - name: node-labels\n    value: "%s"\n' "$CRI_SOCKET" "$NODE_LABELS"
  if [ "$FLOTILLA_ROLE" = master ] && [ "$SCHEDULE_ON_MASTERS" = true ]; then
    printf '  taints: []\n'
  fi
}

# The control-plane part of an extra master's join configuration.
control_plane() {
  if [ "$FLOTILLA_ROLE" = master ]; then
    printf 'controlPlane:\n  certificateKey: "%s"\n' "$CERT_KEY"
  fi
}

write_init_config() {
  write_file "$STATE/kubeadm-init.yaml" 600 <<EOF
apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
bootstrapTokens:
- token: "$JOIN_TOKEN"
  ttl: "$TOKEN_TTL"
  usages: [signing, authentication]
  groups: [system:bootstrappers:kubeadm:default-node-token]
certificateKey: "$CERT_KEY"
nodeRegistration:
$(node_registration)
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
clusterName: "$FLOTILLA_JOB"
kubernetesVersion: "$KUBEADM_VERSION"
controlPlaneEndpoint: "$API_ENDPOINT:$API_PORT"
apiServer:
  certSANs: ["$API_ENDPOINT"]
networking:
  podSubnet: "$POD_CIDR"
  serviceSubnet: "$SERVICE_CIDR"
---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: systemd
EOF
}

write_join_config() {
  write_file "$STATE/kubeadm-join.yaml" 600 <<EOF
apiVersion: kubeadm.k8s.io/v1beta4
kind: JoinConfiguration
discovery:
  bootstrapToken:
    apiServerEndpoint: "$API_ENDPOINT:$API_PORT"
    token: "$JOIN_TOKEN"
    caCertHashes: ["$CA_HASH"]
nodeRegistration:
$(node_registration)
$(control_plane)
EOF
}

# The SHA-256 of the cluster CA's public key, as kubeadm discovery expects it.
ca_hash() {
  local hex
  hex=$(openssl x509 -pubkey -noout -in "$KUBE/pki/ca.crt" | openssl pkey -pubin -outform der | openssl dgst -sha256 -hex | sed 's/^.* //') || return 1
  CA_HASH="sha256:$hex"
  valid_hash "$CA_HASH"
}

# kv_put NAME VALUE: writes a secret of the job with this node's identity.
# VALUE is checked by the caller to need no JSON escaping.
kv_put() {
  cat >"$WORK/secret.json" <<EOF
{"value":"$2","contentType":"text/plain","tags":{"flotilla-job":"$FLOTILLA_JOB","managed-by":"flotilla"}}
EOF
  http PUT "$KEYVAULT_URL/secrets/$1?api-version=7.4" -H "@$WORK/kv.h" \
    -H 'Content-Type: application/json' --data-binary "@$WORK/secret.json"
  rm -f "$WORK/secret.json" "$WORK/resp"
  [ "$HTTP_CODE" = 200 ] || fail 43 "Key Vault refused writing secret $1 with this node's identity (HTTP $HTTP_CODE)"
}

# kv_get NAME VAR: 0 with VAR set when the secret has been written, 1 while
# it does not exist or still holds flotilla's placeholder.
kv_get() {
  http GET "$KEYVAULT_URL/secrets/$1?api-version=7.4" -H "@$WORK/kv.h"
  case "$HTTP_CODE" in
    200)
      json_str value "$WORK/resp"
      rm -f "$WORK/resp"
      [ "$JSON_VALUE" != "$PENDING_SECRET" ] || return 1
      printf -v "$2" '%s' "$JSON_VALUE"
      ;;
    404) return 1 ;;
    *) fail 24 "Key Vault refused reading secret $1 with this node's identity (HTTP $HTTP_CODE)" ;;
  esac
}

install_cni() {
  http GET "$CNI_MANIFEST_URL" -L
  [ "$HTTP_CODE" = 200 ] || fail 42 "cannot download the CNI manifest $CNI_MANIFEST_URL (HTTP $HTTP_CODE)"
  sed "s#10.244.0.0/16#$POD_CIDR#g" "$WORK/resp" >"$STATE/cni.yaml"
  kubectl --kubeconfig "$ADMIN_CONF" apply -f "$STATE/cni.yaml" >"$STATE/cni.log" 2>&1 ||
    fail 42 "kubectl apply of the CNI manifest failed: $(tail_of "$STATE/cni.log")"
}

# Publishes what other nodes need to join (and the admin kubeconfig) to Key
# Vault with this master's identity. Uses JOIN_TOKEN when set (fresh from
# kubeadm init); otherwise creates a new token and re-uploads the certificates.
publish() {
  if [ -z "$JOIN_TOKEN" ]; then
    JOIN_TOKEN=$(kubeadm token create --ttl "$TOKEN_TTL" --kubeconfig "$ADMIN_CONF" 2>/dev/null) ||
      fail 43 "kubeadm token create failed"
  fi
  valid_token "$JOIN_TOKEN" || fail 43 "kubeadm gave a malformed bootstrap token"
  if [ "$INITIALISED" != 1 ]; then
    kubeadm init phase upload-certs --upload-certs --config "$STATE/kubeadm-init.yaml" >"$STATE/upload-certs.log" 2>&1 ||
      fail 43 "re-uploading the control-plane certificates failed: $(tail_of "$STATE/upload-certs.log")"
  fi
  ca_hash || fail 43 "cannot compute the CA certificate hash from $KUBE/pki/ca.crt"
  kv_put "$SECRET_JOIN_TOKEN" "$JOIN_TOKEN"
  kv_put "$SECRET_CA_HASH" "$CA_HASH"
  kv_put "$SECRET_CERT_KEY" "$CERT_KEY"
  kubectl --kubeconfig "$ADMIN_CONF" config view --raw --flatten -o json >"$WORK/kubeconfig.json" 2>/dev/null ||
    fail 43 "kubectl could not export the admin kubeconfig"
  kv_put "$SECRET_KUBECONFIG" "$(base64 -w0 <"$WORK/kubeconfig.json")"
  rm -f "$WORK/kubeconfig.json"
}

install_publish_timer() {
  write_file "$ROOT/usr/local/lib/flotilla/init.sh" 700 <"$0"
  write_file "$ROOT/etc/systemd/system/flotilla-publish.service" 644 <<EOF
[Unit]
Description=flotilla: refresh the join token of $FLOTILLA_JOB in Key Vault
After=network-online.target kubelet.service

[Service]
Type=oneshot
ExecStart=/bin/bash /usr/local/lib/flotilla/init.sh publish
EOF
  write_file "$ROOT/etc/systemd/system/flotilla-publish.timer" 644 <<'EOF'
[Unit]
Description=flotilla: refresh the join token every 30 minutes

[Timer]
OnBootSec=5min
OnUnitActiveSec=30min

[Install]
WantedBy=timers.target
EOF
  systemctl daemon-reload || fail 43 "systemctl daemon-reload failed"
  systemctl enable --now flotilla-publish.timer >/dev/null 2>&1 || fail 43 "flotilla-publish.timer could not be enabled"
}

init_first_master() {
  hosts_entry 127.0.0.1
  if [ ! -s "$STATE/certificate-key" ]; then
    kubeadm certs certificate-key >"$STATE/certificate-key" 2>/dev/null || fail 41 "kubeadm certs certificate-key failed"
  fi
  CERT_KEY=$(head -n 1 "$STATE/certificate-key")
  valid_key "$CERT_KEY" || fail 41 "kubeadm gave a malformed certificate key"
  if [ ! -f "$ADMIN_CONF" ] || [ ! -f "$STATE/kubeadm-init.yaml" ]; then
    JOIN_TOKEN=$(kubeadm token generate 2>/dev/null) || fail 41 "kubeadm token generate failed"
    write_init_config
  fi
  if [ ! -f "$ADMIN_CONF" ]; then
    kubeadm init --config "$STATE/kubeadm-init.yaml" --upload-certs --skip-token-print --skip-certificate-key-print \
      >"$STATE/kubeadm-init.log" 2>&1 || fail 41 "kubeadm init failed: $(tail_of "$STATE/kubeadm-init.log")"
    INITIALISED=1
  else
    # Initialised by an earlier run: publish a fresh token instead.
    JOIN_TOKEN=
  fi
  install_cni
  publish
  install_publish_timer
}

wait_join_info() {
  local try=1
  while :; do
    if kv_get "$SECRET_JOIN_TOKEN" JOIN_TOKEN && kv_get "$SECRET_CA_HASH" CA_HASH &&
      { [ "$FLOTILLA_ROLE" != master ] || kv_get "$SECRET_CERT_KEY" CERT_KEY; }; then
      break
    fi
    if [ "$try" -ge "$WAIT_TRIES" ]; then
      fail 44 "the join information of $FLOTILLA_JOB did not appear in Key Vault after $((WAIT_TRIES * WAIT_SECONDS)) s; is the first master up?"
    fi
    try=$((try + 1))
    sleep "$WAIT_SECONDS"
  done
  valid_token "$JOIN_TOKEN" || fail 44 "Key Vault secret $SECRET_JOIN_TOKEN does not hold a bootstrap token"
  valid_hash "$CA_HASH" || fail 44 "Key Vault secret $SECRET_CA_HASH does not hold a sha256 CA hash"
  if [ "$FLOTILLA_ROLE" = master ]; then
    valid_key "$CERT_KEY" || fail 44 "Key Vault secret $SECRET_CERT_KEY does not hold a certificate key"
  fi
}

join_cluster() {
  if [ -f "$KUBE/kubelet.conf" ]; then
    return 0
  fi
  wait_join_info
  write_join_config
  kubeadm join --config "$STATE/kubeadm-join.yaml" >"$STATE/kubeadm-join.log" 2>&1 ||
    fail 45 "kubeadm join $API_ENDPOINT:$API_PORT failed: $(tail_of "$STATE/kubeadm-join.log")"
  if [ "$FLOTILLA_ROLE" = master ]; then
    hosts_entry 127.0.0.1
  fi
}

activate() {
  PHASE=activate
  local summary
  write_azure_json
  if [ "$FLOTILLA_ROLE" = master ] && [ "${VM_NAME##*_}" = 0 ]; then
    init_first_master
    summary="first master: control plane at $API_ENDPOINT:$API_PORT, CNI installed, join information and admin kubeconfig published to Key Vault"
  elif [ "$FLOTILLA_ROLE" = master ]; then
    join_cluster
    summary="joined $API_ENDPOINT:$API_PORT as a control-plane node"
  else
    join_cluster
    summary="joined $API_ENDPOINT:$API_PORT as a worker of pool $FLOTILLA_POOL"
  fi
  systemctl is-active --quiet kubelet || fail 46 "kubelet is not running after the join"
  log "activate: $summary"
}

main() {
  local mode=${1:-run}
  case "$mode" in
    run | publish) ;;
    *) fail 10 "usage: init.sh [run|publish] (got '$mode')" ;;
  esac
  case "$FLOTILLA_ROLE" in
    master | worker) ;;
    *) fail 10 "unknown role '$FLOTILLA_ROLE' in the rendering" ;;
  esac
  mkdir -p "$STATE"
  chmod 700 "$STATE"
  rm -rf "$WORK"
  mkdir -m 700 "$WORK"
  trap 'rm -rf "$WORK"' EXIT
  exec 9>"$STATE/lock"
  flock -w 900 9 || fail 10 "another flotilla bootstrap holds $STATE/lock"
  log "job $FLOTILLA_JOB, $FLOTILLA_ROLE${FLOTILLA_POOL:+ of pool $FLOTILLA_POOL}, $IDENTITY_MODE: $mode"
  identity
  if [ "$mode" = publish ]; then
    PHASE=publish
    if [ "$FLOTILLA_ROLE" != master ] || [ ! -f "$ADMIN_CONF" ]; then
      fail 10 "publish runs on the first master only"
    fi
    CERT_KEY=$(head -n 1 "$STATE/certificate-key")
    publish
    log "publish: join token, CA hash and certificate key refreshed in Key Vault"
    return 0
  fi
  install
  activate
}

main "$@"
