#!/usr/bin/env bash
# Time "ssh user@host true" through a real sshd, sudo and podspawn spawn:
# a new session (container created) and a re-attach, 20 runs each, next to
# the floors measured in the same run: "ssh true" to a plain account, a
# bare "docker exec <running container> true" and "docker run --rm" of the
# session image, and spawn run directly as root (no sshd, no sudo). It
# prints each median above its floor, the ratio, and whether the goal
# holds (new session: at most +350 ms over ssh + docker run; re-attach: at
# most +120 ms over ssh + docker exec). Needs root, Docker and
# openssh-server (hack/ci-setup.sh installs them).
set -o errexit -o nounset -o pipefail
SCRIPT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${SCRIPT_ROOT}"

bash hack/ci-setup.sh >/dev/null
out="$(mktemp)"
trap 'rm -f "${out}"' EXIT
if ! go test -count=1 -run '^$' -bench '^BenchmarkSSHConnect$' -benchtime 1x -v ./test/ssh/ >"${out}" 2>&1; then
  cat "${out}" >&2
  echo "bench-ssh: benchmark failed" >&2
  exit 1
fi
echo "bench-ssh: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
grep -E 'median|goal|^BenchmarkSSHConnect' "${out}"
