#!/usr/bin/env bash
# Time "ssh user@host true" through a real sshd, sudo and podspawn spawn
# with runtime: kubernetes: a new session (a Pod created) and a re-attach,
# next to the floors measured in the same round: ssh to a plain account, a
# bare Pod created until Running plus an exec of true, and a bare exec of
# true through the API server; 20 rounds (PODSPAWN_BENCH_ROUNDS), and what podspawn adds over its
# floors round by round. A bare exec into the session Pod itself is
# measured too: its security profile (seccomp RuntimeDefault, which runc
# loads for each exec) makes every exec into it slower than into a bare Pod. The benchmark starts the test
# cluster (hack/k8s-up.sh) and tears it down if it was not up. Needs root,
# Docker (for the busybox test image) and openssh-server.
set -o errexit -o nounset -o pipefail
SCRIPT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${SCRIPT_ROOT}"

bash hack/ci-setup.sh >/dev/null
out="$(mktemp)"
trap 'rm -f "${out}"' EXIT
if ! PODSPAWN_BENCH_ROUNDS="${PODSPAWN_BENCH_ROUNDS:-20}" go test -count=1 -run '^$' -bench '^BenchmarkKubernetesSSHConnect$' -benchtime 1x -v ./test/ssh/ >"${out}" 2>&1; then
  cat "${out}" >&2
  echo "bench-k8s: benchmark failed" >&2
  exit 1
fi
grep -E 'median|^BenchmarkKubernetesSSHConnect|test cluster up' "${out}"
