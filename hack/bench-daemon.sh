#!/usr/bin/env bash
# Benchmark the cleanup daemon (podspawn cleanup --daemon) against a private
# dockerd that the test package starts and removes (the shared daemon is
# never touched; 500 session networks would not fit its address pools).
#
#   hack/bench-daemon.sh                 # both benchmarks
#   hack/bench-daemon.sh GraceLatency    # deadline -> container removal, 20 sessions
#   hack/bench-daemon.sh Idle            # CPU and RSS of an idle daemon, 500 sessions
#   PODSPAWN_BENCH_SESSIONS=100 hack/bench-daemon.sh Idle
#   PODSPAWN_BENCH_WORKERS=16 hack/bench-daemon.sh GraceLatency/burst
#
# Reported metrics: median-ms / worst-ms / best-ms (grace deadline to the
# container's destroy event), cpu-% / rss-MB / peak-rss-MB (idle minute,
# utime+stime and VmRSS/VmHWM from /proc/<pid>).
set -o errexit -o nounset -o pipefail
SCRIPT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${SCRIPT_ROOT}"

export PATH="${PATH}:/usr/local/sbin:/usr/sbin:/sbin"
if ! command -v dockerd >/dev/null; then
  echo "bench-daemon: dockerd is not installed; run hack/ci-setup.sh" >&2
  exit 1
fi
if [[ "$(id -u)" != 0 ]]; then
  echo "bench-daemon: must run as root (it starts its own dockerd)" >&2
  exit 1
fi

pattern="BenchmarkDaemon${1:-}"
go test ./test/daemon -run '^$' -bench "${pattern}" -benchtime 1x -count 1 -timeout 90m -v
