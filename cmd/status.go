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

	"github.com/podspawn/podspawn/controller/metrics"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/atomicfile"
	"github.com/podspawn/podspawn/desired/config"
	"github.com/podspawn/podspawn/observed"
)

// StatusCmd prints session and container counts, for humans or Prometheus.
type StatusCmd struct {
	Prometheus bool   `help:"Output in Prometheus exposition format (for node_exporter's textfile collector)."`
	OutputFile string `help:"Write the output to this file atomically (temporary file in the same directory, then rename) instead of stdout." placeholder:"PATH" type:"path"`
}

// Help is shown by podspawn status --help.
func (StatusCmd) Help() string {
	return `Sessions and connections come from the state database (a connection counts only while its spawn process lives). Containers counts the Docker containers labelled managed-by=podspawn in any state, including service containers and orphans not yet reaped.

With runtime: kubernetes, Containers counts podspawn's Pods in its namespace instead (a session and its companion services are one Pod), in every phase: "Containers:  N Pods in Kubernetes"; the Prometheus output keeps the documented names, so podspawn_containers_docker is that Pod count and podspawn_docker_up says whether the API server answered (their HELP lines say so).

When Docker cannot be reached the container count is reported as unknown, never as 0: the human output says "unknown (Docker unreachable: ...)", and the Prometheus output omits podspawn_containers_docker and sets podspawn_docker_up to 0. The exit status is 0 either way, so a collector cron job keeps running; it is 1 only when the state database cannot be read or the output cannot be written.

For node_exporter's textfile collector, never redirect straight into the collected file (the collector may read it half-written). Use --output-file, which writes a temporary file in the same directory and renames it:

  podspawn status --prometheus --output-file /var/lib/prometheus/node-exporter/podspawn.prom`
}

// Run gathers the numbers and prints them. The numbers and the gauges
// are the daemon's own (controller/metrics), so the two cannot drift.
func (c *StatusCmd) Run(a *App) error {
	ctx, cancel := signalContext()
	defer cancel()
	d := metrics.ReadStatus(ctx, metrics.Sources{
		Sessions: func(ctx context.Context) ([]*desired.Session, error) {
			st, err := a.Store(ctx)
			if err != nil {
				return nil, err
			}
			return st.Load(ctx)
		},
		Containers: func(ctx context.Context) (int, error) { return countManagedContainers(ctx, a) },
		Placements: func(ctx context.Context) (map[string]observed.Placement, error) { return readPlacements(ctx, a) },
		ResetAfter: resetAfter(a),
	}, a.Clock.Now())
	if d.DatabaseErr != nil {
		return d.DatabaseErr
	}

	cfg, err := a.Config()
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if c.Prometheus {
		if err := renderStatusPrometheus(&buf, d, statusOptions(cfg)...); err != nil {
			return err
		}
	} else {
		renderStatusText(&buf, d, cfg.Runtime == config.RuntimeKubernetes)
	}
	if c.OutputFile != "" {
		return atomicfile.Write(c.OutputFile, buf.Bytes(), 0o644, atomicfile.KeepOwner, atomicfile.KeepOwner) // collectors often run as another user
	}
	_, err = a.Stdout.Write(buf.Bytes())
	return err
}

// resetAfter is cleanup.crash_loop_reset_after: how long a restarted
// container must stay up before its restarts stop counting.
func resetAfter(a *App) time.Duration {
	cfg, err := a.Config()
	if err != nil {
		return 0
	}
	return cfg.Cleanup.CrashLoopResetAfter.Duration
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

// statusOptions are the status gauges' options for cfg's runtime.
func statusOptions(cfg config.Config) []metrics.StatusOption {
	if cfg.Runtime == config.RuntimeKubernetes {
		return []metrics.StatusOption{metrics.OnKubernetes}
	}
	return nil
}

func renderStatusText(w io.Writer, d metrics.Status, kube bool) {
	fmt.Fprintf(w, "Sessions:    %d total (%d running, %d grace)\n", d.Total, d.Running, d.Grace)
	if d.Restarting > 0 {
		// Only when there are some, so the usual output stays as documented.
		fmt.Fprintf(w, "Restarting:  %d (containers that stopped and were started again; podspawn list shows which)\n", d.Restarting)
	}
	fmt.Fprintf(w, "Connections: %d active\n", d.Connections)
	switch {
	case kube && d.DockerErr != nil:
		fmt.Fprintf(w, "Containers:  unknown (Kubernetes unreachable: %s)\n", shortReason(d.DockerErr))
	case kube:
		fmt.Fprintf(w, "Containers:  %d Pods in Kubernetes\n", d.Containers)
	case d.DockerErr != nil:
		fmt.Fprintf(w, "Containers:  unknown (Docker unreachable: %s)\n", shortReason(d.DockerErr))
	default:
		fmt.Fprintf(w, "Containers:  %d in Docker\n", d.Containers)
	}
	if d.Total > 0 {
		fmt.Fprintf(w, "Oldest:      %s\n", formatAge(d.Oldest))
	}
}

// renderStatusPrometheus writes the gauges in the documented order (Gather
// sorts by name, so families are encoded one by one).
func renderStatusPrometheus(w io.Writer, d metrics.Status, opts ...metrics.StatusOption) error {
	reg := prometheus.NewRegistry()
	// No podspawn_database_up: status fails instead when it cannot read.
	reg.MustRegister(metrics.NewStatusCollector(func() metrics.Status { return d }, false, opts...))
	mfs, err := reg.Gather()
	if err != nil {
		return fmt.Errorf("gathering metrics: %w", err)
	}
	byName := make(map[string]*dto.MetricFamily, len(mfs))
	for _, mf := range mfs {
		byName[mf.GetName()] = mf
	}
	enc := expfmt.NewEncoder(w, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, name := range metrics.StatusOrder() {
		if mf, ok := byName[name]; ok {
			if err := enc.Encode(mf); err != nil {
				return fmt.Errorf("encoding %s: %w", name, err)
			}
		}
	}
	return nil
}
