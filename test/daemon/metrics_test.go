package daemon_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/test/harness"
)

// freePort returns a loopback address nobody listens on right now.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// scraper reads the daemon's endpoints.
type scraper struct {
	t    *testing.T
	base string
}

func (s scraper) get(path string) (int, string) {
	s.t.Helper()
	c := http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get(s.base + path)
	if err != nil {
		s.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// metrics scrapes /metrics and parses it.
func (s scraper) metrics() (string, map[string]*dto.MetricFamily) {
	s.t.Helper()
	code, body := s.get("/metrics")
	if code != http.StatusOK {
		s.t.Fatalf("/metrics: status %d\n%s", code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		s.t.Fatalf("parsing /metrics: %v\n%s", err, body)
	}
	return body, mfs
}

// value sums the samples of family name whose labels include labels
// (name=value pairs); ok is false when the family is absent.
func value(mfs map[string]*dto.MetricFamily, name string, labels ...string) (v float64, ok bool) {
	mf, ok := mfs[name]
	if !ok {
		return 0, false
	}
next:
	for _, m := range mf.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			v += m.GetCounter().GetValue()
		case m.Gauge != nil:
			v += m.GetGauge().GetValue()
		case m.Histogram != nil:
			v += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return v, true
}

func (s scraper) value(name string, labels ...string) float64 {
	s.t.Helper()
	_, mfs := s.metrics()
	v, _ := value(mfs, name, labels...)
	return v
}

// A session's life moves the daemon's counters, /readyz follows Docker,
// and both /metrics and `status --prometheus` pass promtool.
func TestDaemonMetricsEndpoint(t *testing.T) {
	e := newDmEnv(t, 2*time.Second)
	addr := freePort(t)
	s := scraper{t: t, base: "http://" + addr}
	key := desired.SessionKey{User: uniq("dmmx")}
	h := startHelper(t)
	d := e.startDaemon("--metrics-addr", addr)
	d.waitLog(10*time.Second, "Serving metrics")
	if code, body := s.get("/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d %q", code, body)
	}
	harness.Eventually(t, 30*time.Second, "/readyz to answer 200", func() bool { c, _ := s.get("/readyz"); return c == http.StatusOK })
	if n := s.value("podspawn_passes_total", "type", "resync"); n < 1 {
		t.Errorf("podspawn_passes_total{type=resync} = %v after the first resync", n)
	}

	e.seed(key, h)
	harness.Eventually(t, 60*time.Second, "the daemon to create the session", func() bool { return e.running(key) })
	harness.Eventually(t, 30*time.Second, "the gauges and counters to show the session", func() bool {
		_, mfs := s.metrics()
		created, _ := value(mfs, "podspawn_actions_total", "kind", "create-container", "outcome", "changed")
		total, ok := value(mfs, "podspawn_sessions_total")
		conns, _ := value(mfs, "podspawn_connections_total")
		adds, _ := value(mfs, "workqueue_adds_total", "name", "podspawn")
		calls, _ := value(mfs, "podspawn_docker_request_duration_seconds", "operation", "containers.create")
		return created >= 1 && ok && total == 1 && conns == 1 && adds >= 1 && calls >= 1
	})
	body, _ := s.metrics()
	harness.PromtoolCheck(t, "/metrics", body)
	status := e.MustRun("status", "--prometheus")
	harness.PromtoolCheck(t, "status --prometheus", status.Stdout)

	h.kill() // the connection ends: grace, then teardown at the deadline
	harness.Eventually(t, deadlineBound, "the session to be removed after its deadline", func() bool { return e.gone(key) })
	harness.Eventually(t, 30*time.Second, "the counters to show the teardown", func() bool {
		_, mfs := s.metrics()
		removed, _ := value(mfs, "podspawn_actions_total", "kind", "remove-container", "reason", "grace-expired", "outcome", "changed")
		destroyed, _ := value(mfs, "podspawn_sessions_destroyed_total", "reason", "grace-expired")
		late, _ := value(mfs, "podspawn_deadline_lateness_seconds", "reason", "grace-expired")
		total, _ := value(mfs, "podspawn_sessions_total")
		return removed == 1 && destroyed == 1 && late == 1 && total == 0
	})

	// Docker away: unready, and its gauge is absent rather than 0.
	t.Cleanup(func() {
		if err := privateDockerd.ensureRunning(); err != nil {
			t.Errorf("restarting the private dockerd: %v", err)
		}
	})
	privateDockerd.stop(t)
	harness.Eventually(t, 60*time.Second, "/readyz to answer 503 while Docker is down", func() bool { c, _ := s.get("/readyz"); return c == http.StatusServiceUnavailable })
	_, mfs := s.metrics()
	if _, ok := mfs["podspawn_containers_docker"]; ok {
		t.Errorf("podspawn_containers_docker present while Docker is down")
	}
	if v, ok := value(mfs, "podspawn_docker_up"); !ok || v != 0 {
		t.Errorf("podspawn_docker_up = %v (present %t), want 0", v, ok)
	}
	if v, _ := value(mfs, "podspawn_database_up"); v != 1 {
		t.Errorf("podspawn_database_up = %v, want 1", v)
	}
	privateDockerd.restart(t)
	harness.Eventually(t, 60*time.Second, "/readyz to answer 200 after Docker came back", func() bool { c, _ := s.get("/readyz"); return c == http.StatusOK })
	if code := d.term(); code != 0 {
		t.Errorf("exit code on SIGTERM = %d, want 0", code)
	}
}

// A port in use is a clear error at start, before the loop runs.
func TestDaemonMetricsPortInUse(t *testing.T) {
	e := newDmEnv(t, time.Hour)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	r := e.Run("cleanup", "--daemon", "--metrics-addr", ln.Addr().String())
	want := fmt.Sprintf("Error: metrics endpoint: listen tcp %s: bind: address already in use", ln.Addr())
	if r.Code != 1 || !strings.Contains(r.Stderr, want) {
		t.Fatalf("exit %d, stderr:\n%s\nwant exit 1 and %q", r.Code, r.Stderr, want)
	}
	r = e.Run("cleanup", "--daemon", "--metrics-addr", "127.0.0.1")
	if r.Code == 0 || !strings.Contains(r.Stderr, `invalid --metrics-addr: "127.0.0.1" is not host:port`) {
		t.Fatalf("bad address: exit %d, stderr:\n%s", r.Code, r.Stderr)
	}
}
