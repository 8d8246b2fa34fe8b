#!/usr/bin/env bash
# Fail, listing the offenders, if any Go file is not gofmt-clean.
set -o errexit -o nounset -o pipefail
SCRIPT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${SCRIPT_ROOT}"

# find rather than git ls-files so files not yet committed are checked too;
# testdata may hold deliberately malformed Go, which the go tool ignores as well.
bad="$(find . \( -path ./vendor -o -path ./.git -o -name testdata \) -prune -o -name '*.go' -type f -print0 |
  xargs -0 -r gofmt -l)"

if [[ -n "${bad}" ]]; then
  echo "verify-gofmt: these files need 'gofmt -w':" >&2
  echo "${bad}" >&2
  exit 1
fi
echo "verify-gofmt: ok"
