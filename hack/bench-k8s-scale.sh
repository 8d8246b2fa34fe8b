#!/usr/bin/env bash
# What one podspawn host pays to observe many sessions on Kubernetes,
# measured with podspawn's own code (hack/k8s-scale, calling observed/k8sobs)
# against 1,000 and then 5,000 session Pods:
#   - a pass's list (k8sobs.Lister.List): wall time (median of the passes),
#     bytes on the wire and decoded, bytes allocated; and one key's list
#     (ListKey, what every SSH connection does);
#   - the daemon's watch (k8sobs.Watcher, shared informers): time until
#     every Pod was delivered, and the Go heap it holds once synced;
#   - the resident memory of the API server and etcd.
#
# It starts a control plane of its own: etcd and kube-apiserver (the cached
# binary of hack/k8s-build.sh), on ports and in a state directory of their own, next to and apart from the shared test
# cluster of hack/k8s-up.sh. No kubelet, containerd, CNI or iptables: the
# Pods are bound (spec.nodeName) to a node that does not exist, so they stay
# Pending and cost only the API server and etcd, which is what is measured.
# Everything is removed on exit, also when interrupted.
#
# etcd is built from its Go module (hack/k8s-scale/etcd, a few minutes
# once, then cached in /var/cache/podspawn-k8s/etcd-VERSION): Debian's 3.4.23
# is too old for the API server to serve consistent lists from its watch
# cache, so it would read every list from etcd, as no current cluster does.
#
#   bench-k8s-scale.sh [COUNT...]   Pod counts, ascending (default 1000 5000)
#
# Env: PODSPAWN_K8S_SCALE_STATE  state directory (/var/lib/podspawn-k8s-scale)
#      PODSPAWN_K8S_SCALE_PORT   first of three ports: API server, etcd
#                                client, etcd peer (26443)
#      PODSPAWN_K8S_SCALE_PASSES list passes per count (7)
#      PODSPAWN_K8S_SCALE_ETCD   an etcd binary to use instead (/usr/bin/etcd:
#                                Debian's, as the shared test cluster runs)
set -o errexit -o nounset -o pipefail
SCRIPT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=hack/k8s/lib.sh
source "${SCRIPT_ROOT}/hack/k8s/lib.sh"

STATE="${PODSPAWN_K8S_SCALE_STATE:-/var/lib/podspawn-k8s-scale}"
API_PORT="${PODSPAWN_K8S_SCALE_PORT:-26443}"
ETCD_PORT=$((API_PORT + 1))
ETCD_PEER_PORT=$((API_PORT + 2))
PASSES="${PODSPAWN_K8S_SCALE_PASSES:-7}"
COUNTS=("$@")
((${#COUNTS[@]} > 0)) || COUNTS=(1000 5000)
NAMESPACE=podspawn
# no kubelet registers this node: Pods bound to it stay Pending
NODE=podspawn-scale-no-kubelet
KUBECONFIG="${STATE}/kubeconfig"
export KUBECONFIG

die() {
  echo "bench-k8s-scale: $*" >&2
  exit 1
}
[[ ${EUID} -eq 0 ]] || die "run as root (it writes ${STATE})"
case "${STATE}" in
  /var/lib/?*) ;;
  *) die "PODSPAWN_K8S_SCALE_STATE must be a directory under /var/lib, not '${STATE}'" ;;
esac
for c in "${COUNTS[@]}"; do
  [[ "${c}" =~ ^[1-9][0-9]*$ ]] || die "Pod count '${c}' is not a positive number"
done
[[ "${PASSES}" =~ ^[1-9][0-9]*$ ]] || die "PODSPAWN_K8S_SCALE_PASSES '${PASSES}' is not a positive number"
for b in kube-apiserver kubectl; do
  [[ -x "${K8S_BIN}/${b}" ]] || die "missing ${K8S_BIN}/${b}; build it with hack/k8s-build.sh"
done
k8s_ensure_packages bench-k8s-scale openssl curl
ETCD="${PODSPAWN_K8S_SCALE_ETCD:-}"
if [[ -z "${ETCD}" ]]; then
  etcd_module="${SCRIPT_ROOT}/hack/k8s-scale/etcd"
  etcd_version="$(awk '$1 == "require" && $2 == "go.etcd.io/etcd/server/v3" { print $3 }' "${etcd_module}/go.mod")"
  [[ -n "${etcd_version}" ]] || die "no go.etcd.io/etcd/server/v3 requirement in ${etcd_module}/go.mod"
  ETCD="${K8S_CACHE}/etcd-${etcd_version}/etcd"
  if [[ ! -x "${ETCD}" ]]; then
    echo "bench-k8s-scale: building etcd ${etcd_version} into ${ETCD} (once)" >&2
    mkdir -p "${ETCD%/*}"
    (cd "${etcd_module}" && go build -trimpath -ldflags "-s -w" -o "${ETCD}.new" .)
    mv "${ETCD}.new" "${ETCD}"
  fi
fi
[[ -x "${ETCD}" ]] || die "PODSPAWN_K8S_SCALE_ETCD '${ETCD}' is not an executable"

# alive NAME: the process this script started as NAME still runs (the pid
# file holds "PID STARTTIME", so a recycled pid is not ours).
alive() {
  local pid start
  read -r pid start <"${STATE}/$1.pid" 2>/dev/null || return 1
  [[ -n "${pid}" && "$(k8s_starttime "${pid}")" == "${start}" ]]
}
# stop NAME: SIGTERM, SIGKILL after 10 s.
stop() {
  local pid i
  if alive "$1"; then
    read -r pid _ <"${STATE}/$1.pid"
    kill "${pid}" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      alive "$1" || return 0
      sleep 0.1
    done
    kill -9 "${pid}" 2>/dev/null || true
    # gone before its files are removed
    while alive "$1"; do sleep 0.1; done
  fi
}
teardown() {
  local rc=$?
  trap - EXIT INT TERM
  # the servers' logs explain a failure, not an interruption
  if ((rc != 0 && rc != 130 && rc != 143)) && [[ -d "${STATE}/log" ]]; then
    for f in "${STATE}"/log/*.log; do
      echo "--- last lines of ${f##*/}" >&2
      tail -n 15 "${f}" >&2
    done
  fi
  stop kube-apiserver
  stop etcd
  rm -rf "${STATE}"
  exit "${rc}"
}

# A run killed with SIGKILL could not tear down: clear what it left.
if [[ -d "${STATE}" ]]; then
  echo "bench-k8s-scale: clearing what an earlier run left in ${STATE}" >&2
  stop kube-apiserver
  stop etcd
  rm -rf "${STATE}"
fi
for port in "${API_PORT}" "${ETCD_PORT}" "${ETCD_PEER_PORT}"; do
  if ss -Hltn "sport = :${port}" | grep -q .; then
    die "port ${port} is taken; choose others with PODSPAWN_K8S_SCALE_PORT"
  fi
done
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
mkdir -p "${STATE}/log" "${STATE}/pki" "${STATE}/etcd"

# start NAME CMD...: in a session of its own, so this script alone decides
# when it stops.
start() {
  local n=$1
  shift
  setsid "$@" >>"${STATE}/log/${n}.log" 2>&1 </dev/null &
  echo "$! $(k8s_starttime $!)" >"${STATE}/${n}.pid"
}
# waitfor NAME SECONDS CMD...: poll CMD until it succeeds, while the
# process started as NAME runs.
waitfor() {
  local what=$1 end=$((SECONDS + $2))
  shift 2
  until "$@" >/dev/null 2>&1; do
    alive "${what}" || die "${what} exited"
    ((SECONDS < end)) || die "timed out after $2 s waiting for ${what}"
    sleep 0.1
  done
}
# pid NAME: the pid of the process this script started as NAME.
pid() {
  local p
  read -r p _ <"${STATE}/$1.pid"
  echo "${p}"
}
# rss NAME: its resident memory in MiB.
rss() { awk '$1 == "VmRSS:" { printf "%.0f", $2 / 1024 }' "/proc/$(pid "$1")/status"; }

# ---------- PKI: a CA, the API server's certificate, an admin client, the service account key ----------
(
  cd "${STATE}/pki"
  key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null; }
  cert() { # NAME SUBJECT EXT
    key "$1"
    openssl req -new -key "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" -days 2 -extfile <(echo "$3") 2>/dev/null
  }
  key ca
  openssl req -x509 -new -key ca.key -out ca.crt -days 2 -subj /CN=podspawn-k8s-scale-ca 2>/dev/null
  cert apiserver /CN=kube-apiserver $'extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1'
  cert admin /O=system:masters/CN=podspawn-k8s-scale-admin 'extendedKeyUsage=clientAuth'
  key sa
  openssl pkey -in sa.key -pubout -out sa.pub 2>/dev/null
)
b64() { base64 -w0 <"$1"; }
umask 077
cat >"${KUBECONFIG}" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: scale
  cluster: {certificate-authority-data: $(b64 "${STATE}/pki/ca.crt"), server: "https://127.0.0.1:${API_PORT}"}
users:
- name: admin
  user: {client-certificate-data: $(b64 "${STATE}/pki/admin.crt"), client-key-data: $(b64 "${STATE}/pki/admin.key")}
contexts:
- name: scale
  context: {cluster: scale, user: admin, namespace: ${NAMESPACE}}
current-context: scale
EOF
umask 022

# ---------- etcd + kube-apiserver ----------
start etcd "${ETCD}" --name scale --data-dir "${STATE}/etcd" \
  --listen-client-urls "http://127.0.0.1:${ETCD_PORT}" --advertise-client-urls "http://127.0.0.1:${ETCD_PORT}" \
  --listen-peer-urls "http://127.0.0.1:${ETCD_PEER_PORT}" --initial-advertise-peer-urls "http://127.0.0.1:${ETCD_PEER_PORT}" \
  --initial-cluster "scale=http://127.0.0.1:${ETCD_PEER_PORT}" --logger zap --log-outputs stderr
waitfor etcd 30 curl -fsS "http://127.0.0.1:${ETCD_PORT}/health"
start kube-apiserver "${K8S_BIN}/kube-apiserver" --etcd-servers="http://127.0.0.1:${ETCD_PORT}" \
  --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="${API_PORT}" --cert-dir="${STATE}/pki" \
  --tls-cert-file="${STATE}/pki/apiserver.crt" --tls-private-key-file="${STATE}/pki/apiserver.key" \
  --client-ca-file="${STATE}/pki/ca.crt" --endpoint-reconciler-type=none \
  --service-account-key-file="${STATE}/pki/sa.pub" --service-account-signing-key-file="${STATE}/pki/sa.key" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local --service-cluster-ip-range=10.0.0.0/24 \
  --authorization-mode=RBAC --profiling=false --v=1
waitfor kube-apiserver 120 "${K8S_BIN}/kubectl" get --raw /readyz
# Without a controller-manager nobody creates the default ServiceAccount,
# and Pod admission needs it.
"${K8S_BIN}/kubectl" create namespace "${NAMESPACE}" >/dev/null
"${K8S_BIN}/kubectl" create serviceaccount default -n "${NAMESPACE}" >/dev/null

bin="${STATE}/k8s-scale"
(cd "${SCRIPT_ROOT}" && go build -o "${bin}" ./hack/k8s-scale)
instance="scale-$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')"
scale() {
  "${bin}" -kubeconfig "${KUBECONFIG}" -n "${NAMESPACE}" -instance "${instance}" \
    -apiserver-pid "$(pid kube-apiserver)" -etcd-pid "$(pid etcd)" "$@"
}

lists="from the API server's watch cache"
if grep -q "RequestWatchProgress feature is not supported" "${STATE}/log/kube-apiserver.log"; then
  lists="from etcd (this etcd lacks RequestWatchProgress)"
fi
echo "bench-k8s-scale: kubernetes ${K8S_VERSION}, $("${ETCD}" --version | head -n1), $(nproc) cores (shared: expect noise)," \
  "instance ${instance}, ${PASSES} list passes per count; consistent lists are served ${lists}"
for n in "${COUNTS[@]}"; do
  scale -pods "${n}" -node "${NODE}" create
  scale -pods "${n}" -passes "${PASSES}" list
  scale -pods "${n}" watch
  echo "servers with ${n} pods: kube-apiserver $(rss kube-apiserver) MiB resident, etcd $(rss etcd) MiB resident," \
    "etcd data $(du -sm "${STATE}/etcd" | cut -f1) MiB"
done
