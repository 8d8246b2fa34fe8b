#!/usr/bin/env bash
# Time "podspawn cleanup" removing N orphan containers against one
# "docker rm -f" of N identical containers, side by side in one run, and
# print both and the ratio (podspawn / docker). For each N in SIZES and each
# label set in KINDS, ROUNDS rounds; each round creates N orphans and times
# one cleanup pass, and creates N again and times one docker rm -f of them
# (podspawn first in odd rounds, docker first in even ones).
#
# Label sets (an orphan is a labelled container with no session row):
#   bare  managed-by=podspawn only (left by an older podspawn): every such
#         object lands on the one unattributed key;
#   user  as podspawn labels a session container (managed-by, user, session,
#         role, and this state database's instance), one user per orphan.
# So many running containers without a row are what the blast-radius guard
# holds (both kinds count as session containers), so the timed passes run
# with --allow-mass-removal, as an operator confirms them after checking
# the plan.
#
# Everything runs against a private dockerd in its own network namespace
# (containers use --network none): a cleanup pass removes every orphan
# without an instance label, so on the shared daemon it would reap other
# engineers' test objects (and theirs ours); its own namespace means its
# --bridge=none leaves the host's docker0 alone. The podspawn binary is
# built from this tree, with a temporary config (cleanup.orphan_min_age: 0s,
# so the orphans are removable at once) and state directory.
#
#   hack/bench-cleanup.sh                          # N=40 and 200, both kinds, 3 rounds
#   SIZES=40 KINDS=bare ROUNDS=5 hack/bench-cleanup.sh
#   WORKERS=8 hack/bench-cleanup.sh                # passes --workers 8 to cleanup
#
# dockerd 20.10.24 (Debian's) can deadlock when many containers on one
# network are removed at once (libnetwork's network and controller locks
# taken in opposite orders; moby/moby#46661, fixed by moby/libnetwork#2679
# after that release): here all orphans share the "none" network, and at
# N=200 a run sometimes wedges the private daemon whoever removes (its
# goroutine dump shows removals waiting in Daemon.Kill behind
# handleContainerExit in libnetwork). podspawn's pass then fails at its
# reconcile timeout, having lost nothing; the run reports it and stops.
#
# Needs root (it starts its own dockerd), dockerd and the test image on the
# host daemon or busybox-static to build it (hack/ci-setup.sh), and sqlite3.
set -o errexit -o nounset -o pipefail
SCRIPT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${SCRIPT_ROOT}"

SIZES="${SIZES:-40,200}"
KINDS="${KINDS:-bare,user}"
ROUNDS="${ROUNDS:-3}"
WORKERS="${WORKERS:-}"
IMAGE="podspawn-test:busybox"
# Fixed paths: one run at a time per host (flock below). The socket path must stay short.
RUN_DIR=/run/podspawn-bench-cleanup
DATA_ROOT=/var/lib/podspawn-bench-cleanup
HOST_SOCK="unix://${RUN_DIR}/docker.sock"

export PATH="${PATH}:/usr/local/sbin:/usr/sbin:/sbin"
if [[ "$(id -u)" != 0 ]]; then
  echo "bench-cleanup: must run as root (it starts its own dockerd)" >&2
  exit 1
fi
for bin in dockerd unshare nsenter docker; do
  if ! command -v "${bin}" >/dev/null; then
    echo "bench-cleanup: ${bin} is not installed; run hack/ci-setup.sh" >&2
    exit 1
  fi
done
# It reads the state database's instance id, to label orphans as podspawn would.
if ! command -v sqlite3 >/dev/null; then
  echo "bench-cleanup: sqlite3 is not installed; apt-get install sqlite3" >&2
  exit 1
fi

mkdir -p "${RUN_DIR}"
exec 9>"${RUN_DIR}.lock"
if ! flock -n 9; then
  echo "bench-cleanup: another run holds ${RUN_DIR}.lock; waiting for it" >&2
  flock 9
fi

work="$(mktemp -d)"
dockerd_pid=""
cleanup() {
  if [[ -n "${dockerd_pid}" ]]; then
    # Bounded: a deadlocked dockerd (see N=200 below) answers nothing.
    timeout 120 sh -c 'docker ps -aq | xargs -r docker rm -f' >/dev/null 2>&1 || true
    kill -TERM "${dockerd_pid}" 2>/dev/null || true
    # dockerd unmounts its layers on the way out; wait for it before
    # removing them, and kill it if it cannot shut down.
    if ! timeout 60 tail --pid="${dockerd_pid}" -f /dev/null; then
      kill -KILL "${dockerd_pid}" 2>/dev/null || true
    fi
    wait "${dockerd_pid}" 2>/dev/null || true
  fi
  # A dockerd that died first (killed with the run) leaves its containers'
  # shims holding their mounts: end them, then unmount what is left.
  pkill -KILL -f "containerd-shim.* -address ${RUN_DIR}/" 2>/dev/null || true
  local m
  for m in $(awk -v a="${DATA_ROOT}" -v b="${RUN_DIR}" 'index($2, a) == 1 || index($2, b) == 1 {print $2}' /proc/self/mounts | sort -r); do
    umount -l "${m}" 2>/dev/null || true
  done
  rm -rf "${DATA_ROOT}" "${work}" "${RUN_DIR}"
}
trap cleanup EXIT

echo "bench-cleanup: building podspawn"
go build -o "${work}/podspawn" ./cmd

# A dockerd left by a run that was killed holds the paths; stop it first.
if [[ -f "${RUN_DIR}/docker.pid" ]]; then
  stale="$(cat "${RUN_DIR}/docker.pid")"
  if [[ "$(cat "/proc/${stale}/comm" 2>/dev/null)" == dockerd ]]; then
    kill -TERM "${stale}"
    while kill -0 "${stale}" 2>/dev/null; do sleep 0.2; done # a foreign process: nothing to wait on
  fi
fi
rm -rf "${DATA_ROOT}" "${RUN_DIR:?}"/*
echo '{}' >"${RUN_DIR}/daemon.json"
# unshare --net: dockerd and its containers get a namespace with only lo.
# exec keeps one pid: the one we signal is dockerd itself.
unshare --net -- sh -c 'ip link set lo up && exec "$@"' sh dockerd \
  --config-file "${RUN_DIR}/daemon.json" --host "${HOST_SOCK}" \
  --data-root "${DATA_ROOT}" --exec-root "${RUN_DIR}/exec" --pidfile "${RUN_DIR}/docker.pid" \
  --bridge=none --iptables=false --ip-masq=false --cgroup-parent=podspawn-bench-cleanup \
  >"${work}/dockerd.log" 2>&1 &
dockerd_pid=$!
export DOCKER_HOST="${HOST_SOCK}"
for _ in $(seq 1 300); do
  if docker version >/dev/null 2>&1; then break; fi
  if ! kill -0 "${dockerd_pid}" 2>/dev/null; then
    cat "${work}/dockerd.log" >&2
    echo "bench-cleanup: the private dockerd exited during startup" >&2
    exit 1
  fi
  sleep 0.2 # polling a starting daemon
done
docker version >/dev/null

# The image: copied from the host daemon, or built (FROM scratch, no registry).
if DOCKER_HOST= docker image inspect "${IMAGE}" >/dev/null 2>&1; then
  DOCKER_HOST= docker save "${IMAGE}" | docker load >/dev/null
else
  bash hack/build-test-image.sh "${IMAGE}" >/dev/null
fi

mkdir -p "${work}/etc/keys" "${work}/state"
chmod 0700 "${work}/etc/keys" "${work}/state"
cat >"${work}/etc/config.yaml" <<EOF
auth:
  key_dir: ${work}/etc/keys
defaults:
  image: ${IMAGE}
  shell: /bin/sh
state:
  db_path: ${work}/state/state.db
  lock_dir: ${work}/state/locks
  homes_dir: ${work}/state/homes
  projects_dir: ${work}/state/projects
cleanup:
  orphan_min_age: 0s
projects_file: ${work}/etc/projects.yaml
EOF
# In dockerd's network namespace: a cleanup pass keeps podspawn's host
# access rules in line with the config, and they must land in the private
# namespace, never in the host's firewall.
podspawn() { nsenter --net="/proc/${dockerd_pid}/ns/net" "${work}/podspawn" --config "${work}/etc/config.yaml" "$@"; }
# The first pass creates the database, so the timed passes do not.
podspawn cleanup >/dev/null
instance="$(sqlite3 "${work}/state/state.db" "SELECT value FROM meta WHERE key = 'instance_id'")"
cleanup_args=(cleanup --allow-mass-removal)
if [[ -n "${WORKERS}" ]]; then cleanup_args+=(--workers "${WORKERS}"); fi

# make_orphans KIND N: N running containers labelled as KIND says, in parallel.
make_orphans() {
  local kind=$1 n=$2
  seq 1 "${n}" | xargs -P 8 -I{} sh -c '
    i=$1; kind=$2; inst=$3; img=$4
    set -- --label managed-by=podspawn
    if [ "${kind}" = user ]; then
      set -- "$@" --label podspawn.user="bench${i}" --label podspawn.session="bench${i}s" \
        --label podspawn.role=session --label podspawn.instance="${inst}"
    fi
    docker run -d --network none --name "podspawn-bench${i}" "$@" "${img}" sleep 3600 >/dev/null' \
    sh {} "${kind}" "${instance}" "${IMAGE}"
  local got
  got="$(docker ps -q --filter label=managed-by=podspawn | wc -l)"
  if [[ "${got}" != "${n}" ]]; then
    echo "bench-cleanup: ${got} running orphans, want ${n}" >&2
    exit 1
  fi
}

assert_gone() {
  local left
  left="$(docker ps -aq | wc -l)"
  if [[ "${left}" != 0 ]]; then
    docker ps -a >&2
    echo "bench-cleanup: $1 left ${left} containers" >&2
    exit 1
  fi
}

now() { echo "${EPOCHREALTIME}"; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

# time_podspawn KIND N: create N orphans, print the seconds one cleanup pass takes.
time_podspawn() {
  make_orphans "$1" "$2"
  local t0 t1
  t0="$(now)"
  if ! podspawn "${cleanup_args[@]}" >"${work}/cleanup.out" 2>&1; then
    cat "${work}/cleanup.out" >&2
    echo "bench-cleanup: podspawn cleanup failed" >&2
    exit 1
  fi
  t1="$(now)"
  assert_gone "podspawn cleanup"
  secs "${t0}" "${t1}"
}

# time_docker KIND N: create N orphans, print the seconds one docker rm -f of them takes.
time_docker() {
  make_orphans "$1" "$2"
  local t0 t1 ids
  mapfile -t ids < <(docker ps -aq)
  t0="$(now)"
  docker rm -f "${ids[@]}" >/dev/null
  t1="$(now)"
  assert_gone "docker rm -f"
  secs "${t0}" "${t1}"
}

echo "bench-cleanup: dockerd $(docker version -f '{{.Server.Version}}'), $(nproc) cores, podspawn ${cleanup_args[*]}"
IFS=, read -r -a sizes <<<"${SIZES}"
IFS=, read -r -a kinds <<<"${KINDS}"
summary=()
for n in "${sizes[@]}"; do
  for kind in "${kinds[@]}"; do
    # One untimed round of each first: the first removals in a fresh daemon
    # (and the first pass over a new size) pay cold paths that would
    # otherwise all land on whichever goes first in round 1.
    time_podspawn "${kind}" "${n}" >/dev/null
    time_docker "${kind}" "${n}" >/dev/null
    worst=0
    ratios=()
    for round in $(seq 1 "${ROUNDS}"); do
      load="$(cut -d' ' -f1 /proc/loadavg)"
      # Odd rounds time podspawn first, even rounds docker first, so that
      # neither always follows the other's removal or creation.
      if ((round % 2 == 1)); then
        pod="$(time_podspawn "${kind}" "${n}")"
        cli="$(time_docker "${kind}" "${n}")"
        first=podspawn
      else
        cli="$(time_docker "${kind}" "${n}")"
        pod="$(time_podspawn "${kind}" "${n}")"
        first=docker
      fi
      ratio="$(awk -v p="${pod}" -v c="${cli}" 'BEGIN { printf "%.2f", p / c }')"
      worst="$(awk -v a="${worst}" -v b="${ratio}" 'BEGIN { print (b > a) ? b : a }')"
      ratios+=("${ratio}")
      printf 'N=%-4s %-4s round %s: podspawn cleanup %6ss  docker rm -f %6ss  ratio %s  (%s first; load %s)\n' \
        "${n}" "${kind}" "${round}" "${pod}" "${cli}" "${ratio}" "${first}" "${load}"
    done
    median="$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')"
    summary+=("N=${n} ${kind}: median ratio ${median}, worst ${worst} over ${ROUNDS} rounds")
  done
done
echo
printf '%s\n' "${summary[@]}"
