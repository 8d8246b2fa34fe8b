#!/usr/bin/env bash
# Install the Debian packages the tests rely on, touching apt only when
# something is actually missing (apt-get update is slow and needs the network).
set -o errexit -o nounset -o pipefail
# shellcheck disable=SC2034 # same preamble as every hack/ script
SCRIPT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# iptables: podspawn's host access rules (security.block_host_access).
# prometheus: for promtool, which checks the daemon's /metrics and
# 'status --prometheus' (the server it ships is stopped right after install).
PACKAGES=(busybox-static openssh-server openssh-client openssh-sftp-server sudo git procps iproute2 systemd gcc libc6-dev iptables prometheus)

missing=()
for pkg in "${PACKAGES[@]}"; do
  status="$(dpkg-query -W -f='${Status}' "${pkg}" 2>/dev/null || true)"
  [[ "${status}" == "install ok installed" ]] || missing+=("${pkg}")
done

if ((${#missing[@]} == 0)); then
  exit 0
fi

echo "ensure-packages: installing ${missing[*]}" >&2
apt-get update -qq
# NEEDRESTART_SUSPEND: needrestart may otherwise prompt, and CI has no stdin.
DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

# The package starts a Prometheus server where systemd runs; the tests need
# only promtool. A server that was there before this script is left alone.
if [[ " ${missing[*]} " == *" prometheus "* ]]; then
  if [[ -d /run/systemd/system ]]; then
    systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  elif [[ -x /etc/init.d/prometheus ]]; then
    /etc/init.d/prometheus stop >/dev/null 2>&1 || true
  fi
fi
