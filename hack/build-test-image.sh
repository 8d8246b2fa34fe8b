#!/usr/bin/env bash
# Build the tiny busybox image the integration tests run containers from.
# No registry is reachable, so the image is FROM scratch around Debian's
# static busybox; `docker build` needs no network for that.
set -o errexit -o nounset -o pipefail
SCRIPT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

IMAGE="${1:-${PODSPAWN_TEST_IMAGE:-podspawn-test:busybox}}"
BUSYBOX=/bin/busybox

if ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed'; then
  echo "build-test-image: busybox-static is not installed; run ${SCRIPT_ROOT}/hack/ensure-packages.sh" >&2
  exit 1
fi

ctx="$(mktemp -d)"
trap 'rm -rf "${ctx}"' EXIT

cp "${BUSYBOX}" "${ctx}/busybox"
printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >"${ctx}/passwd"
printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"${ctx}/group"
cat >"${ctx}/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
COPY passwd group /etc/
# /usr/bin/env so "#!/usr/bin/env sh" scripts work; /tmp must be sticky and
# world-writable like on a real distro.
RUN mkdir -p /usr/bin /home /root /tmp && ln -s /bin/busybox /usr/bin/env && chmod 1777 /tmp
CMD ["/bin/sleep", "infinity"]
DOCKERFILE

busybox_sha="$(sha256sum "${BUSYBOX}" | cut -d' ' -f1)"
# The recipe hash covers busybox and every generated file, so editing this
# script or upgrading busybox rebuilds, and anything else is a no-op.
recipe_sha="$(cd "${ctx}" && cat Dockerfile busybox passwd group | sha256sum | cut -d' ' -f1)"

current="$(docker image inspect -f '{{index .Config.Labels "podspawn.recipe.sha256"}}' "${IMAGE}" 2>/dev/null || true)"
if [[ "${current}" == "${recipe_sha}" ]]; then
  echo "build-test-image: ${IMAGE} is up to date" >&2
  exit 0
fi

# The legacy builder works offline and does not need the buildx plugin,
# which the Docker CLI on these machines may lack.
# Its output (including a deprecation notice) is only shown on failure.
if ! out="$(DOCKER_BUILDKIT=0 docker build \
  --label "podspawn.busybox.sha256=${busybox_sha}" \
  --label "podspawn.recipe.sha256=${recipe_sha}" \
  --tag "${IMAGE}" "${ctx}" 2>&1)"; then
  echo "${out}" >&2
  echo "build-test-image: docker build of ${IMAGE} failed" >&2
  exit 1
fi
echo "build-test-image: built ${IMAGE}" >&2
