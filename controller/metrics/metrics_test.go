package metrics

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/observed"
)

// expose renders the collector's families as the text format, sorted by name.
func expose(t *testing.T, s Status) string {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewStatusCollector(func() Status { return s }, true))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

func names(t *testing.T, s Status, database bool) []string {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewStatusCollector(func() Status { return s }, database))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		out = append(out, mf.GetName())
	}
	return out
}

var full = Status{Total: 3, Running: 2, Grace: 1, Connections: 4, Containers: 5, Oldest: 90 * time.Second}

func TestStatusCollectorAllSourcesUp(t *testing.T) {
	want := `
# HELP podspawn_connections_total Total active SSH connections
# TYPE podspawn_connections_total gauge
podspawn_connections_total 4
# HELP podspawn_containers_docker Docker containers with managed-by=podspawn
# TYPE podspawn_containers_docker gauge
podspawn_containers_docker 5
# HELP podspawn_database_up Whether the state database could be read (1) or not (0)
# TYPE podspawn_database_up gauge
podspawn_database_up 1
# HELP podspawn_docker_up Whether the Docker daemon answered (1) or not (0)
# TYPE podspawn_docker_up gauge
podspawn_docker_up 1
# HELP podspawn_oldest_session_seconds Age of the oldest session in seconds
# TYPE podspawn_oldest_session_seconds gauge
podspawn_oldest_session_seconds 90
# HELP podspawn_sessions_grace Sessions in grace period
# TYPE podspawn_sessions_grace gauge
podspawn_sessions_grace 1
# HELP podspawn_sessions_restarting Sessions whose container stopped and was started again, and has not stayed up for cleanup.crash_loop_reset_after since
# TYPE podspawn_sessions_restarting gauge
podspawn_sessions_restarting 0
# HELP podspawn_sessions_running Sessions in running state
# TYPE podspawn_sessions_running gauge
podspawn_sessions_running 2
# HELP podspawn_sessions_total Total tracked sessions
# TYPE podspawn_sessions_total gauge
podspawn_sessions_total 3
`
	if diff := cmp.Diff(strings.TrimPrefix(want, "\n"), expose(t, full)); diff != "" {
		t.Errorf("exposition (-want +got):\n%s", diff)
	}
}

// A source that cannot be read leaves its gauges out, never 0, and its
// _up gauge says why they are missing.
func TestStatusCollectorFailingSources(t *testing.T) {
	dockerDown := full
	dockerDown.DockerErr = errors.New("connection refused")
	dbDown := Status{DatabaseErr: errors.New("database is locked"), Containers: 5}
	both := Status{DatabaseErr: errors.New("locked"), DockerErr: errors.New("refused")}
	for name, tc := range map[string]struct {
		s    Status
		want []string
	}{
		"docker down": {dockerDown, []string{"podspawn_connections_total", "podspawn_database_up", "podspawn_docker_up",
			"podspawn_oldest_session_seconds", "podspawn_sessions_grace", "podspawn_sessions_restarting", "podspawn_sessions_running", "podspawn_sessions_total"}},
		"database down": {dbDown, []string{"podspawn_containers_docker", "podspawn_database_up", "podspawn_docker_up"}},
		"both down":     {both, []string{"podspawn_database_up", "podspawn_docker_up"}},
	} {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, names(t, tc.s, true)); diff != "" {
				t.Errorf("families (-want +got):\n%s", diff)
			}
			got := expose(t, tc.s)
			for _, line := range strings.Split(upText(tc.s), "\n") {
				if !strings.Contains(got, line+"\n") {
					t.Errorf("exposition lacks %q:\n%s", line, got)
				}
			}
		})
	}
}

func upText(s Status) string {
	v := func(err error) string {
		if err != nil {
			return "0"
		}
		return "1"
	}
	return "# HELP podspawn_database_up Whether the state database could be read (1) or not (0)\n# TYPE podspawn_database_up gauge\npodspawn_database_up " + v(s.DatabaseErr) +
		"\n# HELP podspawn_docker_up Whether the Docker daemon answered (1) or not (0)\n# TYPE podspawn_docker_up gauge\npodspawn_docker_up " + v(s.DockerErr) + "\n"
}

// status prints no podspawn_database_up: it fails instead.
func TestStatusCollectorWithoutDatabaseUp(t *testing.T) {
	got := names(t, full, false)
	for _, n := range got {
		if n == DatabaseUpName {
			t.Fatalf("families %v include %s", got, DatabaseUpName)
		}
	}
	if len(got) != len(statusGauges)+1 {
		t.Fatalf("families %v, want the %d status gauges and podspawn_docker_up", got, len(statusGauges))
	}
}

func TestSummarize(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	live := desired.Lease{PID: 10, PIDStart: 1}
	dead := desired.Lease{PID: 11, PIDStart: 1}
	sessions := []*desired.Session{
		{Status: desired.StatusRunning, CreatedAt: now.Add(-time.Hour), Leases: []desired.Lease{live, dead}},
		{Status: desired.StatusGrace, CreatedAt: now.Add(-2 * time.Hour)},
		{Status: desired.StatusRunning, CreatedAt: now.Add(-time.Minute), RestartCount: 2},
		{Status: desired.StatusTerminating, CreatedAt: now, RestartCount: 3},
	}
	got := Summarize(sessions, map[observed.ProcessRef]bool{{PID: 10, Start: 1}: true}, now)
	want := Status{Total: 4, Running: 2, Grace: 1, Restarting: 1, Connections: 1, Oldest: 2 * time.Hour}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Summarize (-want +got):\n%s", diff)
	}
}
