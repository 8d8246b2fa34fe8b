#!/usr/bin/env bash
# The podspawn demo: on a fresh Debian machine, install podspawn next to a
# SEPARATE sshd on 127.0.0.1:${DEMO_PORT:-2222} (own config, host key and
# pid file; the machine's own sshd and /etc/ssh are never touched), add a
# user with a generated key, ssh into their container, show the admin
# commands, and remove everything it created on exit.
#
#   sudo bash hack/demo.sh            # DEMO_KEEP=1 leaves it all running for a look
#
# It creates, and removes again: the host account ${DEMO_USER:-demo}, the
# group ${DEMO_GROUP:-podspawn-demo}, the account ${DEMO_AUTH_USER:-podspawn-demo-auth},
# /etc/sudoers.d/podspawn-demo, /usr/local/lib/podspawn-demo, a temp root
# under /tmp, the demo user's Docker objects (through 'podspawn stop'), and
# podspawn's host access rules (the PODSPAWN-INPUT iptables chain and
# INPUT's jump to it) unless the host had them before.
set -o errexit -o nounset -o pipefail
SCRIPT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="${PATH}:/usr/local/sbin:/usr/sbin:/sbin"

PORT="${DEMO_PORT:-2222}"
DEMO_USER="${DEMO_USER:-demo}"
GROUP="${DEMO_GROUP:-podspawn-demo}"
AUTH_USER="${DEMO_AUTH_USER:-podspawn-demo-auth}"
# sudo reads /etc/sudoers.d files only when their name has no '.'.
SUDOERS=/etc/sudoers.d/podspawn-demo
# sshd runs AuthorizedKeysCommand only from a root-owned path nobody else
# can write, which rules out the checkout and /tmp.
BIN_DIR=/usr/local/lib/podspawn-demo
BIN="${BIN_DIR}/podspawn"
IMAGE=podspawn-test:busybox

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
die() {
  echo "demo: $*" >&2
  exit 1
}

[[ ${EUID} -eq 0 ]] || die "run as root (sudo bash hack/demo.sh): it creates accounts, a sudoers rule and an sshd"

# Refuse to adopt, and later delete, accounts that are not the demo's.
gecos() { getent passwd "$1" | cut -d: -f5; }
if getent passwd "${DEMO_USER}" >/dev/null && [[ "$(gecos "${DEMO_USER}")" != "podspawn user" ]]; then
  die "host account ${DEMO_USER} already exists and was not made by podspawn; run with DEMO_USER=<another name>"
fi
if getent passwd "${AUTH_USER}" >/dev/null && [[ "$(gecos "${AUTH_USER}")" != "podspawn auth-keys" ]]; then
  die "account ${AUTH_USER} already exists and was not made by podspawn; run with DEMO_AUTH_USER=<another name>"
fi
group_existed=0
getent group "${GROUP}" >/dev/null && group_existed=1
# server-setup installs the host access rules; a host that runs podspawn
# for real already has them, and keeps them.
fw_existed=0
iptables -w -S PODSPAWN-INPUT >/dev/null 2>&1 && fw_existed=1

# remove_host_rules deletes INPUT's jumps to PODSPAWN-INPUT, then the chain.
remove_host_rules() {
  local t
  for t in iptables ip6tables; do
    command -v "${t}" >/dev/null || continue
    while "${t}" -w -D INPUT -i psp+ -j PODSPAWN-INPUT 2>/dev/null; do :; done
    "${t}" -w -F PODSPAWN-INPUT 2>/dev/null && "${t}" -w -X PODSPAWN-INPUT 2>/dev/null
  done
  return 0
}

say "Preparing the machine (hack/ci-setup.sh: packages, Docker, the ${IMAGE} image)"
"${SCRIPT_ROOT}/hack/ci-setup.sh"

if ss -Hltn "sport = :${PORT}" 2>/dev/null | grep -q .; then
  die "something already listens on port ${PORT}; run with DEMO_PORT=<free port>"
fi

ROOT="$(mktemp -d /tmp/podspawn-demo.XXXXXX)"
# The auth-keys account must be able to reach the config.
chmod 0755 "${ROOT}"
SSHD_PID=""
STOPPED=0

cleanup() {
  local rc=$?
  set +o errexit
  if [[ "${DEMO_KEEP:-0}" == 1 ]]; then
    echo
    echo "DEMO_KEEP=1: leaving everything in place. Connect with:"
    echo "  ssh -p ${PORT} -i ${ROOT}/client/id_ed25519 -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no ${DEMO_USER}@127.0.0.1"
    echo "Clean up by hand afterwards: kill ${SSHD_PID:-<sshd pid>}, then remove what the header of hack/demo.sh lists (temp root ${ROOT})."
    exit "${rc}"
  fi
  say "Cleaning up"
  if [[ ${STOPPED} == 0 && -x "${BIN}" && -f "${ROOT}/state/state.db" ]]; then
    "${BIN}" --config "${ROOT}/etc/config.yaml" stop "${DEMO_USER}" >/dev/null 2>&1 ||
      echo "demo: 'podspawn stop ${DEMO_USER}' failed; remove its containers with: docker ps -a --filter label=podspawn.user=${DEMO_USER}" >&2
  fi
  if [[ -n "${SSHD_PID}" ]] && kill "${SSHD_PID}" 2>/dev/null; then
    for _ in $(seq 50); do kill -0 "${SSHD_PID}" 2>/dev/null || break; sleep 0.1; done
  fi
  if getent passwd "${DEMO_USER}" >/dev/null && [[ "$(gecos "${DEMO_USER}")" == "podspawn user" ]]; then userdel "${DEMO_USER}"; fi
  if getent passwd "${AUTH_USER}" >/dev/null && [[ "$(gecos "${AUTH_USER}")" == "podspawn auth-keys" ]]; then userdel "${AUTH_USER}"; fi
  if [[ ${group_existed} == 0 ]]; then groupdel "${GROUP}" 2>/dev/null; fi
  local fw=""
  if [[ ${fw_existed} == 0 ]]; then
    remove_host_rules
    fw=" and the host access rules"
  fi
  rm -f "${SUDOERS}"
  rm -rf "${ROOT}" "${BIN_DIR}"
  echo "demo: removed the accounts, ${SUDOERS}, ${BIN_DIR}, ${ROOT}${fw}"
  exit "${rc}"
}
trap cleanup EXIT

say "Building podspawn into ${BIN}"
mkdir -p "${BIN_DIR}"
chmod 0755 /usr/local/lib "${BIN_DIR}"
(cd "${SCRIPT_ROOT}" && go build -o "${BIN}" ./cmd)
# As the install does: the agent relay for runtime: kubernetes, next to podspawn.
(cd "${SCRIPT_ROOT}" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "${BIN_DIR}/podspawn-agentrelay" ./cmd/agentrelay)

for cmd in auth-keys spawn; do
  "${BIN}" "${cmd}" --help >/dev/null 2>&1 ||
    die "this build has no '${cmd}' command yet, which the SSH login needs (auth-keys and spawn are built separately from server-setup/add-user)"
done

say "Writing a config and a separate sshd_config under ${ROOT}"
mkdir -p "${ROOT}/etc" "${ROOT}/ssh" "${ROOT}/client"
chmod 0755 "${ROOT}/etc" "${ROOT}/ssh"
CFG="${ROOT}/etc/config.yaml"
cat >"${CFG}" <<EOF
auth:
  key_dir: ${ROOT}/etc/keys
defaults:
  image: ${IMAGE}
  shell: /bin/sh
  cpus: 1
  memory: 256m
session:
  mode: grace-period
  grace_period: 15s
  max_lifetime: 1h
state:
  db_path: ${ROOT}/state/state.db
  lock_dir: ${ROOT}/state/locks
  homes_dir: ${ROOT}/state/homes
  projects_dir: ${ROOT}/state/projects
projects_file: ${ROOT}/etc/projects.yaml
ssh:
  group: ${GROUP}
  auth_keys_user: ${AUTH_USER}
  sshd_config: ${ROOT}/ssh/sshd_config
EOF
chmod 0644 "${CFG}"
ssh-keygen -q -t ed25519 -N '' -C "podspawn-demo host" -f "${ROOT}/ssh/ssh_host_ed25519_key"
# UsePAM no: a plain, container-friendly sshd; it also makes sshd refuse
# accounts locked with '!', which is why add-user unlocks them with '*'.
cat >"${ROOT}/ssh/sshd_config" <<EOF
# The demo's own sshd: 127.0.0.1:${PORT}, own host key and pid file.
Port ${PORT}
ListenAddress 127.0.0.1
HostKey ${ROOT}/ssh/ssh_host_ed25519_key
PidFile ${ROOT}/ssh/sshd.pid
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
PrintMotd no
LogLevel VERBOSE
EOF
cat "${ROOT}/ssh/sshd_config"

say "podspawn server-setup --sshd-config ${ROOT}/ssh/sshd_config --sudoers-file ${SUDOERS} --no-reload"
# sshd -t needs its privilege separation directory.
install -d -m 0755 /run/sshd
"${BIN}" --config "${CFG}" server-setup --sshd-config "${ROOT}/ssh/sshd_config" --sudoers-file "${SUDOERS}" --no-reload

say "Running it again: every step is ok, the files are unchanged"
"${BIN}" --config "${CFG}" server-setup --sshd-config "${ROOT}/ssh/sshd_config" --sudoers-file "${SUDOERS}" --no-reload

say "Starting the demo sshd on 127.0.0.1:${PORT}"
/usr/sbin/sshd -f "${ROOT}/ssh/sshd_config" -E "${ROOT}/ssh/sshd.log"
for _ in $(seq 100); do
  [[ -s "${ROOT}/ssh/sshd.pid" ]] && ss -Hltn "sport = :${PORT}" | grep -q . && break
  sleep 0.1
done
[[ -s "${ROOT}/ssh/sshd.pid" ]] || die "sshd did not start; its log: $(cat "${ROOT}/ssh/sshd.log")"
SSHD_PID="$(cat "${ROOT}/ssh/sshd.pid")"
echo "sshd pid ${SSHD_PID}"

say "podspawn add-user ${DEMO_USER} --key-file <generated key>"
ssh-keygen -q -t ed25519 -N '' -C "${DEMO_USER}@podspawn-demo" -f "${ROOT}/client/id_ed25519"
"${BIN}" --config "${CFG}" add-user "${DEMO_USER}" --key-file "${ROOT}/client/id_ed25519.pub"

say "What sshd sees: podspawn auth-keys ${DEMO_USER}, run as ${AUTH_USER}"
sudo -u "${AUTH_USER}" "${BIN}" --config "${CFG}" auth-keys "${DEMO_USER}"

SSH=(ssh -p "${PORT}" -i "${ROOT}/client/id_ed25519" -o BatchMode=yes -o IdentitiesOnly=yes -o ConnectTimeout=10
  -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR "${DEMO_USER}@127.0.0.1")
say "ssh -p ${PORT} ${DEMO_USER}@127.0.0.1 'echo hello from \$(hostname); id'"
# shellcheck disable=SC2016 # $(hostname) must run inside the container
if ! timeout 120 "${SSH[@]}" 'echo hello from $(hostname); id'; then
  echo "demo: the SSH login failed. sshd log:" >&2
  tail -n 30 "${ROOT}/ssh/sshd.log" >&2
  exit 1
fi

say "Forwarding is off: ssh -W 127.0.0.1:${PORT} (a TCP forward to the host's loopback) is refused"
if out="$(timeout 30 "${SSH[@]}" -W "127.0.0.1:${PORT}" </dev/null 2>&1)"; then
  die "the TCP forward was allowed: ${out}"
fi
echo "${out}"

say "podspawn list"
"${BIN}" --config "${CFG}" list
say "podspawn status"
"${BIN}" --config "${CFG}" status
say "podspawn cleanup --dry-run"
"${BIN}" --config "${CFG}" cleanup --dry-run
say "podspawn stop ${DEMO_USER}"
"${BIN}" --config "${CFG}" stop "${DEMO_USER}"
STOPPED=1
say "podspawn list (after stop)"
"${BIN}" --config "${CFG}" list

say "Demo complete"
