#!/usr/bin/env bash
# Bring a fresh machine to the state the tests expect. Each step is idempotent,
# so this is cheap on a machine that is already set up.
set -o errexit -o nounset -o pipefail
SCRIPT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

echo "ci-setup: packages"
"${SCRIPT_ROOT}/hack/ensure-packages.sh"
echo "ci-setup: docker daemon"
"${SCRIPT_ROOT}/hack/ensure-docker.sh"
echo "ci-setup: test image"
"${SCRIPT_ROOT}/hack/build-test-image.sh"
echo "ci-setup: done"
