// Package metrics holds every Prometheus metric podspawn exports, in a
// private registry: the status gauges that `podspawn status --prometheus`
// prints and the daemon serves, the daemon's counters and histograms, the
// work queue's metrics, and the health state behind /readyz.
package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/observed/proc"
)

// Status is what `podspawn status` reports and the daemon's status gauges
// show. A count read from a source that failed is unknown, never 0.
type Status struct {
	// DatabaseErr is set when the sessions could not be read; the session
	// and connection counts are then unknown.
	DatabaseErr error
	Total       int
	Running     int
	Grace       int
	// Restarting counts sessions whose container was started again after
	// it stopped and has not stayed up for the crash-loop reset time yet.
	Restarting  int
	Connections int
	// Oldest is the age of the oldest session; meaningful when Total > 0.
	Oldest time.Duration
	// Containers is valid only when DockerErr is nil.
	Containers int
	DockerErr  error
}

// Sources are where ReadStatus reads from: the session rows and the
// count of managed-by=podspawn containers in every state.
type Sources struct {
	Sessions   func(ctx context.Context) ([]*desired.Session, error)
	Containers func(ctx context.Context) (int, error)
	// Placements, when set, maps session containers to the runtime's own
	// restarts of them (the kubelet's; nil on Docker): a session counts
	// as restarting while they count (observed.Placement.Restarting with
	// ResetAfter), as in podspawn list. When they cannot be read, the
	// database's count stands.
	Placements func(ctx context.Context) (map[string]observed.Placement, error)
	ResetAfter time.Duration
}

// ReadStatus reads both sources; a failing one leaves its counts unknown.
// A connection counts only while its spawn process lives.
func ReadStatus(ctx context.Context, src Sources, now time.Time) Status {
	var st Status
	sessions, err := src.Sessions(ctx)
	if err != nil {
		st.DatabaseErr = err
	} else {
		st = Summarize(sessions, proc.Alive(leaseRefs(sessions)), now)
		if src.Placements != nil {
			if pl, err := src.Placements(ctx); err == nil && pl != nil {
				st.Restarting = restarting(sessions, pl, now, src.ResetAfter)
			}
		}
	}
	st.Containers, st.DockerErr = src.Containers(ctx)
	return st
}

// restarting counts the live sessions that podspawn or the runtime
// restarted and that have not stayed up since.
func restarting(sessions []*desired.Session, pl map[string]observed.Placement, now time.Time, resetAfter time.Duration) int {
	n := 0
	for _, s := range sessions {
		if s.Status == desired.StatusTerminating {
			continue
		}
		name := s.Spec.ContainerName
		if name == "" {
			name = desired.ContainerName(s.Key)
		}
		if p, ok := pl[name]; s.RestartCount > 0 || (ok && p.Restarting(now, resetAfter)) {
			n++
		}
	}
	return n
}

func leaseRefs(sessions []*desired.Session) []observed.ProcessRef {
	var refs []observed.ProcessRef
	for _, s := range sessions {
		for _, l := range s.Leases {
			refs = append(refs, observed.ProcessRef{PID: l.PID, Start: l.PIDStart})
		}
	}
	return refs
}

// Summarize counts sessions by status and their live connections.
func Summarize(sessions []*desired.Session, alive map[observed.ProcessRef]bool, now time.Time) Status {
	var d Status
	for _, s := range sessions {
		d.Total++
		switch s.Status {
		case desired.StatusRunning:
			d.Running++
		case desired.StatusGrace:
			d.Grace++
		}
		if s.RestartCount > 0 && s.Status != desired.StatusTerminating {
			d.Restarting++
		}
		for _, l := range s.Leases {
			if alive[observed.ProcessRef{PID: l.PID, Start: l.PIDStart}] {
				d.Connections++
			}
		}
		if age := now.Sub(s.CreatedAt); age > d.Oldest {
			d.Oldest = age
		}
	}
	return d
}

// gaugeDesc is one status gauge: its name, its help (the documented
// contract of `status --prometheus`) and how to read it from a Status.
type gaugeDesc struct {
	name, help string
	// database or docker: the source the value comes from.
	fromDocker bool
	value      func(Status) float64
}

// statusGauges are in the documented order of `status --prometheus`.
var statusGauges = []gaugeDesc{
	{"podspawn_sessions_total", "Total tracked sessions", false, func(s Status) float64 { return float64(s.Total) }},
	{"podspawn_sessions_running", "Sessions in running state", false, func(s Status) float64 { return float64(s.Running) }},
	{"podspawn_sessions_grace", "Sessions in grace period", false, func(s Status) float64 { return float64(s.Grace) }},
	{"podspawn_sessions_restarting", "Sessions whose container stopped and was started again, and has not stayed up for cleanup.crash_loop_reset_after since", false, func(s Status) float64 { return float64(s.Restarting) }},
	{"podspawn_connections_total", "Total active SSH connections", false, func(s Status) float64 { return float64(s.Connections) }},
	{"podspawn_containers_docker", "Docker containers with managed-by=podspawn", true, func(s Status) float64 { return float64(s.Containers) }},
	{"podspawn_oldest_session_seconds", "Age of the oldest session in seconds", false, func(s Status) float64 {
		if s.Total == 0 {
			return 0
		}
		return float64(s.Oldest / time.Second)
	}},
}

// Names of the source health gauges.
const (
	DockerUpName   = "podspawn_docker_up"
	DatabaseUpName = "podspawn_database_up"
)

// StatusCollector exports a Status read at scrape time. Gauges of a source
// that failed are left out (a false 0 would read as every session or
// container gone) and that source's _up gauge is 0.
type StatusCollector struct {
	read func() Status
	// database adds podspawn_database_up; status exits non-zero instead
	// when the database cannot be read, so it prints no such gauge.
	database bool
	descs    []*prometheus.Desc
	dockerUp *prometheus.Desc
	dbUp     *prometheus.Desc
}

// StatusOption changes what the status gauges say.
type StatusOption func(help map[string]string)

// OnKubernetes keeps the documented gauge names with runtime: kubernetes
// (dashboards and alerts keep working) and says in their help what they
// count there: podspawn_containers_docker counts podspawn's Pods, and
// podspawn_docker_up says whether the API server answered.
func OnKubernetes(help map[string]string) {
	help["podspawn_containers_docker"] = "Pods labelled app.kubernetes.io/managed-by=podspawn in podspawn's namespace (runtime: kubernetes)"
	help[DockerUpName] = "Whether the Kubernetes API server answered (1) or not (0) (runtime: kubernetes)"
}

// NewStatusCollector reads the status with read at every collection.
func NewStatusCollector(read func() Status, databaseUp bool, opts ...StatusOption) *StatusCollector {
	c := &StatusCollector{read: read, database: databaseUp}
	help := map[string]string{DockerUpName: "Whether the Docker daemon answered (1) or not (0)"}
	for _, g := range statusGauges {
		help[g.name] = g.help
	}
	for _, o := range opts {
		o(help)
	}
	for _, g := range statusGauges {
		c.descs = append(c.descs, prometheus.NewDesc(g.name, help[g.name], nil, nil))
	}
	c.dockerUp = prometheus.NewDesc(DockerUpName, help[DockerUpName], nil, nil)
	c.dbUp = prometheus.NewDesc(DatabaseUpName, "Whether the state database could be read (1) or not (0)", nil, nil)
	return c
}

// Describe implements prometheus.Collector.
func (c *StatusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
	ch <- c.dockerUp
	if c.database {
		ch <- c.dbUp
	}
}

// Collect implements prometheus.Collector.
func (c *StatusCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.read()
	for i, g := range statusGauges {
		if (g.fromDocker && s.DockerErr != nil) || (!g.fromDocker && s.DatabaseErr != nil) {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.descs[i], prometheus.GaugeValue, g.value(s))
	}
	ch <- prometheus.MustNewConstMetric(c.dockerUp, prometheus.GaugeValue, up(s.DockerErr))
	if c.database {
		ch <- prometheus.MustNewConstMetric(c.dbUp, prometheus.GaugeValue, up(s.DatabaseErr))
	}
}

func up(err error) float64 {
	if err != nil {
		return 0
	}
	return 1
}

// StatusOrder is the documented order of the status families, for a
// renderer that prints them in that order rather than sorted by name.
func StatusOrder() []string {
	out := make([]string, 0, len(statusGauges)+2)
	for _, g := range statusGauges {
		out = append(out, g.name)
	}
	return append(out, DockerUpName, DatabaseUpName)
}
