#!/usr/bin/env bash
# The test command of the README and of CI: prepares the machine (packages,
# dockerd, the busybox test image), runs the static checks, then every test,
# including the end-to-end tests against the real Docker daemon and sshd,
# then the pure concurrent packages again under the race detector, then
# checks that the tests left the host's Docker as they found it.
set -o errexit -o nounset -o pipefail
SCRIPT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${SCRIPT_ROOT}"

bash hack/ci-setup.sh
bash hack/verify.sh
# The tests must leave the host as they found it: note what is there
# now, and check against it at the end.
baseline="$(mktemp)"
trap 'rm -f "${baseline}"' EXIT
bash hack/verify-host-clean.sh --record "${baseline}"
status=0
# -p 1: the end-to-end packages share one Docker daemon and one sshd
# setup; running them one package at a time keeps them from racing.
go test -count=1 -p 1 -timeout 75m "$@" ./... || status=$?
# The race detector over the packages that share work between goroutines
# and need no Docker: Compute's workers, the controller's queue, spawn's
# stream copying.
go test -count=1 -race ./reconcile/ ./controller/ ./cmd/internal/spawn/ || status=$?
# Also after failed tests, which are the likeliest to leave something.
bash hack/verify-host-clean.sh "${baseline}" || status=$?
exit "${status}"
