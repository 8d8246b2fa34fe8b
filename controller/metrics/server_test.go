package metrics

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/util/workqueue"
)

func get(t *testing.T, srv *httptest.Server, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// populated returns metrics with every family holding a sample.
func populated(status Status) *Metrics {
	m := New(func() Status { return status })
	m.ObserveAction("remove-container", "grace-expired", "changed", nil)
	m.ObserveAction("remove-network", "grace-expired", "", errors.New("in use"))
	now := time.Now()
	m.ObserveDestroyed("grace-expired", now.Add(-1500*time.Millisecond), now)
	m.ObserveDestroyed("orphan-no-session", time.Time{}, now)
	m.ObservePass(PassResync, 20*time.Millisecond, nil)
	m.ObservePass(PassReconcile, 5*time.Millisecond, errors.New("x"))
	m.ObserveHeld(2)
	m.SetHeldLastResync(2)
	m.ObserveDockerRequest("containers.list", 3*time.Millisecond)
	q := workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "podspawn", MetricsProvider: m.QueueMetrics()})
	q.Add("alice")
	k, _ := q.Get()
	q.AddRateLimited(k)
	q.Done(k)
	q.ShutDown()
	return m
}

func TestHandler(t *testing.T) {
	h := NewHealth(time.Minute, time.Now)
	srv := httptest.NewServer(Handler(populated(full), h))
	defer srv.Close()

	code, body := get(t, srv, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{
		"podspawn_sessions_total 3\n",
		"podspawn_database_up 1\n",
		`podspawn_actions_total{kind="remove-container",outcome="changed",reason="grace-expired"} 1` + "\n",
		`podspawn_actions_total{kind="remove-network",outcome="failed",reason="grace-expired"} 1` + "\n",
		`podspawn_sessions_destroyed_total{reason="grace-expired"} 1` + "\n",
		`podspawn_deadline_lateness_seconds_bucket{reason="grace-expired",le="2.5"} 1` + "\n",
		`podspawn_pass_errors_total{type="reconcile"} 1` + "\n",
		"podspawn_held_removals_total 2\n",
		`podspawn_docker_request_duration_seconds_count{operation="containers.list"} 1` + "\n",
		`workqueue_adds_total{name="podspawn"} 1` + "\n",
		`workqueue_retries_total{name="podspawn"} 1` + "\n",
		`workqueue_depth{name="podspawn"} 0` + "\n",
		`workqueue_work_duration_seconds_count{name="podspawn"} 1` + "\n",
		"go_goroutines ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(body, `reason="orphan-no-session",le=`) {
		t.Errorf("lateness observed for a removal without a deadline")
	}

	if code, body := get(t, srv, "/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if code, body := get(t, srv, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "no resync") {
		t.Errorf("/readyz before a resync = %d %q, want 503", code, body)
	}
	h.Database(nil)
	h.Docker(nil)
	h.Stream(true)
	if code, body := get(t, srv, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz after a resync = %d %q, want 200", code, body)
	}
}

// promtool (Debian's prometheus package; hack/ensure-packages.sh) lints
// the exposition: names, help, units, counter suffixes.
func TestPromtoolCheckMetrics(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is not installed: run hack/ensure-packages.sh (it installs Debian's prometheus package, which ships promtool)")
	}
	for name, s := range map[string]Status{
		"all up":      full,
		"docker down": {Total: 1, DockerErr: errors.New("refused")},
	} {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(Handler(populated(s), nil))
			defer srv.Close()
			_, body := get(t, srv, "/metrics")
			promtoolCheck(t, promtool, body)
		})
	}
}

// contractLint is what promtool reports about the names of the
// documented `status --prometheus` contract, which predate the daemon and
// are kept for the dashboards built on them: two gauges named _total.
// Anything else promtool says fails the check. test/harness has the same
// list for the end-to-end check.
var contractLint = map[string]bool{
	`podspawn_connections_total non-counter metrics should not have "_total" suffix`: true,
	`podspawn_sessions_total non-counter metrics should not have "_total" suffix`:    true,
}

// promtoolCheck runs promtool check metrics on text: it must parse (exit
// 0, or 3 for lint findings) and lint clean except for contractLint.
func promtoolCheck(t *testing.T, promtool, text string) {
	t.Helper()
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 3) {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line != "" && !contractLint[strings.TrimSpace(line)] {
			t.Errorf("promtool check metrics: %s", line)
		}
	}
}
