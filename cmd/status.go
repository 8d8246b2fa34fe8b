package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/atomicfile"
)

// StatusCmd prints session and container counts, for humans or Prometheus.
type StatusCmd struct {
	Prometheus bool   `help:"Output in Prometheus exposition format (for node_exporter's textfile collector)."`
	OutputFile string `help:"Write the output to this file atomically (temporary file in the same directory, then rename) instead of stdout." placeholder:"PATH" type:"path"`
}

// Help is shown by podspawn status --help.
func (StatusCmd) Help() string {
	return `Sessions and connections come from the state database (a connection counts only while its spawn process lives). Containers counts the Docker containers labelled managed-by=podspawn in any state, including service containers and orphans not yet reaped.

When Docker cannot be reached the container count is reported as unknown, never as 0: the human output says "unknown (Docker unreachable: ...)", and the Prometheus output omits podspawn_containers_docker and sets podspawn_docker_up to 0. The exit status is 0 either way, so a collector cron job keeps running; it is 1 only when the state database cannot be read or the output cannot be written.

For node_exporter's textfile collector, never redirect straight into the collected file (the collector may read it half-written). Use --output-file, which writes a temporary file in the same directory and renames it:

  podspawn status --prometheus --output-file /var/lib/prometheus/node-exporter/podspawn.prom`
}

// statusData is what status reports.
type statusData struct {
	Total, Running, Grace, Connections int
	// Restarting counts sessions whose container was started again after
	// it stopped and has not stayed up for the crash-loop reset time yet.
	Restarting int
	// Oldest is the age of the oldest session; meaningful when Total > 0.
	Oldest time.Duration
	// Containers is valid only when DockerErr is nil.
	Containers int
	DockerErr  error
}

// Run gathers the numbers and prints them.
func (c *StatusCmd) Run(a *App) error {
	ctx, cancel := signalContext()
	defer cancel()
	views, err := loadSessionViews(ctx, a)
	if err != nil {
		return err
	}
	now := a.Clock.Now()
	var d statusData
	for _, v := range views {
		d.Total++
		switch v.Sess.Status {
		case desired.StatusRunning:
			d.Running++
		case desired.StatusGrace:
			d.Grace++
		}
		if v.Sess.RestartCount > 0 && v.Sess.Status != desired.StatusTerminating {
			d.Restarting++
		}
		d.Connections += v.Live
		if age := now.Sub(v.Sess.CreatedAt); age > d.Oldest {
			d.Oldest = age
		}
	}
	d.Containers, d.DockerErr = countManagedContainers(ctx, a)

	var buf bytes.Buffer
	if c.Prometheus {
		if err := renderStatusPrometheus(&buf, d); err != nil {
			return err
		}
	} else {
		renderStatusText(&buf, d)
	}
	if c.OutputFile != "" {
		return atomicfile.Write(c.OutputFile, buf.Bytes(), 0o644, atomicfile.KeepOwner, atomicfile.KeepOwner) // collectors often run as another user
	}
	_, err = a.Stdout.Write(buf.Bytes())
	return err
}

// countManagedContainers counts containers labelled managed-by=podspawn,
// in every state, with one filtered list call.
func countManagedContainers(ctx context.Context, a *App) (int, error) {
	rt, err := a.Runtime()
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return rt.CountContainers(ctx)
}

// shortReason keeps the first line of err, bounded, for a one-line status.
func shortReason(err error) string {
	s := strings.TrimSpace(err.Error())
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 {
		s = s[:197] + "..."
	}
	return s
}

func renderStatusText(w io.Writer, d statusData) {
	fmt.Fprintf(w, "Sessions:    %d total (%d running, %d grace)\n", d.Total, d.Running, d.Grace)
	if d.Restarting > 0 {
		// Only when there are some, so the usual output stays as documented.
		fmt.Fprintf(w, "Restarting:  %d (containers that stopped and were started again; podspawn list shows which)\n", d.Restarting)
	}
	fmt.Fprintf(w, "Connections: %d active\n", d.Connections)
	if d.DockerErr != nil {
		fmt.Fprintf(w, "Containers:  unknown (Docker unreachable: %s)\n", shortReason(d.DockerErr))
	} else {
		fmt.Fprintf(w, "Containers:  %d in Docker\n", d.Containers)
	}
	if d.Total > 0 {
		fmt.Fprintf(w, "Oldest:      %s\n", formatAge(d.Oldest))
	}
}

// renderStatusPrometheus writes the gauges in the documented order (Gather
// sorts by name, so families are encoded one by one).
func renderStatusPrometheus(w io.Writer, d statusData) error {
	reg := prometheus.NewRegistry()
	var order []string
	gauge := func(name, help string, v float64) {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
		g.Set(v)
		reg.MustRegister(g)
		order = append(order, name)
	}
	gauge("podspawn_sessions_total", "Total tracked sessions", float64(d.Total))
	gauge("podspawn_sessions_running", "Sessions in running state", float64(d.Running))
	gauge("podspawn_sessions_grace", "Sessions in grace period", float64(d.Grace))
	gauge("podspawn_sessions_restarting", "Sessions whose container stopped and was started again, and has not stayed up for cleanup.crash_loop_reset_after since", float64(d.Restarting))
	gauge("podspawn_connections_total", "Total active SSH connections", float64(d.Connections))
	up := 0.0
	if d.DockerErr == nil {
		// A false 0 would look like every container vanished: omit instead.
		gauge("podspawn_containers_docker", "Docker containers with managed-by=podspawn", float64(d.Containers))
		up = 1
	}
	oldest := 0.0
	if d.Total > 0 {
		oldest = float64(d.Oldest / time.Second)
	}
	gauge("podspawn_oldest_session_seconds", "Age of the oldest session in seconds", oldest)
	gauge("podspawn_docker_up", "Whether the Docker daemon answered (1) or not (0)", up)

	mfs, err := reg.Gather()
	if err != nil {
		return fmt.Errorf("gathering metrics: %w", err)
	}
	byName := make(map[string]*dto.MetricFamily, len(mfs))
	for _, mf := range mfs {
		byName[mf.GetName()] = mf
	}
	enc := expfmt.NewEncoder(w, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, name := range order {
		if err := enc.Encode(byName[name]); err != nil {
			return fmt.Errorf("encoding %s: %w", name, err)
		}
	}
	return nil
}
