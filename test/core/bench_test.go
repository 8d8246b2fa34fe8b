package core_test

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/test/harness"
)

// BenchmarkOrphanCleanup times one podspawn cleanup pass that finds
// PODSPAWN_BENCH_ORPHANS (default 100) orphan sessions (a running container
// on its own network, no row) and
// removes them (labelled managed-by, user, project and the env's instance,
// as this controller labels what it creates), against the docker CLI removing an identical set:
// "docker rm -f <all containers>" then "docker network rm <all networks>".
// PODSPAWN_BENCH_WORKERS is a comma list of --workers values to time
// (default "4", the cleanup default); PODSPAWN_BENCH_PER_USER is how many
// of the sessions share a user (default 1), which matters because
// sessions of one user are reconciled under one lock. Both clients go through the same scope
// proxy, so neither can touch other objects on the shared daemon.
// Run it with hack/bench-core.sh (-benchtime 1x: every round builds fresh fleets).
func BenchmarkOrphanCleanup(b *testing.B) {
	n := envInt(b, "PODSPAWN_BENCH_ORPHANS", 100)
	perUser := envInt(b, "PODSPAWN_BENCH_PER_USER", 1)
	var workers []int
	for _, f := range strings.Split(envOr("PODSPAWN_BENCH_WORKERS", "4"), ",") {
		w, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || w < 1 {
			b.Fatalf("invalid PODSPAWN_BENCH_WORKERS entry %q: must be positive integers separated by commas", f)
		}
		workers = append(workers, w)
	}
	e := newCoreEnv(b, harness.Options{Cleanup: "  orphan_min_age: 0s\n"})
	orphans := func() []member {
		b.StopTimer()
		defer b.StartTimer()
		keys := fleetKeys("ctq", n, perUser)
		return e.makeFleet(keys, func(i int) map[string]string {
			// The instance label keeps other engineers' cleanup passes on this
			// shared daemon from reaping the fleet as their own orphans.
			return map[string]string{observed.LabelManagedBy: observed.ManagedByValue, observed.LabelUser: keys[i].User,
				observed.LabelProject: keys[i].Project, observed.LabelInstance: e.Instance}
		})
	}
	gone := func(ms []member) {
		b.StopTimer()
		defer b.StartTimer()
		for _, m := range ms {
			for _, ref := range []string{m.ContainerID, m.NetworkID} {
				if o, ok := e.inspect(ref); ok {
					b.Fatalf("%s survived the removal", o)
				}
			}
		}
	}

	totals := map[string]time.Duration{}
	for i := 0; i < b.N; i++ {
		for _, w := range workers {
			ms := orphans()
			e.Proxy.ResetCounts()
			load := loadAvg()
			start := time.Now()
			r := e.cleanup("--workers", strconv.Itoa(w))
			d := time.Since(start)
			if r.Code != 0 {
				b.Fatalf("podspawn cleanup: %s", fmtResult(r))
			}
			gone(ms)
			name := fmt.Sprintf("podspawn-w%d", w)
			totals[name] += d
			b.Logf("%s: %d orphan sessions (%d per user) removed in %s; load %s; peak concurrent removals %d; Docker API requests:\n%s",
				name, n, perUser, d.Round(time.Millisecond), load, e.Proxy.PeakRemovals(), harness.SummarizeCounts(e.Proxy.Counts()))
		}

		ms := orphans()
		ctrs, nets := []string{}, []string{}
		for _, m := range ms {
			ctrs, nets = append(ctrs, m.ContainerID), append(nets, m.NetworkID)
		}
		e.Proxy.ResetCounts()
		load := loadAvg()
		start := time.Now()
		rm := time.Duration(0)
		for _, args := range [][]string{append([]string{"rm", "-f"}, ctrs...), append([]string{"network", "rm"}, nets...)} {
			cmd := exec.Command("docker", args...)
			cmd.Env = append(os.Environ(), "DOCKER_HOST="+e.Proxy.Host())
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("docker %s: %v\n%s", args[0], err, out)
			}
			if rm == 0 {
				rm = time.Since(start)
			}
		}
		d := time.Since(start)
		gone(ms)
		totals["docker-cli"] += d
		b.Logf("docker-cli: %d containers + %d networks removed in %s (docker rm -f: %s, docker network rm: %s); load %s; peak concurrent removals %d; Docker API requests:\n%s",
			n, n, d.Round(time.Millisecond), rm.Round(time.Millisecond), (d - rm).Round(time.Millisecond), load, e.Proxy.PeakRemovals(), harness.SummarizeCounts(e.Proxy.Counts()))
	}
	cli := totals["docker-cli"].Seconds() / float64(b.N)
	b.ReportMetric(cli, "docker-cli-s/op")
	for _, w := range workers {
		s := totals[fmt.Sprintf("podspawn-w%d", w)].Seconds() / float64(b.N)
		b.ReportMetric(s, fmt.Sprintf("podspawn-w%d-s/op", w))
		b.ReportMetric(s/cli, fmt.Sprintf("ratio-w%d", w))
	}
}

// loadAvg is the 1-minute load average: the daemon is shared, so every
// figure is logged with how busy the machine was when it was taken.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Fields(string(b))[0]
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
