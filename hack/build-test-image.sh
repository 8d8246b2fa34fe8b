#!/usr/bin/env bash
# Build the tiny busybox image the integration tests run containers from.
# No registry is reachable, so the image is FROM scratch around Debian's
# static busybox; `docker build` needs no network for that. The host's
# sftp-server and exactly the shared libraries it links go in too, so the
# sftp tests run the real thing.
set -o errexit -o nounset -o pipefail
SCRIPT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

IMAGE="${1:-${PODSPAWN_TEST_IMAGE:-podspawn-test:busybox}}"
BUSYBOX=/bin/busybox
SFTP_SERVER=/usr/lib/openssh/sftp-server

if ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed'; then
  echo "build-test-image: busybox-static is not installed; run ${SCRIPT_ROOT}/hack/ensure-packages.sh" >&2
  exit 1
fi
if [[ ! -x "${SFTP_SERVER}" ]]; then
  echo "build-test-image: ${SFTP_SERVER} is missing (package openssh-sftp-server); run ${SCRIPT_ROOT}/hack/ensure-packages.sh" >&2
  exit 1
fi

ctx="$(mktemp -d)"
trap 'rm -rf "${ctx}"' EXIT

cp "${BUSYBOX}" "${ctx}/busybox"

# rootfs/ mirrors absolute paths in the image: sftp-server and every
# library ldd resolves for it (the loader included; the vdso has no file).
# cp -L copies the real file behind a symlink such as libc.so.6.
libs=()
if ldd_out="$(ldd "${SFTP_SERVER}" 2>&1)"; then
  if grep -q 'not found' <<<"${ldd_out}"; then
    echo "${ldd_out}" >&2
    echo "build-test-image: ${SFTP_SERVER} links libraries that are not installed; run ${SCRIPT_ROOT}/hack/ensure-packages.sh" >&2
    exit 1
  fi
  mapfile -t libs < <(awk '$2 == "=>" && $3 ~ /^\// { print $3; next } $1 ~ /^\// { print $1 }' <<<"${ldd_out}")
elif ! grep -q 'not a dynamic executable' <<<"${ldd_out}"; then
  echo "${ldd_out}" >&2
  echo "build-test-image: ldd ${SFTP_SERVER} failed" >&2
  exit 1
fi
for f in "${SFTP_SERVER}" "${libs[@]}"; do
  mkdir -p "${ctx}/rootfs$(dirname "${f}")"
  cp -L "${f}" "${ctx}/rootfs${f}"
done

printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >"${ctx}/passwd"
printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"${ctx}/group"
cat >"${ctx}/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
COPY passwd group /etc/
COPY rootfs/ /
# /usr/bin/env so "#!/usr/bin/env sh" scripts work; /tmp must be sticky and
# world-writable like on a real distro.
RUN mkdir -p /usr/bin /home /root /tmp && ln -s /bin/busybox /usr/bin/env && chmod 1777 /tmp
CMD ["/bin/sleep", "infinity"]
DOCKERFILE

busybox_sha="$(sha256sum "${BUSYBOX}" | cut -d' ' -f1)"
sftp_sha="$(sha256sum "${SFTP_SERVER}" | cut -d' ' -f1)"
# The recipe hash covers the name and content of every file in the build
# context (Dockerfile, busybox, passwd, group, sftp-server and its
# libraries), so editing this script or upgrading busybox, openssh or libc
# rebuilds, and anything else is a no-op.
recipe_sha="$(cd "${ctx}" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"

current="$(docker image inspect -f '{{index .Config.Labels "podspawn.recipe.sha256"}}' "${IMAGE}" 2>/dev/null || true)"
if [[ "${current}" == "${recipe_sha}" ]]; then
  echo "build-test-image: ${IMAGE} is up to date" >&2
  exit 0
fi

# The legacy builder works offline and does not need the buildx plugin,
# which the Docker CLI on these machines may lack.
# Its output (including a deprecation notice) is only shown on failure.
# --network none: the RUN steps need no network, and so the build does not
# depend on the default bridge (docker0), which can vanish in sandboxes.
# --force-rm: a failed step leaves no intermediate container behind.
if ! out="$(DOCKER_BUILDKIT=0 docker build --network none --force-rm \
  --label "podspawn.busybox.sha256=${busybox_sha}" \
  --label "podspawn.sftp-server.sha256=${sftp_sha}" \
  --label "podspawn.recipe.sha256=${recipe_sha}" \
  --tag "${IMAGE}" "${ctx}" 2>&1)"; then
  echo "${out}" >&2
  echo "build-test-image: docker build of ${IMAGE} failed" >&2
  exit 1
fi
echo "build-test-image: built ${IMAGE}" >&2
