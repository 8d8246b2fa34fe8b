#!/usr/bin/env bash
# Enforce the reconcile rule: reconcile/ is pure decision logic. It must not
# reach Docker, the database, the network, processes, logging or the wall clock
# (time and effects come in as arguments), so it stays deterministic and
# testable without any setup.
set -o errexit -o nounset -o pipefail
SCRIPT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${SCRIPT_ROOT}"

if [[ ! -d reconcile ]]; then
  echo "verify-imports: ${SCRIPT_ROOT}/reconcile does not exist; nothing to check is an error" >&2
  exit 1
fi

failed=0

# importers PATTERN PKG...: names the direct importers of each PKG in the
# dependency graph of PATTERN, so the offending import is easy to find.
importers() {
  local graph pkg
  graph="$(go list -deps -f '{{.ImportPath}}:{{range .Imports}} {{.}}{{end}}' "$1")"
  shift
  for pkg in "$@"; do
    grep -F " ${pkg}" <<<"${graph}" | awk -v p="${pkg}" '{for (i = 2; i <= NF; i++) if ($i == p) print "    " p " imported by " substr($1, 1, length($1) - 1)}' >&2
  done
}

# Packages forbidden anywhere in the transitive (non-test) dependency graph.
# A package matches itself and its subpackages (net/http/httptrace, ...).
forbidden='^(github\.com/docker|github\.com/jmoiron/sqlx|github\.com/mattn/go-sqlite3|net/http|os/exec|database/sql|context|github\.com/go-logr|go\.uber\.org/zap)(/|$)'
if ! deps="$(go list -deps ./reconcile/...)"; then
  echo "verify-imports: 'go list -deps ./reconcile/...' failed (see above)" >&2
  exit 1
fi
if bad="$(grep -E "${forbidden}" <<<"${deps}")"; then
  echo "verify-imports: reconcile/ depends on forbidden packages:" >&2
  sed 's/^/  /' <<<"${bad}" >&2
  importers ./reconcile/... ${bad}
  failed=1
fi

# "os" and "log" are dependencies of fmt, so the graph check cannot catch
# direct use; scan the source. Comment-only lines are ignored.
mapfile -d '' files < <(find reconcile -name testdata -prune -o -name '*.go' ! -name '*_test.go' -type f -print0)
if ((${#files[@]} > 0)); then
  uses='time\.(Now|Since|Until)\(|(^|[^[:alnum:]_.])os\.'
  imports='^[[:space:]]*(import[[:space:]]+)?([[:alnum:]_.]+[[:space:]]+)?"(os|context|log)"'
  if bad="$(grep -nHE -e "${uses}" -e "${imports}" "${files[@]}" | grep -vE '^[^:]+:[0-9]+:[[:space:]]*//')"; then
    echo "verify-imports: reconcile/ uses the clock, os, context or log directly:" >&2
    sed 's/^/  /' <<<"${bad}" >&2
    failed=1
  fi
fi

# The runtime seam: cmd/ and controller/ reach the container runtime only
# through podspawn's own interfaces (controller.Lister, actions.Executor,
# ...). The runtime's implementations live in sub-packages
# (observed/dockerobs, actions/dockeract, actions/dockerexec for Docker;
# observed/k8sobs, actions/k8sact for Kubernetes); only the wiring in
# cmd/main.go imports them, the Docker client or the Kubernetes API
# clients. controller/ may use client-go's workqueue: it is a queue, not
# a client.
mapfile -d '' seam < <(find cmd controller -name testdata -prune -o -name '*.go' ! -name '*_test.go' ! -path cmd/main.go -type f -print0)
if ((${#seam[@]} > 0)); then
  runtime_pkgs='"(github\.com/docker/[^"]*|k8s\.io/api/[^"]*|k8s\.io/client-go/(kubernetes|rest|informers|tools|transport|dynamic)[^"]*|github\.com/podspawn/podspawn/(observed/dockerobs|observed/k8sobs|actions/dockeract|actions/dockerexec|actions/k8sact))"'
  if bad="$(grep -nE "${runtime_pkgs}" "${seam[@]}")"; then
    echo "verify-imports: only cmd/main.go may import the Docker or Kubernetes clients or the runtime packages in cmd/ and controller/; use the interfaces in controller/ and actions/:" >&2
    sed 's/^/  /' <<<"${bad}" >&2
    failed=1
  fi
fi
if ! deps="$(go list -deps ./controller/...)"; then
  echo "verify-imports: 'go list -deps ./controller/...' failed (see above)" >&2
  exit 1
fi
if bad="$(grep -E '^(github\.com/docker|k8s\.io/api|k8s\.io/client-go/(kubernetes|rest|informers|tools|transport))(/|$)' <<<"${deps}")"; then
  echo "verify-imports: controller/ depends on the Docker or Kubernetes clients (through an import of a runtime package):" >&2
  sed 's/^/  /' <<<"${bad}" | head -5 >&2
  failed=1
fi

# The binary does not link client-go's full clientset, informer factory,
# listers or apply configurations (they register every API group of
# Kubernetes at package init), nor its generic typed clients and fakes
# (gentype links client-go/testing, and through it the OpenAPI and
# protobuf machinery). Each podspawn process paid for them before main,
# auth-keys twice per SSH login: 93 against 43 MB of binary, 21 against
# 12 ms to print the version. observed/k8sobs/kubeapi is the client.
if ! deps="$(go list -deps ./cmd)"; then
  echo "verify-imports: 'go list -deps ./cmd' failed (see above)" >&2
  exit 1
fi
if bad="$(grep -E '^k8s\.io/client-go/(kubernetes|informers|listers|applyconfigurations|discovery|dynamic|gentype|testing)(/|$)' <<<"${deps}")"; then
  echo "verify-imports: the podspawn binary links client-go's clientset or its kin; use observed/k8sobs/kubeapi:" >&2
  sed 's/^/  /' <<<"${bad}" | head -5 >&2
  importers ./cmd $(head -3 <<<"${bad}")
  failed=1
fi

if ((failed)); then
  exit 1
fi
echo "verify-imports: ok"
