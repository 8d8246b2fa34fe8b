#!/usr/bin/env bash
# Install the Debian packages the tests rely on, touching apt only when
# something is actually missing (apt-get update is slow and needs the network).
set -o errexit -o nounset -o pipefail
# shellcheck disable=SC2034 # same preamble as every hack/ script
SCRIPT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# iptables: podspawn's host access rules (security.block_host_access).
PACKAGES=(busybox-static openssh-server openssh-client openssh-sftp-server sudo git procps iproute2 systemd gcc libc6-dev iptables)

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
