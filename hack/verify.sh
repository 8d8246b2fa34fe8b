#!/usr/bin/env bash
# Run every static check, reporting all failures rather than stopping at the first.
set -o errexit -o nounset -o pipefail
SCRIPT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${SCRIPT_ROOT}"

failed=()
"${SCRIPT_ROOT}/hack/verify-gofmt.sh" || failed+=(gofmt)
go vet ./... || failed+=("go vet")
"${SCRIPT_ROOT}/hack/verify-imports.sh" || failed+=(imports)

if ((${#failed[@]} > 0)); then
  echo "verify: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "verify: ok"
