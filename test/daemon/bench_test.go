package daemon_test

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/test/harness"
)

// Benchmarks of the daemon; hack/bench-daemon.sh runs them with
// -benchtime 1x. Each builds its own world once, so b.N is not looped.

// BenchmarkDaemonGraceLatency measures, for 20 sessions, the time from a
// grace deadline to the removal of the session container (Docker's destroy
// event), with deadlines spread out and with all 20 at once.
func BenchmarkDaemonGraceLatency(b *testing.B) {
	for _, burst := range []bool{false, true} {
		name := "staggered"
		if burst {
			name = "burst"
		}
		b.Run(name, func(b *testing.B) { graceLatency(b, 20, burst) })
	}
}

func graceLatency(b *testing.B, n int, burst bool) {
	e := newDmEnv(b, 2*time.Second)
	var keys []desired.SessionKey
	var helpers []*helper
	for i := 0; i < n; i++ {
		k := desired.SessionKey{User: uniq("dmbl")}
		h := startHelper(b)
		e.seed(k, h)
		keys, helpers = append(keys, k), append(helpers, h)
	}
	var extra []string
	if w := os.Getenv("PODSPAWN_BENCH_WORKERS"); w != "" {
		extra = []string{"--workers", w}
	}
	d := e.startDaemon(extra...)
	harness.Eventually(b, 5*time.Minute, "all sessions to run", func() bool {
		for _, k := range keys {
			if !e.running(k) {
				return false
			}
		}
		return true
	})

	// Removal times come from Docker's own events.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := filters.NewArgs(filters.Arg("type", "container"), filters.Arg("event", "destroy"),
		filters.Arg("label", observed.LabelInstance+"="+e.InstanceID()))
	msgs, errs := e.Docker.Events(ctx, events.ListOptions{Filters: f})
	var mu sync.Mutex
	removed := map[string]time.Time{}
	go func() {
		for {
			select {
			case m := <-msgs:
				mu.Lock()
				removed[m.Actor.Attributes["name"]] = time.Unix(0, m.TimeNano)
				mu.Unlock()
			case <-errs:
				return
			}
		}
	}()

	st := e.store()
	defer st.Close()
	expiry := map[desired.SessionKey]time.Time{}
	record := func() {
		all, err := st.Load(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		for _, s := range all {
			if s.Status == desired.StatusGrace {
				expiry[s.Key] = s.GraceExpiry
			}
		}
	}
	b.ResetTimer()
	for _, h := range helpers {
		h.kill()
		if !burst {
			// Pacing of the scenario (deadlines 300ms apart), not synchronisation.
			deadline := time.Now().Add(300 * time.Millisecond)
			for time.Now().Before(deadline) {
				record()
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	harness.Eventually(b, 3*time.Minute, "every container to be removed", func() bool {
		record()
		mu.Lock()
		defer mu.Unlock()
		return len(removed) == n
	})
	b.StopTimer()

	var lat []time.Duration
	mu.Lock()
	for _, k := range keys {
		ex, ok := expiry[k]
		if !ok {
			b.Fatalf("%s: grace period never observed (poll too slow?)", k)
		}
		lat = append(lat, removed[desired.ContainerName(k)].Sub(ex))
	}
	mu.Unlock()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	median := (lat[n/2-1] + lat[n/2]) / 2
	b.ReportMetric(float64(median.Milliseconds()), "median-ms")
	b.ReportMetric(float64(lat[n-1].Milliseconds()), "worst-ms")
	b.ReportMetric(float64(lat[0].Milliseconds()), "best-ms")
	b.Logf("deadline to container removal, %d sessions (burst=%v): median %s, worst %s, best %s", n, burst, median, lat[n-1], lat[0])

	// The daemon's own share: deadline to its decision (the logged
	// mark-terminating line, millisecond timestamps); the rest is Docker.
	var dec []time.Duration
	for _, k := range keys {
		lines := d.lines(`"action": "mark-terminating"`, `"user": "`+k.User+`"`)
		if len(lines) == 0 {
			b.Fatalf("%s: no mark-terminating line", k)
		}
		at, err := time.Parse("2006-01-02T15:04:05.000Z0700", strings.Fields(lines[0])[0])
		if err != nil {
			b.Fatal(err)
		}
		dec = append(dec, at.Sub(expiry[k].Truncate(time.Millisecond)))
	}
	sort.Slice(dec, func(i, j int) bool { return dec[i] < dec[j] })
	b.ReportMetric(float64(((dec[n/2-1] + dec[n/2]) / 2).Milliseconds()), "decision-median-ms")
	b.ReportMetric(float64(dec[n-1].Milliseconds()), "decision-worst-ms")
	b.Logf("deadline to the daemon's decision (mark-terminating): median %s, worst %s", (dec[n/2-1]+dec[n/2])/2, dec[n-1])
	if d.term() != 0 {
		b.Error("daemon did not exit 0")
	}
}

// BenchmarkDaemonIdle measures the CPU time and memory of a daemon that
// watches PODSPAWN_BENCH_SESSIONS (default 500) running sessions, each
// with a live connection, for one minute at the production settings
// (--interval 60s, no -v).
func BenchmarkDaemonIdle(b *testing.B) {
	n := 500
	if v, err := strconv.Atoi(os.Getenv("PODSPAWN_BENCH_SESSIONS")); err == nil && v > 0 {
		n = v
	}
	e := newDmEnv(b, time.Hour)
	b.Cleanup(func() { removeQuickly(b, e) })
	h := startHelper(b)
	var keys []desired.SessionKey
	for i := 0; i < n; i++ {
		k := desired.SessionKey{User: fmt.Sprintf("dmidle%04d", i)}
		e.seed(k, h)
		keys = append(keys, k)
	}
	args := []string{"cleanup", "--daemon", "--interval", "60s"}
	// PODSPAWN_BENCH_LOG=<file> runs the daemon at -vv and saves its output.
	logPath := os.Getenv("PODSPAWN_BENCH_LOG")
	if logPath != "" {
		args = append([]string{"-vv"}, args...)
	}
	d := e.startDaemonArgs(args...)
	if logPath != "" {
		b.Cleanup(func() { os.WriteFile(logPath, []byte(d.out.String()), 0o644) })
	}
	start := time.Now()
	st := e.store()
	defer st.Close()
	harness.Eventually(b, 30*time.Minute, fmt.Sprintf("%d sessions to run", n), func() bool {
		var running int
		if err := st.DB().Get(&running, `SELECT COUNT(*) FROM sessions WHERE status = 'running'`); err != nil {
			b.Fatal(err)
		}
		return running == n
	})
	b.Logf("%d sessions created by the daemon in %s", n, time.Since(start).Round(time.Second))
	// Settled: the follow-up reconciles of the creations (Docker events,
	// database changes) are done once the daemon used at most 20ms of CPU
	// in 5s; the window alone paces this check.
	pid := d.cmd.Process.Pid
	prev, since := cpuTicks(b, pid), time.Now()
	harness.Eventually(b, 10*time.Minute, "the daemon to settle", func() bool {
		if time.Since(since) < 5*time.Second {
			return false
		}
		cur := cpuTicks(b, pid)
		quiet := cur-prev <= 2
		prev, since = cur, time.Now()
		return quiet
	})
	last := len(d.out.String())
	b.Logf("settled after %s", time.Since(start).Round(time.Second))

	cpu0, t0 := cpuTicks(b, pid), time.Now()
	b.ResetTimer()
	// The measurement window (one resync falls inside it).
	time.Sleep(time.Minute)
	b.StopTimer()
	cpu1, t1 := cpuTicks(b, pid), time.Now()
	rss, hwm := memKB(b, pid, "VmRSS:"), memKB(b, pid, "VmHWM:")
	cpuSec := float64(cpu1-cpu0) / 100 // USER_HZ is 100 on Linux
	pct := 100 * cpuSec / t1.Sub(t0).Seconds()
	b.ReportMetric(pct, "cpu-%")
	b.ReportMetric(float64(rss)/1024, "rss-MB")
	b.ReportMetric(float64(hwm)/1024, "peak-rss-MB")
	b.Logf("idle daemon with %d sessions over %s: %.2fs CPU (%.3f%%), RSS %.1f MB (peak %.1f MB); output while idle: %d bytes",
		n, t1.Sub(t0).Round(time.Second), cpuSec, pct, float64(rss)/1024, float64(hwm)/1024, len(d.out.String())-last)
	if d.term() != 0 {
		b.Error("daemon did not exit 0")
	}
}

// cpuTicks returns utime+stime of pid in clock ticks.
func cpuTicks(b *testing.B, pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	// f[0] is field 3; utime and stime are fields 14 and 15.
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
}

func memKB(b *testing.B, pid int, field string) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, field) {
			v, _ := strconv.ParseInt(strings.Fields(l)[1], 10, 64)
			return v
		}
	}
	return 0
}

// removeQuickly removes the env's objects in parallel (the harness does it
// one by one, which takes minutes for hundreds of sessions).
func removeQuickly(b *testing.B, e *dmEnv) {
	ctx := context.Background()
	f := filters.NewArgs(filters.Arg("label", observed.LabelInstance+"="+e.InstanceID()))
	cs, _ := e.Docker.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	ns, _ := e.Docker.NetworkList(ctx, network.ListOptions{Filters: f})
	work := make(chan func(), len(cs)+len(ns))
	for _, c := range cs {
		id := c.ID
		work <- func() { e.Docker.ContainerRemove(ctx, id, container.RemoveOptions{Force: true}) }
	}
	close(work)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for w := range work {
				w()
			}
		}()
	}
	wg.Wait()
	for _, n := range ns {
		e.Docker.NetworkRemove(ctx, n.ID)
	}
}
