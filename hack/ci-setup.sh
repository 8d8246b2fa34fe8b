#!/usr/bin/env bash
# Bring a fresh machine to the state the tests expect. Each step is idempotent,
# so this is cheap on a machine that is already set up.
set -o errexit -o nounset -o pipefail
SCRIPT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Go is the one prerequisite this script does not install: Debian's apt
# package is older than go.mod asks for. GOTOOLCHAIN=local reports the Go on
# PATH instead of one the go command might fetch.
want="$(awk '$1 == "go" { print $2; exit }' "${SCRIPT_ROOT}/go.mod")"
if [[ -z "${want}" ]]; then
  echo "ci-setup: no go line in ${SCRIPT_ROOT}/go.mod" >&2
  exit 1
fi
if ! command -v go >/dev/null 2>&1; then
  echo "ci-setup: go is not on PATH; install Go >= ${want} from https://go.dev/dl (Debian's apt Go is too old) and put its bin directory (e.g. /usr/local/go/bin) on PATH" >&2
  exit 1
fi
have="$(GOTOOLCHAIN=local go env GOVERSION)"
have="${have#go}"
if [[ "$(printf '%s\n%s\n' "${want}" "${have}" | sort -V | head -n1)" != "${want}" ]]; then
  echo "ci-setup: $(command -v go) is Go ${have}, go.mod needs >= ${want}; install Go from https://go.dev/dl (Debian's apt Go is too old) and put it first on PATH" >&2
  exit 1
fi

echo "ci-setup: packages"
"${SCRIPT_ROOT}/hack/ensure-packages.sh"
echo "ci-setup: docker daemon"
"${SCRIPT_ROOT}/hack/ensure-docker.sh"
echo "ci-setup: test image"
"${SCRIPT_ROOT}/hack/build-test-image.sh"
echo "ci-setup: done"
