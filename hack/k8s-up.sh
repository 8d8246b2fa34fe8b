#!/usr/bin/env bash
# Start a throw-away single-node Kubernetes cluster on this machine, offline,
# for podspawn's Kubernetes tests:
#   etcd (Debian etcd-server), kube-apiserver, kubelet, kube-controller-manager
#   and kube-scheduler (hack/k8s-build.sh), a containerd of its own (Debian
#   containerd + runc; never Docker's), the CNI bridge plugin on a bridge of
#   its own (podspawn-k8s0; never docker0), and a loopback image registry
#   (Debian docker-registry, plain http) that containerd pulls from.
# Then the podspawn namespace, the Role, RoleBinding and ServiceAccount of
# hack/k8s/podspawn-rbac.yaml, and a kubeconfig for that ServiceAccount.
#
# Idempotent: a running healthy cluster is left as it is (the manifest is
# applied again); the leftovers of a killed run are cleared first
# (hack/k8s-down.sh). Paths and ports: hack/k8s/lib.sh.
#
# Env: PODSPAWN_K8S_IMAGES="a.tar b.tar"  extra docker-archive/OCI tars to import
#      PODSPAWN_K8S_DOCKER_IMAGES="..."   images copied from the host's Docker if it
#                                         has them (default podspawn-test:busybox)
#      PODSPAWN_K8S_CONTROLLERS=0         no controller-manager and scheduler
set -o errexit -o nounset -o pipefail
SCRIPT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=hack/k8s/lib.sh
source "${SCRIPT_ROOT}/hack/k8s/lib.sh"
export PATH="${K8S_BIN}:${PATH}:/usr/local/sbin:/usr/sbin:/sbin"
CONTROLLERS="${PODSPAWN_K8S_CONTROLLERS:-1}"

t0="$(date +%s%N)"
say() {
  local ms=$((($(date +%s%N) - t0) / 1000000))
  printf 'k8s-up [%3d.%03ds] %s\n' $((ms / 1000)) $((ms % 1000)) "$*" >&2
}
die() {
  echo "k8s-up: $*" >&2
  exit 1
}

# start NAME CMD...: run in a session of its own (it outlives this script),
# log to ${K8S_LOG}/NAME.log, "pid starttime" in ${K8S_RUN}/NAME.pid.
# 9>&-: the daemon must not inherit the lock's descriptor, or it holds the
# lock as long as it runs and the next k8s-up.sh or k8s-down.sh waits forever.
start() {
  local n=$1
  shift
  setsid "$@" >>"${K8S_LOG}/${n}.log" 2>&1 </dev/null 9>&- &
  echo "$! $(k8s_starttime $!)" >"${K8S_RUN}/${n}.pid"
}
# waitfor WHAT SECONDS CMD...: poll CMD until it succeeds.
waitfor() {
  local what=$1 n=$(($2 * 10)) i
  shift 2
  for ((i = 0; i < n; i++)); do
    if "$@" >/dev/null 2>&1; then
      say "${what} ready"
      return 0
    fi
    sleep 0.1
  done
  die "timed out after $((n / 10))s waiting for ${what}; logs in ${K8S_LOG}/"
}

# ---------- prerequisites ----------
k8s_ensure_packages k8s-up etcd-server containerd runc containernetworking-plugins docker-registry \
  iptables iproute2 openssl jq curl util-linux
bash "${SCRIPT_ROOT}/hack/k8s-build.sh" >/dev/null
for b in kube-apiserver kubelet kube-controller-manager kube-scheduler kubectl; do
  [[ -x "${K8S_BIN}/${b}" ]] || die "missing ${K8S_BIN}/${b} (hack/k8s-build.sh did not build it)"
done
[[ -x "${K8S_CNI_BIN}/bridge" && -x "${K8S_CNI_BIN}/host-local" ]] || die "missing CNI plugins in ${K8S_CNI_BIN} (package containernetworking-plugins)"
export KUBECONFIG="${K8S_ADMIN_KUBECONFIG}"

# One up or down at a time.
mkdir -p "$(dirname "${K8S_LOCK}")"
exec 9>"${K8S_LOCK}"
flock -w 300 9 || die "waited 5 minutes for ${K8S_LOCK}; another k8s-up.sh or k8s-down.sh holds it (fuser -v ${K8S_LOCK})"

# ---------- already up? ----------
alive=()
for d in "${K8S_DAEMONS[@]}"; do
  if k8s_alive "${d}"; then alive+=("${d}"); fi
done
nodeready() { [[ "$(kubectl get node "${K8S_NODE}" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]; }
want=${#K8S_DAEMONS[@]}
[[ "${CONTROLLERS}" == 1 ]] || want=$((want - 2))
if ((${#alive[@]} == want)) && kubectl get --raw /readyz >/dev/null 2>&1 && nodeready; then
  say "already up"
  fresh=0
else
  fresh=1
  if ((${#alive[@]} > 0)) || [[ -d "${K8S_RUN}" || -d "${K8S_STATE}/etc" ]]; then
    say "clearing what an earlier run left${alive[*]:+ (still running: ${alive[*]})}"
    flock -u 9
    bash "${SCRIPT_ROOT}/hack/k8s-down.sh" >/dev/null
    flock 9
  fi
fi

if ((fresh)); then
  # The bridge's subnet must be free: another interface in it would take our routes.
  if ip -4 -o addr show | awk -v b="${K8S_BRIDGE}" '$2 != b { print $4 }' | grep -q "^${K8S_POD_CIDR%.*}\."; then
    die "another interface already has an address in ${K8S_POD_CIDR}: $(ip -4 -o addr show | grep "${K8S_POD_CIDR%.*}\." | awk '{ print $2, $4 }')"
  fi
  for port in "${K8S_ETCD_PORT}" "${K8S_ETCD_PEER_PORT}" "${K8S_API_PORT}" "${K8S_REGISTRY##*:}" "${K8S_KCM_PORT}" "${K8S_SCHED_PORT}" "${K8S_KUBELET_HEALTHZ_PORT}"; do
    if ss -Hltn "sport = :${port}" | grep -q .; then
      die "port ${port} is taken: $(ss -Hltnp "sport = :${port}" | awk '{ print $4, $6 }' | head -n1)"
    fi
  done

  mkdir -p "${K8S_RUN}" "${K8S_LOG}" "${K8S_PKI}" "${K8S_ETC}/cni" "${K8S_ETC}/certs.d/${K8S_REGISTRY}" \
    "${K8S_STATE}/etcd" "${K8S_STATE}/containerd" "${K8S_STATE}/kubelet" "${K8S_STATE}/cni-ipam" \
    "${K8S_STATE}/pod-logs" "${K8S_STATE}/registry"

  # What the kubelet may change on the host that is not under our own
  # directories: k8s-down.sh restores or removes only what was not there.
  {
    for d in /var/lib/kubelet /var/log/containers /var/log/pods /var/lib/cni /sys/fs/cgroup/*/kubepods "${K8S_HOSTPATH_PV}"; do
      if [[ -e "${d}" ]]; then echo "path ${d}"; fi
    done
    for ipt in iptables ip6tables; do
      for t in filter nat mangle; do
        "${ipt}" -w -t "${t}" -S 2>/dev/null | awk -v i="${ipt}" -v t="${t}" '$1 == "-N" && $2 ~ /^KUBE-/ { print "chain", i, t, $2 }' || true
      done
    done
    # the kubelet sets these (protectKernelDefaults: false); k8s-down.sh puts them back
    for s in vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes; do
      echo "sysctl ${s} $(sysctl -n "${s}")"
    done
  } >"${K8S_RUN}/preexisting"

  # ---------- PKI (EC keys: fast) ----------
  (
    cd "${K8S_PKI}"
    key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null; }
    cert() { # NAME SUBJECT EXTFILE
      key "$1"
      openssl req -new -key "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" -days 3650 -extfile "$3" 2>/dev/null
      rm "$1.csr"
    }
    key ca
    openssl req -x509 -new -key ca.key -out ca.crt -days 3650 -subj /CN=podspawn-k8s-ca 2>/dev/null
    echo 'extendedKeyUsage=clientAuth' >client.ext
    svc_ip="$(awk -F. '{ print $1 "." $2 "." $3 "." $4 + 1 }' <<<"${K8S_SVC_CIDR%/*}")"
    printf 'extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:%s\n' "${svc_ip}" >apiserver.ext
    printf 'extendedKeyUsage=serverAuth\nsubjectAltName=DNS:%s,DNS:localhost,IP:127.0.0.1,IP:%s\n' "${K8S_NODE}" "${K8S_NODE_IP}" >kubelet-serving.ext
    cert apiserver /CN=kube-apiserver apiserver.ext
    cert apiserver-kubelet-client /O=system:masters/CN=kube-apiserver-kubelet-client client.ext
    cert admin /O=system:masters/CN=podspawn-k8s-admin client.ext
    cert kubelet "/O=system:nodes/CN=system:node:${K8S_NODE}" client.ext
    cert kubelet-serving "/CN=${K8S_NODE}" kubelet-serving.ext
    cert controller-manager /CN=system:kube-controller-manager client.ext
    cert scheduler /CN=system:kube-scheduler client.ext
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
  say "pki generated"

  b64() { base64 -w0 <"$1"; }
  kubeconfig() { # FILE CERTNAME: a self-contained kubeconfig for a client certificate
    cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: podspawn-k8s
  cluster: {certificate-authority-data: $(b64 "${K8S_PKI}/ca.crt"), server: "https://127.0.0.1:${K8S_API_PORT}"}
users:
- name: $2
  user: {client-certificate-data: $(b64 "${K8S_PKI}/$2.crt"), client-key-data: $(b64 "${K8S_PKI}/$2.key")}
contexts:
- name: podspawn-k8s
  context: {cluster: podspawn-k8s, user: $2}
current-context: podspawn-k8s
EOF
    chmod 600 "$1"
  }
  kubeconfig "${K8S_ADMIN_KUBECONFIG}" admin
  kubeconfig "${K8S_ETC}/kubelet.kubeconfig" kubelet
  kubeconfig "${K8S_ETC}/controller-manager.kubeconfig" controller-manager
  kubeconfig "${K8S_ETC}/scheduler.kubeconfig" scheduler

  # ---------- etcd ----------
  start etcd etcd --name podspawn-k8s --data-dir "${K8S_STATE}/etcd" \
    --listen-client-urls "http://127.0.0.1:${K8S_ETCD_PORT}" --advertise-client-urls "http://127.0.0.1:${K8S_ETCD_PORT}" \
    --listen-peer-urls "http://127.0.0.1:${K8S_ETCD_PEER_PORT}" --initial-advertise-peer-urls "http://127.0.0.1:${K8S_ETCD_PEER_PORT}" \
    --initial-cluster "podspawn-k8s=http://127.0.0.1:${K8S_ETCD_PEER_PORT}" --logger zap --log-outputs stderr

  # ---------- containerd: an instance of our own; Docker's is left alone ----------
  cat >"${K8S_ETC}/containerd.toml" <<EOF
version = 2
root = "${K8S_STATE}/containerd"
state = "${K8S_RUN}/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "${K8S_CONTAINERD_SOCK}"
[ttrpc]
  address = "${K8S_CONTAINERD_SOCK}.ttrpc"
[debug]
  address = "${K8S_RUN}/containerd-debug.sock"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "${K8S_STATE}/containerd-opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "k8s.test/pause:1"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  # no CAP_SYS_RESOURCE here: oom_score_adj may not go below our own (the kubelet asks -998 for sandboxes)
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "${K8S_RUN}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "${K8S_CNI_BIN}"
    conf_dir = "${K8S_ETC}/cni"
    max_conf_num = 1
  # pulls from the loopback registry over plain http (certs.d/${K8S_REGISTRY}/hosts.toml)
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "${K8S_ETC}/certs.d"
EOF
  cat >"${K8S_ETC}/certs.d/${K8S_REGISTRY}/hosts.toml" <<EOF
server = "http://${K8S_REGISTRY}"
[host."http://${K8S_REGISTRY}"]
  capabilities = ["pull", "resolve"]
EOF
  cat >"${K8S_ETC}/cni/10-podspawn-k8s.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "podspawn-k8s", "plugins": [
  {"type": "bridge", "bridge": "${K8S_BRIDGE}", "isGateway": false, "ipMasq": false, "hairpinMode": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "${K8S_POD_CIDR}"}]], "dataDir": "${K8S_STATE}/cni-ipam"}}]}
EOF
  start containerd containerd --config "${K8S_ETC}/containerd.toml"

  # ---------- registry ----------
  cat >"${K8S_ETC}/registry.yml" <<EOF
version: 0.1
log: {level: warn, fields: {service: podspawn-k8s-registry}}
storage:
  filesystem: {rootdirectory: ${K8S_STATE}/registry}
  delete: {enabled: true}
http:
  addr: ${K8S_REGISTRY}
  headers: {X-Content-Type-Options: [nosniff]}
EOF
  start registry docker-registry serve "${K8S_ETC}/registry.yml"

  # ---------- images: no registry needed for these ----------
  waitfor containerd 30 ctr --address "${K8S_CONTAINERD_SOCK}" version
  images=("${K8S_IMAGES}/pause.tar" "${K8S_IMAGES}/busybox.tar")
  for t in "${K8S_EXTRA_IMAGES}"/*.tar; do
    if [[ -f "${t}" ]]; then images+=("${t}"); fi
  done
  read -r -a extra <<<"${PODSPAWN_K8S_IMAGES:-}"
  images+=("${extra[@]}")
  # The host Docker's images the tests use, saved once per image ID.
  read -r -a docker_images <<<"${PODSPAWN_K8S_DOCKER_IMAGES-podspawn-test:busybox}"
  for img in "${docker_images[@]}"; do
    id="$(docker image inspect -f '{{.Id}}' "${img}" 2>/dev/null)" || {
      say "no Docker image ${img} to copy (hack/build-test-image.sh builds podspawn-test:busybox)"
      continue
    }
    t="${K8S_IMAGES}/docker/$(tr -c 'A-Za-z0-9._\n-' _ <<<"${img}").tar"
    if [[ "$(cat "${t}.id" 2>/dev/null)" != "${id}" ]]; then
      mkdir -p "${K8S_IMAGES}/docker"
      docker save -o "${t}.new" "${img}"
      mv "${t}.new" "${t}"
      echo "${id}" >"${t}.id"
    fi
    images+=("${t}")
  done
  for t in "${images[@]}"; do
    k8s_ctr images import "${t}" >/dev/null || die "importing ${t} into containerd failed"
  done
  say "images imported: $(k8s_ctr images ls -q | grep -v '^sha256:' | tr '\n' ' ')"

  # ---------- kube-apiserver ----------
  waitfor etcd 30 curl -fsS "http://127.0.0.1:${K8S_ETCD_PORT}/health"
  start kube-apiserver kube-apiserver \
    --etcd-servers="http://127.0.0.1:${K8S_ETCD_PORT}" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="${K8S_API_PORT}" \
    --tls-cert-file="${K8S_PKI}/apiserver.crt" --tls-private-key-file="${K8S_PKI}/apiserver.key" \
    --client-ca-file="${K8S_PKI}/ca.crt" \
    --kubelet-client-certificate="${K8S_PKI}/apiserver-kubelet-client.crt" --kubelet-client-key="${K8S_PKI}/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="${K8S_PKI}/ca.crt" --kubelet-preferred-address-types=InternalIP \
    --endpoint-reconciler-type=none \
    --service-account-key-file="${K8S_PKI}/sa.pub" --service-account-signing-key-file="${K8S_PKI}/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range="${K8S_SVC_CIDR}" \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --allow-privileged=true --profiling=false --v=1

  # ---------- pod bridge, which also carries the node IP ----------
  if ! ip link show "${K8S_BRIDGE}" >/dev/null 2>&1; then
    ip link add "${K8S_BRIDGE}" type bridge
    ip addr add "${K8S_NODE_IP}/${K8S_POD_CIDR#*/}" dev "${K8S_BRIDGE}"
    ip link set "${K8S_BRIDGE}" up
  fi
  waitfor registry 30 curl -fsS "http://${K8S_REGISTRY}/v2/"
  waitfor kube-apiserver 120 kubectl get --raw /readyz

  # ---------- kubelet ----------
  cat >"${K8S_ETC}/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: ${K8S_NODE_IP}
port: ${K8S_KUBELET_PORT}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: ${K8S_KUBELET_HEALTHZ_PORT}
tlsCertFile: ${K8S_PKI}/kubelet-serving.crt
tlsPrivateKeyFile: ${K8S_PKI}/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: ${K8S_PKI}/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://${K8S_CONTAINERD_SOCK}
# this machine has cgroup v1
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
resolvConf: /etc/resolv.conf
podCIDR: ${K8S_POD_CIDR}
maxPods: 100
serializeImagePulls: false
# never collect images: the test images were imported, not pulled
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "50Mi", nodefs.available: "1%", nodefs.inodesFree: "1%", imagefs.available: "1%"}
nodeStatusUpdateFrequency: 10s
syncFrequency: 10s
fileCheckFrequency: 10s
shutdownGracePeriod: 0s
podLogsDir: ${K8S_STATE}/pod-logs
EOF
  start kubelet kubelet --config="${K8S_ETC}/kubelet.yaml" --kubeconfig="${K8S_ETC}/kubelet.kubeconfig" \
    --root-dir="${K8S_STATE}/kubelet" --cert-dir="${K8S_PKI}" --hostname-override="${K8S_NODE}" --node-ip="${K8S_NODE_IP}" --v=1

  # ---------- controller-manager + scheduler: namespaces, tokens, GC, scheduling ----------
  if [[ "${CONTROLLERS}" == 1 ]]; then
    start kube-controller-manager kube-controller-manager --kubeconfig="${K8S_ETC}/controller-manager.kubeconfig" \
      --authentication-kubeconfig="${K8S_ETC}/controller-manager.kubeconfig" --authorization-kubeconfig="${K8S_ETC}/controller-manager.kubeconfig" \
      --bind-address=127.0.0.1 --secure-port="${K8S_KCM_PORT}" --leader-elect=false --use-service-account-credentials=true \
      --service-account-private-key-file="${K8S_PKI}/sa.key" --root-ca-file="${K8S_PKI}/ca.crt" \
      --cluster-signing-cert-file="${K8S_PKI}/ca.crt" --cluster-signing-key-file="${K8S_PKI}/ca.key" \
      --enable-hostpath-provisioner --v=1
    start kube-scheduler kube-scheduler --kubeconfig="${K8S_ETC}/scheduler.kubeconfig" \
      --authentication-kubeconfig="${K8S_ETC}/scheduler.kubeconfig" --authorization-kubeconfig="${K8S_ETC}/scheduler.kubeconfig" \
      --bind-address=127.0.0.1 --secure-port="${K8S_SCHED_PORT}" --leader-elect=false --v=1
  fi
  waitfor "node ${K8S_NODE}" 120 nodeready
fi

# ---------- podspawn's namespace, Role, RoleBinding, ServiceAccount ----------
kubectl apply -f "${SCRIPT_ROOT}/hack/k8s/podspawn-rbac.yaml" >/dev/null
# PersistentVolumeClaims of this StorageClass get a directory under
# ${K8S_HOSTPATH_PV} from the controller-manager's hostpath provisioner
# (single node only: a test provisioner), removed with the claim.
if [[ "${CONTROLLERS}" == 1 ]]; then
  kubectl apply -f - >/dev/null <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: ${K8S_STORAGE_CLASS}
provisioner: kubernetes.io/host-path
reclaimPolicy: Delete
volumeBindingMode: Immediate
EOF
fi
if [[ "${CONTROLLERS}" != 1 ]]; then
  # what the controller-manager would do for the namespace
  kubectl create configmap kube-root-ca.crt -n "${K8S_NAMESPACE}" --from-file=ca.crt="${K8S_PKI}/ca.crt" >/dev/null 2>&1 || true
fi
# A long-lived token for the ServiceAccount (the cluster is throw-away):
# the controller-manager fills the Secret; without it, a bound token of a day.
if [[ "${CONTROLLERS}" == 1 ]]; then
  kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Secret
type: kubernetes.io/service-account-token
metadata:
  name: podspawn-token
  namespace: ${K8S_NAMESPACE}
  annotations: {kubernetes.io/service-account.name: podspawn}
EOF
  tokenready() { [[ -n "$(kubectl get secret podspawn-token -n "${K8S_NAMESPACE}" -o jsonpath='{.data.token}')" ]]; }
  waitfor "podspawn token" 30 tokenready
  token="$(kubectl get secret podspawn-token -n "${K8S_NAMESPACE}" -o jsonpath='{.data.token}' | base64 -d)"
else
  token="$(kubectl create token podspawn -n "${K8S_NAMESPACE}" --duration=24h)"
fi
umask 077
cat >"${K8S_PODSPAWN_KUBECONFIG}.new" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: podspawn-k8s
  cluster: {certificate-authority-data: $(base64 -w0 <"${K8S_PKI}/ca.crt"), server: "https://127.0.0.1:${K8S_API_PORT}"}
users:
- name: podspawn
  user: {token: ${token}}
contexts:
- name: podspawn-k8s
  context: {cluster: podspawn-k8s, user: podspawn, namespace: ${K8S_NAMESPACE}}
current-context: podspawn-k8s
EOF
mv "${K8S_PODSPAWN_KUBECONFIG}.new" "${K8S_PODSPAWN_KUBECONFIG}"
umask 022
# least privilege, checked: pods in its namespace yes, elsewhere and cluster-wide no
can() { kubectl --kubeconfig="${K8S_PODSPAWN_KUBECONFIG}" auth can-i "$@" 2>/dev/null; }
can create pods/exec -n "${K8S_NAMESPACE}" >/dev/null || die "the podspawn ServiceAccount cannot exec in ${K8S_NAMESPACE}"
if can create pods -n default >/dev/null || can list nodes >/dev/null; then
  die "the podspawn ServiceAccount has more rights than hack/k8s/podspawn-rbac.yaml gives"
fi
say "namespace ${K8S_NAMESPACE}, podspawn ServiceAccount and Role ready"

cat <<EOF
k8s-up: cluster up in $((($(date +%s%N) - t0) / 1000000)) ms (kubernetes ${K8S_VERSION})
  admin kubeconfig:    ${K8S_ADMIN_KUBECONFIG}
  podspawn kubeconfig: ${K8S_PODSPAWN_KUBECONFIG} (ServiceAccount podspawn, namespace ${K8S_NAMESPACE})
  image registry:      ${K8S_REGISTRY} (plain http; containerd pulls from it)
  binaries:            ${K8S_BIN}
  logs:                ${K8S_LOG}
  stop with:           ${SCRIPT_ROOT}/hack/k8s-down.sh
EOF
