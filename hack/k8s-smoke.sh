#!/usr/bin/env bash
# Smoke test of the cluster hack/k8s-up.sh started, as podspawn's
# ServiceAccount (hack/k8s/podspawn-rbac.yaml) in the podspawn namespace:
#   1. a session-shaped Pod from an imported image: create, wait Running,
#      exec with and without a TTY through the API server, exit code 42
#      passed back, no service account token, delete; timings printed;
#   2. the same from the loopback registry (pushed there first, pulled by
#      the cluster's containerd over plain http);
# then the memory the cluster's processes use.
#
#   k8s-smoke.sh [EXECS]   EXECS: exec round trips to time (default 10)
set -o errexit -o nounset -o pipefail
SCRIPT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=hack/k8s/lib.sh
source "${SCRIPT_ROOT}/hack/k8s/lib.sh"
export PATH="${K8S_BIN}:${PATH}"
EXECS="${1:-10}"

if [[ ! -f "${K8S_PODSPAWN_KUBECONFIG}" ]] || ! k8s_alive kube-apiserver || ! k8s_alive kubelet; then
  echo "k8s-smoke: the test cluster is not up; run ${SCRIPT_ROOT}/hack/k8s-up.sh first" >&2
  exit 1
fi
# the smoke binary is built with the cluster's binaries; this is a no-op when current
bash "${SCRIPT_ROOT}/hack/k8s-build.sh" >/dev/null

echo "k8s-smoke: pod from an imported image (k8s.test/busybox:1)"
KUBECONFIG="${K8S_PODSPAWN_KUBECONFIG}" smoke -n "${K8S_NAMESPACE}" -image k8s.test/busybox:1 -pull Never -execs "${EXECS}"

echo "k8s-smoke: pod from the registry ${K8S_REGISTRY}"
ref="${K8S_REGISTRY}/podspawn-k8s-smoke/busybox:1"
s="$(date +%s%N)"
k8s_ctr images tag --force k8s.test/busybox:1 "${ref}" >/dev/null
k8s_ctr images push --plain-http "${ref}" >/dev/null
# drop the local name, so the Pod must resolve it from the registry
k8s_ctr images rm "${ref}" >/dev/null
echo "pushed ${ref} in $((($(date +%s%N) - s) / 1000000))ms"
KUBECONFIG="${K8S_PODSPAWN_KUBECONFIG}" smoke -n "${K8S_NAMESPACE}" -image "${ref}" -pull Always -execs 0

# Memory: resident set of the cluster's own processes (the daemons k8s-up.sh
# started and the shims of our containerd; pods' own processes not counted).
total=0
parts=()
rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
for d in "${K8S_DAEMONS[@]}"; do
  k8s_alive "${d}" || continue
  read -r pid _ <"${K8S_RUN}/${d}.pid"
  kb="$(rss "${pid}")"
  total=$((total + kb))
  parts+=("${d} $((kb / 1024))")
done
shims=0
for p in /proc/[0-9]*; do
  cmdline="$(tr '\0' ' ' 2>/dev/null <"${p}/cmdline")" || continue
  if [[ "${cmdline}" == *containerd-shim*"-address ${K8S_CONTAINERD_SOCK} "* ]]; then
    shims=$((shims + $(rss "${p#/proc/}")))
  fi
done
total=$((total + shims))
parts+=("shims $((shims / 1024))")
echo "k8s-smoke: cluster memory (RSS, MB): $((total / 1024)) in all; $(printf '%s, ' "${parts[@]}" | sed 's/, $//')"
