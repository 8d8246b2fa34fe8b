#!/usr/bin/env bash
# Make sure a Docker daemon answers on this machine, installing and starting
# it if needed. Safe to run repeatedly; leaves dockerd running on exit.
set -o errexit -o nounset -o pipefail
# shellcheck disable=SC2034 # same preamble as every hack/ script
SCRIPT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# CI environments do not always put the sbin dirs on PATH.
export PATH="${PATH}:/usr/local/sbin:/usr/sbin:/sbin"
LOG=/var/log/podspawn-dockerd.log
WAIT_SECONDS=60

docker_up() {
  # timeout: a wedged daemon must not hang the script forever.
  command -v docker >/dev/null && timeout 10 docker info >/dev/null 2>&1
}

# /proc instead of pgrep: procps may not be installed yet on a fresh machine.
dockerd_running() { grep -sqx dockerd /proc/[0-9]*/comm; }

docker_up && exit 0

if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null; then
  echo "ensure-docker: installing docker.io" >&2
  apt-get update -qq
  # NEEDRESTART_SUSPEND: needrestart may otherwise prompt, and CI has no stdin.
  DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 apt-get install -y -qq docker.io >/dev/null
fi

# Installing docker.io under systemd starts it for us; give that a chance.
if [[ -d /run/systemd/system ]] && systemctl start docker 2>/dev/null; then
  :
elif ! dockerd_running; then
  dockerd_args=()
  # dockerd refuses to start if it cannot program iptables. Some sandboxes lack
  # nf_tables but still have the legacy backend; if neither works, run without
  # iptables (containers lose NAT to the outside, which the tests never need).
  if ! iptables -t nat -S >/dev/null 2>&1; then
    if iptables-legacy -t nat -S >/dev/null 2>&1; then
      echo "ensure-docker: iptables-nft unusable, switching to iptables-legacy" >&2
      update-alternatives --set iptables /usr/sbin/iptables-legacy >/dev/null
      update-alternatives --set ip6tables /usr/sbin/ip6tables-legacy >/dev/null 2>&1 || true
    else
      echo "ensure-docker: no working iptables, starting dockerd with --iptables=false" >&2
      dockerd_args+=(--iptables=false)
    fi
  fi
  # No systemd to supervise it (e.g. inside a container): start it in its own
  # session so it outlives this script and the caller's process group.
  echo "ensure-docker: starting dockerd (log: ${LOG})" >&2
  setsid -f dockerd "${dockerd_args[@]}" >>"${LOG}" 2>&1 </dev/null
fi

fail() {
  echo "ensure-docker: $*; last lines of ${LOG}:" >&2
  tail -n 25 "${LOG}" >&2 2>/dev/null || true
  exit 1
}

for ((i = 0; i < WAIT_SECONDS * 4; i++)); do
  docker_up && exit 0
  # A dockerd that died on startup (bad iptables, storage driver...) will not
  # come back; say so now instead of after the full wait. The grace period
  # covers the moment before setsid's child has exec'd dockerd.
  if ((i >= 8)) && ! dockerd_running; then
    fail "dockerd exited during startup"
  fi
  sleep 0.25
done
fail "docker daemon did not answer within ${WAIT_SECONDS}s"
