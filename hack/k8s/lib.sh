# shellcheck shell=bash disable=SC2034 # the settings are used by the scripts that source this
# Settings shared by hack/k8s-build.sh, k8s-up.sh, k8s-down.sh and k8s-smoke.sh:
# where the test cluster's binaries, images, state and sockets live, and its
# ports. Sourced, never run. Every path is outside the checkout, so several
# worktrees share one build and one cluster (one cluster at a time per machine).
#
# Overridable from the environment:
#   PODSPAWN_K8S_CACHE  built binaries and images, kept across runs (/var/cache/podspawn-k8s)
#   PODSPAWN_K8S_STATE  the running cluster's state; k8s-down.sh removes it (/var/lib/podspawn-k8s)

K8S_MODULE_DIR="${SCRIPT_ROOT}/hack/k8s"
# The Kubernetes version is the one hack/k8s/go.mod pins (k8s-build.sh --pin changes it).
K8S_VERSION="$(awk '$1 == "k8s.io/kubernetes" { print $2; exit } $1 == "require" && $2 == "k8s.io/kubernetes" { print $3; exit }' "${K8S_MODULE_DIR}/go.mod")"
if [[ -z "${K8S_VERSION}" ]]; then
  echo "k8s: no k8s.io/kubernetes requirement in ${K8S_MODULE_DIR}/go.mod" >&2
  exit 1
fi

K8S_CACHE="${PODSPAWN_K8S_CACHE:-/var/cache/podspawn-k8s}"
K8S_BIN="${K8S_CACHE}/${K8S_VERSION}/bin"
# pause.tar and busybox.tar (k8s-build.sh); any other *.tar dropped into
# images/extra/ is imported by k8s-up.sh too.
K8S_IMAGES="${K8S_CACHE}/images"
K8S_EXTRA_IMAGES="${K8S_IMAGES}/extra"

K8S_STATE="${PODSPAWN_K8S_STATE:-/var/lib/podspawn-k8s}"
# The StorageClass of the test cluster, and where its provisioner (the
# controller-manager's hostpath provisioner, a fixed path) makes volumes.
K8S_STORAGE_CLASS=podspawn-hostpath
K8S_HOSTPATH_PV=/tmp/hostpath-provisioner
K8S_RUN=/run/podspawn-k8s
# held by k8s-up.sh and k8s-down.sh: one of them at a time
K8S_LOCK=/run/lock/podspawn-k8s.lock
K8S_LOG="${K8S_STATE}/log"
K8S_PKI="${K8S_STATE}/pki"
K8S_ETC="${K8S_STATE}/etc"
# cluster-admin, for the scripts and for a person
K8S_ADMIN_KUBECONFIG="${K8S_STATE}/kubeconfig"
# the podspawn ServiceAccount of hack/k8s/podspawn-rbac.yaml: what podspawn's tests use
K8S_PODSPAWN_KUBECONFIG="${K8S_STATE}/podspawn.kubeconfig"
K8S_NAMESPACE=podspawn

K8S_NODE=podspawn-k8s-node
K8S_ETCD_PORT=12379
K8S_ETCD_PEER_PORT=12380
K8S_API_PORT=16443
K8S_KUBELET_PORT=11250
K8S_KUBELET_HEALTHZ_PORT=11248
K8S_KCM_PORT=11257
K8S_SCHED_PORT=11259
# Debian's docker-registry (distribution), plain http on loopback: podspawn
# pushes project images here and the cluster's containerd pulls them.
K8S_REGISTRY=127.0.0.1:15000
# The pod network is a bridge of our own, never docker0. The kubelet refuses
# a loopback node IP, so the node IP is the bridge's own address: the API
# server reaches the kubelet there, and nothing leaves the machine.
K8S_BRIDGE=podspawn-k8s0
K8S_POD_CIDR=10.244.0.0/24
K8S_NODE_IP=10.244.0.1
K8S_SVC_CIDR=10.0.0.0/24
K8S_CNI_BIN=/usr/lib/cni

K8S_CONTAINERD_SOCK="${K8S_RUN}/containerd.sock"

# The processes k8s-up.sh starts, in start order; k8s-down.sh stops them in reverse.
K8S_DAEMONS=(etcd containerd registry kube-apiserver kubelet kube-controller-manager kube-scheduler)

k8s_ctr() { ctr --address "${K8S_CONTAINERD_SOCK}" --namespace k8s.io "$@"; }

# k8s_alive NAME: the process k8s-up.sh started as NAME still runs. The pid
# file holds "PID STARTTIME" (field 22 of /proc/PID/stat), so a recycled pid
# is not mistaken for ours.
k8s_alive() {
  local f="${K8S_RUN}/$1.pid" pid start now
  [[ -f "${f}" ]] || return 1
  read -r pid start <"${f}" || return 1
  [[ -n "${pid}" && -r "/proc/${pid}/stat" ]] || return 1
  now="$(k8s_starttime "${pid}")" || return 1
  [[ "${now}" == "${start}" ]]
}

# k8s_starttime PID: the process's start time in clock ticks since boot.
k8s_starttime() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  # the command name (field 2) may hold spaces; count fields after its ')'
  stat="${stat##*) }"
  awk '{ print $20 }' <<<"${stat}"
}

# k8s_ensure_packages WHO PACKAGE...: install the Debian packages that are
# missing, touching apt only then (apt-get update is slow).
k8s_ensure_packages() {
  local who=$1 pkg status
  shift
  local missing=()
  for pkg in "$@"; do
    status="$(dpkg-query -W -f='${Status}' "${pkg}" 2>/dev/null || true)"
    [[ "${status}" == "install ok installed" ]] || missing+=("${pkg}")
  done
  ((${#missing[@]} > 0)) || return 0
  echo "${who}: installing ${missing[*]}" >&2
  apt-get update -qq
  # NEEDRESTART_SUSPEND: needrestart may otherwise prompt, and CI has no stdin.
  DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
