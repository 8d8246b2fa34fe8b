#!/usr/bin/env bash
# Benchmark reconcile.Compute (pure CPU and memory, no Docker): 1k and 10k
# sessions with short keys, and 10k project sessions whose users share a
# long prefix (goal: under 50 ms at 10k). Each case runs COUNT times; the script
# prints the fastest, median and slowest time per call and the memory per
# call, with the load average, since a shared machine makes single runs
# noisy.
#
#   hack/bench-compute.sh
#   COUNT=20 hack/bench-compute.sh
set -o errexit -o nounset -o pipefail
SCRIPT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${SCRIPT_ROOT}"

COUNT="${COUNT:-10}"
out="$(mktemp)"
trap 'rm -f "${out}"' EXIT

echo "bench-compute: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), ${COUNT} runs per case"
go test ./reconcile/ -run '^$' -bench '^BenchmarkCompute' -benchmem -count "${COUNT}" >"${out}" ||
  { cat "${out}" >&2; exit 1; }
awk '
  /^Benchmark/ {
    name = $1; sub(/-[0-9]+$/, "", name); sub(/^Benchmark/, "", name)
    t[name] = t[name] " " $3; mem[name] = $5; allocs[name] = $7
    if (!(name in seen)) { seen[name] = 1; order[++n] = name }
  }
  END {
    printf "%-26s %10s %10s %10s %10s %8s\n", "case", "fastest", "median", "slowest", "MB/call", "allocs"
    for (i = 1; i <= n; i++) {
      name = order[i]
      k = split(substr(t[name], 2), v, " ")
      for (a = 1; a <= k; a++) for (b = a + 1; b <= k; b++) if (v[b] + 0 < v[a] + 0) { x = v[a]; v[a] = v[b]; v[b] = x }
      med = (k % 2) ? v[(k + 1) / 2] : (v[k / 2] + v[k / 2 + 1]) / 2
      printf "%-26s %8.1fms %8.1fms %8.1fms %10.1f %8d\n", name, v[1] / 1e6, med / 1e6, v[k] / 1e6, mem[name] / 1e6, allocs[name]
    }
  }' "${out}"
echo "bench-compute: load after $(cut -d' ' -f1-3 /proc/loadavg)"
