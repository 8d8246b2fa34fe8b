#!/usr/bin/env bash
# Check that the tests left the host as they found it:
#   - the host dockerd still runs a container on its default network
#     (docker0), which test/daemon's private dockerd once deleted;
#   - no Docker object the tests label is left: containers, networks and
#     volumes labelled managed-by=podspawn or podspawn.instance (podspawn
#     labels everything it creates with both; the tests' hand-made objects
#     carry one of them), and no project image (podspawn/*);
#   - nothing of test/daemon's private dockerd is left (process, mounts,
#     directories; see test/daemon/dockerd_test.go);
#   - podspawn's host access rules (the PODSPAWN-INPUT chain and INPUT's
#     rules, IPv4 and IPv6) are as they were: podspawn installs them on
#     every session creation, and test/harness puts them back;
#   - the host's accounts, groups, sudoers drop-ins and sshd configuration
#     are as they were (test/ssh and test/setup create accounts, groups and
#     drop-ins and remove them; a userdel that failed once left an account);
#   - the Kubernetes test cluster (hack/k8s-up.sh) is down unless it was up
#     before: no state or run directory, no bridge podspawn-k8s0, no
#     kubepods cgroups, and the KUBE-* iptables chains the kubelet adds
#     (filter, nat, mangle; IPv4 and IPv6) exactly as before.
#
#   verify-host-clean.sh --record FILE   note what exists before the tests
#   verify-host-clean.sh [FILE]          check; with FILE, what it recorded
#                                        is the host's, not a leftover
#
# hack/test.sh runs both. Another test run on the same Docker daemon at the
# same time shows up here as leftovers: run one at a time.
set -o errexit -o nounset -o pipefail
SCRIPT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

IMAGE="${PODSPAWN_TEST_IMAGE:-podspawn-test:busybox}"
# The private dockerd of test/daemon (dmRunDir, dmDataRoot there).
DM_RUN_DIR=/run/podspawn-dmtest
DM_DATA_ROOT=/var/lib/podspawn-dmtest

# bridge_status prints "ok", or why the default network does not work.
bridge_status() {
  local out
  if ! docker image inspect "${IMAGE}" >/dev/null 2>&1; then
    echo "image ${IMAGE} is missing (hack/build-test-image.sh builds it), so the default network cannot be tried"
    return
  fi
  if out="$(docker run --rm --network bridge "${IMAGE}" true 2>&1)"; then
    echo ok
    return
  fi
  out="$(grep -v -e '^$' -e 'docker run --help' <<<"${out}" | tr '\n' ' ')"
  if ! ip link show docker0 >/dev/null 2>&1; then
    echo "docker0 does not exist; docker run --rm --network bridge ${IMAGE} true: ${out}"
  else
    echo "docker run --rm --network bridge ${IMAGE} true: ${out}"
  fi
}

# labelled prints one line per labelled object: kind, id, then name and
# labels for the report. Sorted, one line per kind and id (an object that
# matches both filters may list its labels in another order).
labelled() {
  local f
  {
    for f in label=managed-by=podspawn label=podspawn.instance; do
      docker ps --all --no-trunc --filter "${f}" --format 'container {{.ID}} {{.Names}} {{.Labels}}'
      docker network ls --no-trunc --filter "${f}" --format 'network {{.ID}} {{.Name}} {{.Labels}}'
      docker volume ls --filter "${f}" --format 'volume {{.Name}} {{.Name}} {{.Labels}}'
    done
    docker image ls --no-trunc --filter 'reference=podspawn/*' --format 'image {{.Repository}}:{{.Tag}} {{.ID}}'
  } | LC_ALL=C sort | awk '!seen[$1 " " $2]++'
}

# firewall prints, one per line prefixed "firewall", the rules of the filter
# chains podspawn writes: INPUT (its jump) and PODSPAWN-INPUT.
firewall() {
  local t
  for t in iptables-save ip6tables-save; do
    command -v "${t}" >/dev/null || continue
    "${t}" -t filter 2>/dev/null | grep -E '^(-A INPUT |-A PODSPAWN-INPUT |:PODSPAWN-INPUT )' | sed "s/^:PODSPAWN-INPUT .*/:PODSPAWN-INPUT/; s/^/firewall ${t%-save} /" || true
  done
}

# kube_chains prints, one per line prefixed "kubechain", the KUBE-* chains
# of the tables the kubelet writes to.
kube_chains() {
  local ipt t
  for ipt in iptables ip6tables; do
    command -v "${ipt}" >/dev/null || continue
    for t in filter nat mangle; do
      "${ipt}" -w -t "${t}" -S 2>/dev/null | awk -v i="${ipt}" -v t="${t}" '$1 == "-N" && $2 ~ /^KUBE-/ { print "kubechain", i, t, $2 }' || true
    done
  done
}

# k8s_left prints what of the test cluster exists (hack/k8s/lib.sh's paths),
# and of bench-k8s-scale.sh's control plane.
k8s_left() {
  local d
  for d in /run/podspawn-k8s /var/lib/podspawn-k8s /var/lib/podspawn-k8s-scale /sys/fs/cgroup/*/kubepods; do
    if [[ -e "${d}" ]]; then echo "${d}"; fi
  done
  if ip link show podspawn-k8s0 >/dev/null 2>&1; then echo "bridge podspawn-k8s0"; fi
}

# accounts prints, one per line, the host's account and group names, its
# sudoers drop-ins and a checksum of each sshd configuration file.
accounts() {
  cut -d: -f1 /etc/passwd | sed 's/^/account /'
  cut -d: -f1 /etc/group | sed 's/^/group /'
  ls -A /etc/sudoers.d 2>/dev/null | sed 's/^/sudoers /'
  find /etc/ssh/sshd_config /etc/ssh/sshd_config.d -type f -exec sha256sum {} + 2>/dev/null | awk '{ print "sshd", $2, $1 }'
}

if [[ "${1:-}" == "--record" ]]; then
  file="${2:?usage: verify-host-clean.sh --record FILE}"
  objects="$(labelled)"
  rules="$(firewall)"
  chains="$(kube_chains)"
  {
    echo "bridge $(bridge_status)"
    [[ -z "${objects}" ]] || echo "${objects}"
    [[ -z "${rules}" ]] || echo "${rules}"
    [[ -z "${chains}" ]] || echo "${chains}"
    if [[ -n "$(k8s_left)" ]]; then echo "k8s up"; fi
    accounts
  } >"${file}"
  exit 0
fi
baseline="${1:-}"

failed=0
fail() {
  echo "verify-host-clean: FAILED: $*" >&2
  failed=1
}

status="$(bridge_status)"
before=""
[[ -z "${baseline}" ]] || before="$(sed -n 's/^bridge //p' "${baseline}")"
if [[ "${status}" != ok ]]; then
  if [[ -n "${before}" && "${before}" != ok ]]; then
    echo "verify-host-clean: warning: the host's default Docker network was already broken before the tests (${before}); now: ${status}" >&2
  else
    fail "the host's default Docker network no longer works after the tests: ${status}. Restarting the host's dockerd recreates docker0."
  fi
fi

# Objects now present whose kind and id the baseline does not list.
leftovers="$(labelled | awk -v base="${baseline}" '
  BEGIN { if (base != "") while ((getline l < base) > 0) { split(l, f, " "); seen[f[1] " " f[2]] = 1 } }
  !seen[$1 " " $2] { print }')"
if [[ -n "${leftovers}" ]]; then
  fail "Docker objects labelled by the tests are left behind (kind id name labels):"
  sed 's/^/  /' <<<"${leftovers}" >&2
fi

# The host access rules: exactly the recorded ones (without a baseline,
# none of podspawn's).
if [[ -n "${baseline}" ]]; then
  rules_before="$(grep '^firewall ' "${baseline}" || true)"
  rules_now="$(firewall)"
  if [[ "${rules_now}" != "${rules_before}" ]]; then
    fail "the host's INPUT and PODSPAWN-INPUT chains differ from before the tests (test/harness.KeepHostFirewall puts them back):"
    diff <(echo "${rules_before}") <(echo "${rules_now}") | sed 's/^/  /' >&2 || true
  fi
elif rules_now="$(firewall | grep PODSPAWN-INPUT)"; then
  fail "podspawn's host access rules are installed (with a baseline from --record, ones that were there before are fine):"
  sed 's/^/  /' <<<"${rules_now}" >&2
fi

# Accounts, groups, sudoers and sshd: exactly the recorded ones.
if [[ -n "${baseline}" ]]; then
  hostconf_before="$(grep -E '^(account|group|sudoers|sshd) ' "${baseline}" | LC_ALL=C sort || true)"
  hostconf_now="$(accounts | LC_ALL=C sort)"
  if [[ "${hostconf_now}" != "${hostconf_before}" ]]; then
    fail "the host's accounts, groups, sudoers drop-ins or sshd configuration differ from before the tests (> added, < removed or changed):"
    diff <(echo "${hostconf_before}") <(echo "${hostconf_now}") | grep '^[<>]' | sed 's/^/  /' >&2 || true
  fi
fi

# test/harness.KeepHostFirewall's record of the rules, shared by the test
# processes holding them; the last one removes it.
if [[ -e /run/podspawn-test-hostfw.json ]]; then
  fail "/run/podspawn-test-hostfw.json is left: a test process still holds the host access rules, or died holding them (the next test run restores them)"
fi

# The Kubernetes test cluster: down again unless it was up before, and the
# kubelet's chains as they were.
if [[ -z "${baseline}" ]] || ! grep -qx 'k8s up' "${baseline}"; then
  if left="$(k8s_left)" && [[ -n "${left}" ]]; then
    fail "the Kubernetes test cluster is left (hack/k8s-down.sh removes it): $(tr '\n' ' ' <<<"${left}")"
  fi
fi
chains_before=""
[[ -z "${baseline}" ]] || chains_before="$(grep '^kubechain ' "${baseline}" || true)"
if [[ -z "$(k8s_left)" && "$(kube_chains)" != "${chains_before}" ]]; then
  fail "KUBE-* iptables chains differ from before the tests (hack/k8s-down.sh removes the ones the kubelet added):"
  diff <(echo "${chains_before}") <(kube_chains) | sed 's/^/  /' >&2 || true
fi

# The private dockerd: a process serving its socket, its mounts, its files.
for p in /proc/[0-9]*; do
  cmdline="$(tr '\0' ' ' 2>/dev/null <"${p}/cmdline")" || continue
  if [[ "${cmdline}" == *"--host unix://${DM_RUN_DIR}/docker.sock"* ]]; then
    fail "test/daemon's private dockerd still runs: pid ${p#/proc/}: ${cmdline}"
  fi
done
if mounts="$(awk -v a="${DM_RUN_DIR}" -v b="${DM_DATA_ROOT}" '$2 == a || index($2, a "/") == 1 || $2 == b || index($2, b "/") == 1 { print $2 }' /proc/self/mounts)" && [[ -n "${mounts}" ]]; then
  fail "mounts of test/daemon's private dockerd are left: $(tr '\n' ' ' <<<"${mounts}")"
fi
for d in "${DM_RUN_DIR}" "${DM_DATA_ROOT}"; do
  if [[ -e "${d}" ]]; then
    fail "${d} of test/daemon's private dockerd is left"
  fi
done

if ((failed)); then
  echo "verify-host-clean: the tests did not leave the host as they found it (see above; ${SCRIPT_ROOT}/hack/verify-host-clean.sh)" >&2
  exit 1
fi
echo "verify-host-clean: ok"
