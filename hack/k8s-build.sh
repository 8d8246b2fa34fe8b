#!/usr/bin/env bash
# Build what the test cluster of hack/k8s-up.sh runs, offline but for the Go
# module proxy, and cache it by version outside the checkout:
#   - kube-apiserver, kubelet, kube-controller-manager, kube-scheduler and
#     kubectl from k8s.io/kubernetes (the version hack/k8s/go.mod pins), plus
#     hack/k8s/smoke, into /var/cache/podspawn-k8s/<version>/bin;
#   - two images with no registry and no Docker: k8s.test/pause:1 (the pod
#     sandbox, a static C pause) and k8s.test/busybox:1 (Debian's static
#     busybox), into /var/cache/podspawn-k8s/images.
# A machine that already has them for the same inputs skips the build (a cold
# build takes about 11 minutes on 2 cores, 2.7 GB of memory, 4 GB of disk).
#
#   k8s-build.sh                 build what is missing or stale; print the bin directory
#   k8s-build.sh --pin VERSION   point hack/k8s/go.mod at another k8s.io/kubernetes (e.g. v1.37.2)
set -o errexit -o nounset -o pipefail
SCRIPT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=hack/k8s/lib.sh
source "${SCRIPT_ROOT}/hack/k8s/lib.sh"

export GOFLAGS="-modcacherw -buildvcs=false" GOTOOLCHAIN=local CGO_ENABLED=0
BINARIES=(kube-apiserver kubelet kube-controller-manager kube-scheduler kubectl)

# pin VERSION: rewrite hack/k8s/go.mod to require k8s.io/kubernetes VERSION.
# Its go.mod replaces the staging modules (k8s.io/api, client-go, ...) with
# ./staging/... paths, which a module that requires it cannot follow; pin
# each to the matching tagged release (v1.37.2 -> v0.37.2) instead.
pin() {
  local v=$1 gomod pkgs=() b
  [[ "${v}" =~ ^v1\.[0-9]+\.[0-9]+$ ]] || { echo "k8s-build: --pin wants a version like v1.37.2, not '${v}'" >&2; exit 1; }
  gomod="$(go mod download -json "k8s.io/kubernetes@${v}" | jq -r .GoMod)"
  cd "${K8S_MODULE_DIR}"
  {
    echo "// The Kubernetes binaries hack/k8s-build.sh builds for the test cluster, and"
    echo "// the smoke test. Its own module, so the project's go.mod stays free of"
    echo "// k8s.io/kubernetes. Regenerate with: hack/k8s-build.sh --pin VERSION"
    echo "module github.com/podspawn/podspawn/hack/k8s"
    echo
    awk '$1 == "go" || $1 == "godebug" { print; print "" }' "${gomod}"
    echo "require k8s.io/kubernetes ${v}"
    echo
    echo "replace ("
    awk -v sv="v0.${v#v1.}" '$2 == "=>" && $3 ~ /^\.\/staging\// { print "\t" $1 " => " $1 " " sv }' "${gomod}"
    echo ")"
  } >go.mod
  rm -f go.sum
  for b in "${BINARIES[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/${b}@${v}"); done
  go get -tool "${pkgs[@]}"
  go mod tidy
  echo "k8s-build: hack/k8s/go.mod now pins k8s.io/kubernetes ${v}; commit go.mod and go.sum" >&2
}

if [[ "${1:-}" == "--pin" ]]; then
  pin "${2:?usage: k8s-build.sh --pin VERSION}"
  exit 0
fi
if (($# > 0)); then
  echo "usage: k8s-build.sh [--pin VERSION]" >&2
  exit 2
fi

command -v go >/dev/null || { echo "k8s-build: go is not on PATH" >&2; exit 1; }
k8s_ensure_packages k8s-build gcc libc6-dev busybox-static jq file

mkdir -p "${K8S_CACHE}/${K8S_VERSION}" "${K8S_IMAGES}" "${K8S_EXTRA_IMAGES}"
# One build at a time: a second caller waits, then finds the cache filled.
exec 9>"${K8S_CACHE}/.build.lock"
if ! flock -n 9; then
  echo "k8s-build: another build holds ${K8S_CACHE}/.build.lock; waiting" >&2
  flock 9
fi

# stamp FILE...: a hash of the inputs; a cached output whose stamp differs is rebuilt.
stamp() { { go env GOVERSION; cat "$@"; } | sha256sum | cut -d' ' -f1; }

# ---------- Kubernetes binaries ----------
minor="$(cut -d. -f2 <<<"${K8S_VERSION}")"
ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X ${p}.gitVersion=${K8S_VERSION} -X ${p}.gitMajor=1 -X ${p}.gitMinor=${minor} -X ${p}.gitTreeState=clean"
done
# the module versions the build selects, not go.mod's text: tidying it rebuilds nothing
want="$(stamp <(cd "${K8S_MODULE_DIR}" && go list -m all) <(echo "${ldflags} ${BINARIES[*]}"))"
if [[ "$(cat "${K8S_BIN}/.stamp" 2>/dev/null)" == "${want}" ]]; then
  echo "k8s-build: kubernetes ${K8S_VERSION} binaries cached in ${K8S_BIN}" >&2
else
  echo "k8s-build: building kubernetes ${K8S_VERSION} (${BINARIES[*]}); about 11 minutes cold" >&2
  start=${SECONDS}
  # Into a fresh directory, swapped in whole: a killed build leaves no half-filled bin/.
  rm -rf "${K8S_BIN}.new" "${K8S_BIN}.old"
  mkdir -p "${K8S_BIN}.new"
  pkgs=()
  for b in "${BINARIES[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/${b}"); done
  (cd "${K8S_MODULE_DIR}" && go build -trimpath -ldflags "${ldflags}" -o "${K8S_BIN}.new/" "${pkgs[@]}")
  echo "${want}" >"${K8S_BIN}.new/.stamp"
  if [[ -d "${K8S_BIN}" ]]; then mv "${K8S_BIN}" "${K8S_BIN}.old"; fi
  mv "${K8S_BIN}.new" "${K8S_BIN}"
  rm -rf "${K8S_BIN}.old"
  echo "k8s-build: built kubernetes ${K8S_VERSION} in $((SECONDS - start))s into ${K8S_BIN}" >&2
fi

# ---------- smoke (hack/k8s/smoke) ----------
want="$(stamp <(cd "${K8S_MODULE_DIR}" && go list -m all) "${K8S_MODULE_DIR}"/smoke/*.go)"
if [[ "$(cat "${K8S_BIN}/.smoke.stamp" 2>/dev/null)" != "${want}" || ! -x "${K8S_BIN}/smoke" ]]; then
  start=${SECONDS}
  (cd "${K8S_MODULE_DIR}" && go build -trimpath -ldflags "-s -w" -o "${K8S_BIN}/smoke.new" ./smoke)
  mv "${K8S_BIN}/smoke.new" "${K8S_BIN}/smoke"
  echo "${want}" >"${K8S_BIN}/.smoke.stamp"
  echo "k8s-build: built smoke in $((SECONDS - start))s" >&2
fi

# ---------- images ----------
# mkimage NAME:TAG ROOTFS OUT.tar CONFIG_JSON: a single-layer docker-archive
# tar, which `ctr images import` and `docker load` both read. Reproducible:
# sorted entries, owner 0, mtime 0.
mkimage() {
  local ref=$1 rootfs=$2 out=$3 cfg=$4 w diff c
  w="$(mktemp -d)"
  tar --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 -C "${rootfs}" -cf "${w}/layer.tar" .
  diff="$(sha256sum "${w}/layer.tar" | cut -d' ' -f1)"
  printf '{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z","config":%s,"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "${cfg}" "${diff}" >"${w}/config.json"
  c="$(sha256sum "${w}/config.json" | cut -d' ' -f1)"
  mkdir "${w}/${diff}"
  mv "${w}/layer.tar" "${w}/${diff}/layer.tar"
  mv "${w}/config.json" "${w}/${c}.json"
  printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]' "${c}" "${ref}" "${diff}" >"${w}/manifest.json"
  tar --numeric-owner --owner=0 --group=0 -C "${w}" -cf "${out}.new" manifest.json "${c}.json" "${diff}"
  mv "${out}.new" "${out}"
  rm -rf "${w}"
}

BUSYBOX=/bin/busybox
if ! file -L "${BUSYBOX}" | grep -q 'statically linked'; then
  echo "k8s-build: ${BUSYBOX} is not the static busybox (package busybox-static)" >&2
  exit 1
fi
PAUSE_CFG='{"Entrypoint":["/pause"],"User":"65535:65535"}'
BUSYBOX_CFG='{"Cmd":["sh"],"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}'
# The recipe hash covers this script (how the rootfs is laid out) and its inputs.
want="$(stamp "${BASH_SOURCE[0]}" "${K8S_MODULE_DIR}/pause/pause.c" "${BUSYBOX}" <(gcc --version))"
if [[ "$(cat "${K8S_IMAGES}/.stamp" 2>/dev/null)" == "${want}" && -f "${K8S_IMAGES}/pause.tar" && -f "${K8S_IMAGES}/busybox.tar" ]]; then
  echo "k8s-build: images cached in ${K8S_IMAGES}" >&2
else
  w="$(mktemp -d)"
  trap 'rm -rf "${w}"' EXIT
  mkdir -p "${w}/pause"
  gcc -Os -static -o "${w}/pause/pause" "${K8S_MODULE_DIR}/pause/pause.c"
  strip "${w}/pause/pause"
  mkimage k8s.test/pause:1 "${w}/pause" "${K8S_IMAGES}/pause.tar" "${PAUSE_CFG}"

  bb="${w}/busybox"
  mkdir -p "${bb}/bin" "${bb}/usr/bin" "${bb}/etc" "${bb}/root" "${bb}/home" "${bb}/tmp"
  cp "${BUSYBOX}" "${bb}/bin/busybox"
  for a in $("${BUSYBOX}" --list); do
    [[ "${a}" == busybox ]] || ln -s busybox "${bb}/bin/${a}"
  done
  ln -s /bin/busybox "${bb}/usr/bin/env"
  chmod 1777 "${bb}/tmp"
  printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >"${bb}/etc/passwd"
  printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"${bb}/etc/group"
  mkimage k8s.test/busybox:1 "${bb}" "${K8S_IMAGES}/busybox.tar" "${BUSYBOX_CFG}"
  echo "${want}" >"${K8S_IMAGES}/.stamp"
  echo "k8s-build: built images k8s.test/pause:1 and k8s.test/busybox:1 into ${K8S_IMAGES}" >&2
fi

echo "${K8S_BIN}"
