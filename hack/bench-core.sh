#!/usr/bin/env bash
# Performance figures of the reconciling core against the local Docker daemon:
#   1. one "podspawn cleanup" pass removing ORPHANS orphan sessions (a running
#      container on its own network each, no row) versus the docker CLI
#      removing an identical set (docker rm -f <all>; docker network rm <all>),
#      for each --workers value in WORKERS with one session per user, and for
#      each value in PROJECT_WORKERS with PROJECTS sessions per user;
#   2. a steady-state pass over SESSIONS sessions: asserts exactly 3 Docker
#      list calls and no per-session call, and prints the pass's wall time.
# Everything runs through the test suite's scope proxy, so only objects the
# benchmark created are ever removed. Takes about 30 minutes on 2 cores; most
# of it is starting containers for the fleets. Figures go to stdout, each
# with the load average when it was taken (the daemon may be shared); the raw
# go test output is kept in ${OUT}.
set -o errexit -o nounset -o pipefail
SCRIPT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${SCRIPT_ROOT}"

ORPHANS="${ORPHANS:-100}"
WORKERS="${WORKERS:-1,4,8,16}"
PROJECTS="${PROJECTS:-10}"
PROJECT_WORKERS="${PROJECT_WORKERS:-4,16}"
SESSIONS="${SESSIONS:-500}"
OUT="${OUT:-$(mktemp -d)}"

bash hack/ci-setup.sh >/dev/null

echo "bench-core: docker $(docker version -f '{{.Server.Version}}'), $(nproc) cores, raw output in ${OUT}"

run_orphans() { # $1 = sessions per user, $2 = --workers values
  local log="${OUT}/orphans-per-user-$1.txt"
  echo
  echo "== ${ORPHANS} orphan sessions, $1 per user, --workers $2"
  PODSPAWN_BENCH_ORPHANS="${ORPHANS}" PODSPAWN_BENCH_WORKERS="$2" PODSPAWN_BENCH_PER_USER="$1" \
    go test -count=1 -run '^$' -bench '^BenchmarkOrphanCleanup$' -benchtime 1x -timeout 60m -v ./test/core/ >"${log}" 2>&1 ||
    { cat "${log}" >&2; echo "bench-core: orphan benchmark failed" >&2; exit 1; }
  grep -E 'removed in|^BenchmarkOrphanCleanup' "${log}" | sed -E 's/^ +bench_test.go:[0-9]+: /  /; s/; Docker API requests:$//'
  # The request mix of each run, for explaining the difference.
  awk '/removed in/{name=$2} /^ +[0-9]+  (GET|DELETE|HEAD|POST) /{printf "    %-12s %s\n", name, $0}' "${log}"
}

run_orphans 1 "${WORKERS}"
run_orphans "${PROJECTS}" "${PROJECT_WORKERS}"

echo
echo "== steady-state pass over ${SESSIONS} sessions"
log="${OUT}/steady-${SESSIONS}.txt"
PODSPAWN_CORE_SESSIONS="${SESSIONS}" go test -count=1 -run '^TestSteadyStatePassListsOncePerKind$' -timeout 60m -v ./test/core/ >"${log}" 2>&1 ||
  { cat "${log}" >&2; echo "bench-core: steady-state test failed" >&2; exit 1; }
grep -E 'created [0-9]+ sessions|steady-state pass over|^(--- |ok|PASS)' "${log}" | sed -E 's/^ +steady_test.go:[0-9]+: /  /'
