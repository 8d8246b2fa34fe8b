#!/usr/bin/env bash
# Stop the test cluster of hack/k8s-up.sh and remove everything it created:
# its processes, the pods' containers, network namespaces, mounts and cgroups,
# the bridge podspawn-k8s0, the iptables chains and host paths the kubelet
# added, the kernel settings the kubelet changed, and the state under
# /var/lib/podspawn-k8s and /run/podspawn-k8s. The build cache
# (/var/cache/podspawn-k8s) stays. Docker's containerd, docker0 and every
# other object of the host are never touched: processes are stopped by the
# pids k8s-up.sh recorded, and only names k8s-up.sh gave are removed.
#
# Safe to run at any time: after a killed k8s-up.sh, twice, or with nothing up.
set -o errexit -o nounset -o pipefail
SCRIPT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=hack/k8s/lib.sh
source "${SCRIPT_ROOT}/hack/k8s/lib.sh"
export PATH="${K8S_BIN}:${PATH}:/usr/local/sbin:/usr/sbin:/sbin"
export KUBECONFIG="${K8S_ADMIN_KUBECONFIG}"

case "${K8S_STATE}" in
  /*/*) ;;
  *) echo "k8s-down: refusing to remove state directory '${K8S_STATE}'" >&2; exit 1 ;;
esac

mkdir -p "$(dirname "${K8S_LOCK}")"
exec 9>"${K8S_LOCK}"
if ! flock -w 300 9; then echo "k8s-down: waited 5 minutes for ${K8S_LOCK}; another k8s-up.sh or k8s-down.sh holds it (fuser -v ${K8S_LOCK})" >&2; exit 1; fi

t0=${SECONDS}
PRE="${K8S_RUN}/preexisting"
[[ -f "${PRE}" ]] || PRE=/dev/null
preexisting() { grep -qxF "$*" "${PRE}"; }

# stop NAME: SIGTERM the pid k8s-up.sh recorded, SIGKILL after 3 s.
stop() {
  local pid i
  if k8s_alive "$1"; then
    read -r pid _ <"${K8S_RUN}/$1.pid"
    kill "${pid}" 2>/dev/null || true
    for ((i = 0; i < 30; i++)); do
      k8s_alive "$1" || break
      sleep 0.1
    done
    if k8s_alive "$1"; then kill -9 "${pid}" 2>/dev/null || true; fi
  fi
  rm -f "${K8S_RUN}/$1.pid"
}

running=()
for d in "${K8S_DAEMONS[@]}"; do
  if k8s_alive "${d}"; then running+=("${d}"); fi
done
if ((${#running[@]} == 0)) && [[ ! -d "${K8S_RUN}" && ! -d "${K8S_STATE}" ]] && ! ip link show "${K8S_BRIDGE}" >/dev/null 2>&1; then
  echo "k8s-down: nothing to do" >&2
  exit 0
fi

# 1. Let the kubelet tear the pods down itself (CNI DEL, netns, cgroups).
if k8s_alive kube-apiserver && k8s_alive kubelet; then
  timeout 30 kubectl delete pods --all --all-namespaces --grace-period=0 --force --wait=false >/dev/null 2>&1 || true
  for ((i = 0; i < 100; i++)); do
    [[ -z "$(k8s_ctr tasks ls -q 2>/dev/null)" ]] && break
    sleep 0.1
  done
fi
for d in kube-scheduler kube-controller-manager kubelet kube-apiserver registry etcd; do stop "${d}"; done

# 2. Whatever is left in our containerd: note the sandboxes' network
#    namespaces, kill and remove. If containerd itself died, start it again
#    briefly: it reconnects to the shims still running.
if ! k8s_alive containerd && [[ -f "${K8S_ETC}/containerd.toml" && -d "${K8S_RUN}/containerd" ]]; then
  mkdir -p "${K8S_LOG}"
  # 9>&-: containerd must not hold our lock (see k8s-up.sh's start)
  setsid containerd --config "${K8S_ETC}/containerd.toml" >>"${K8S_LOG}/containerd.log" 2>&1 </dev/null 9>&- &
  echo "$! $(k8s_starttime $!)" >"${K8S_RUN}/containerd.pid"
  for ((i = 0; i < 50; i++)); do
    ctr --address "${K8S_CONTAINERD_SOCK}" version >/dev/null 2>&1 && break
    sleep 0.1
  done
fi
netns=()
ids=()
if k8s_alive containerd; then
  mapfile -t ids < <(k8s_ctr containers ls -q 2>/dev/null || true)
  for c in "${ids[@]}"; do
    ns="$(k8s_ctr containers info "${c}" 2>/dev/null | jq -r '.Spec.linux.namespaces[]? | select(.type == "network") | .path // empty' 2>/dev/null || true)"
    if [[ -n "${ns}" ]]; then netns+=("${ns}"); fi
    k8s_ctr tasks kill -s SIGKILL "${c}" >/dev/null 2>&1 || true
  done
  if ((${#ids[@]} > 0)); then sleep 0.5; fi
  for c in "${ids[@]}"; do
    k8s_ctr tasks rm -f "${c}" >/dev/null 2>&1 || true
    k8s_ctr containers rm "${c}" >/dev/null 2>&1 || true
  done
fi
stop containerd
# Shims of our containerd only: matched by our socket in their command line,
# killed by pid (Docker's shims name /run/docker/containerd/...).
for p in /proc/[0-9]*; do
  cmdline="$(tr '\0' ' ' 2>/dev/null <"${p}/cmdline")" || continue
  if [[ "${cmdline}" == *containerd-shim*"-address ${K8S_CONTAINERD_SOCK} "* ]]; then
    kill -9 "${p#/proc/}" 2>/dev/null || true
  fi
done

# 3. Mounts under our directories (deepest first), the sandboxes' network
#    namespaces, our bridge.
awk -v a="${K8S_STATE}/" -v b="${K8S_RUN}/" 'index($5, a) == 1 || index($5, b) == 1 { print $5 }' /proc/self/mountinfo |
  sort -r | while read -r m; do umount -l "${m}" 2>/dev/null || true; done
for n in "${netns[@]}"; do
  case "${n}" in
    /run/netns/cni-* | /var/run/netns/cni-*)
      umount "${n}" 2>/dev/null || true
      rm -f "${n}"
      ;;
  esac
done
if ip link show "${K8S_BRIDGE}" >/dev/null 2>&1; then ip link del "${K8S_BRIDGE}"; fi

# 4. What the kubelet made outside our directories.
#    Its cgroup tree (kubepods) in each hierarchy, if it was not there before.
for h in /sys/fs/cgroup/*/kubepods; do
  if [[ -d "${h}" ]] && ! preexisting path "${h}"; then
    find "${h}" -depth -type d -exec rmdir {} + 2>/dev/null || true
  fi
done
#    KUBE-* chains (KUBE-FIREWALL, KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT, ...)
#    that were not there before, with the rules that jump to them.
for ipt in iptables ip6tables; do
  for t in filter nat mangle; do
    rules="$("${ipt}" -w -t "${t}" -S 2>/dev/null)" || continue
    ours=()
    while read -r c; do
      preexisting chain "${ipt}" "${t}" "${c}" || ours+=("${c}")
    done < <(awk '$1 == "-N" && $2 ~ /^KUBE-/ { print $2 }' <<<"${rules}")
    # first every jump to them and their rules, then the chains
    for c in "${ours[@]}"; do
      # -S prints a rule quoted as the shell reads it (comments hold spaces)
      # (no jump to a chain is fine: grep's status must not end the script)
      { grep -E -- "-j ${c}( |$)" <<<"${rules}" || true; } | sed 's/^-A /-D /' | while read -r r; do
        eval "\"\${ipt}\" -w -t \"\${t}\" ${r}" 2>/dev/null || true
      done
      "${ipt}" -w -t "${t}" -F "${c}" 2>/dev/null || true
    done
    for c in "${ours[@]}"; do "${ipt}" -w -t "${t}" -X "${c}" 2>/dev/null || true; done
  done
done
#    CNI results of our network, log links into our state, the kubelet's
#    fixed host paths (device plugins, plugin registry), and those of these
#    directories that were not there before and are now empty.
rm -f /var/lib/cni/results/podspawn-k8s-* 2>/dev/null || true
for c in "${ids[@]}"; do rm -f /var/lib/cni/results/*-"${c}"-* 2>/dev/null || true; done
if [[ -d /var/log/containers ]]; then find /var/log/containers -maxdepth 1 -type l -lname "${K8S_STATE}/*" -delete 2>/dev/null || true; fi
rm -f /var/lib/kubelet/device-plugins/kubelet.sock /var/lib/kubelet/plugins_registry/* 2>/dev/null || true
#    The hostpath provisioner's volumes (the StorageClass itself is in
#    etcd's data, removed with the state).
if [[ -d "${K8S_HOSTPATH_PV}" ]] && ! preexisting path "${K8S_HOSTPATH_PV}"; then rm -rf "${K8S_HOSTPATH_PV}"; fi
for d in /var/lib/kubelet /var/log/containers /var/log/pods /var/lib/cni; do
  if [[ -d "${d}" ]] && ! preexisting path "${d}"; then
    find "${d}" -depth -type d -empty -delete 2>/dev/null || true
  fi
done
#    Kernel settings the kubelet changed (vm.overcommit_memory, kernel.panic, ...).
while read -r kind name value; do
  [[ "${kind}" == sysctl ]] || continue
  if [[ "$(sysctl -n "${name}" 2>/dev/null)" != "${value}" ]]; then
    sysctl -q -w "${name}=${value}" >/dev/null 2>&1 || echo "k8s-down: could not set ${name} back to ${value}" >&2
  fi
done <"${PRE}"

# 5. State.
rm -rf "${K8S_STATE}" "${K8S_RUN}"
echo "k8s-down: stopped and removed in $((SECONDS - t0))s${running[*]:+ (was running: ${running[*]})}" >&2
