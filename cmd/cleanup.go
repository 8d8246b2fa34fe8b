package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/podspawn/podspawn/controller"
	"github.com/podspawn/podspawn/controller/metrics"
	"github.com/podspawn/podspawn/desired/config"
	"github.com/podspawn/podspawn/desired/lock"
	"github.com/podspawn/podspawn/desired/sqlstore"
	"github.com/podspawn/podspawn/observed"
)

// CleanupCmd is one reconcile pass, or with --daemon the long-running
// cleanup controller.
type CleanupCmd struct {
	DryRun   bool   `help:"Print the plan and change nothing."`
	Output   string `help:"Output format: text or json." enum:"text,json" default:"text" short:"o"`
	Workers  int    `help:"How many sessions to reconcile at once." default:"4"`
	Daemon   bool   `help:"Run continuously: act on Docker events, database changes and each session's own deadlines, with a full resync every --interval. Only one daemon runs per host."`
	Interval string `help:"Full resync interval in daemon mode (Go duration, e.g. 60s)." default:"60s"`
	// One pass only: a daemon that never held anything would have no guard.
	MetricsAddr      string `help:"With --daemon, serve Prometheus metrics on /metrics and health checks on /healthz and /readyz at this host:port (e.g. 127.0.0.1:9464). Overrides cleanup.metrics_addr; off when both are empty." placeholder:"HOST:PORT"`
	AllowMassRemoval bool   `help:"Confirm, for this one pass, removals the blast-radius guard holds (many running sessions removed because their key file or session record is missing). Check 'podspawn cleanup --dry-run' first."`
}

// validate checks the flags before anything is opened. The interval is
// checked even without --daemon, so a typo in a unit file shows up at once.
func (c *CleanupCmd) validate() (time.Duration, error) {
	if c.Workers < 1 {
		return 0, fmt.Errorf("invalid --workers %d: must be at least 1", c.Workers)
	}
	interval, err := config.ParseDuration(c.Interval)
	if err != nil {
		return 0, fmt.Errorf("invalid --interval: %w", err)
	}
	if interval <= 0 {
		return 0, fmt.Errorf("invalid --interval %q: must be a positive duration such as 60s", c.Interval)
	}
	if c.Daemon && c.DryRun {
		return 0, errors.New("--dry-run cannot be combined with --daemon: run 'podspawn cleanup --dry-run' to see what one pass would do")
	}
	if c.Daemon && c.AllowMassRemoval {
		return 0, errors.New("--allow-mass-removal confirms one pass and cannot be combined with --daemon: run 'podspawn cleanup --allow-mass-removal' once, beside the daemon")
	}
	if c.MetricsAddr != "" {
		if !c.Daemon {
			return 0, errors.New("--metrics-addr applies to the daemon: add --daemon (a one-shot pass exits before anyone could scrape it)")
		}
		if err := config.ValidateListenAddr(c.MetricsAddr); err != nil {
			return 0, fmt.Errorf("invalid --metrics-addr: %w", err)
		}
	}
	if c.Daemon && c.Output == "json" {
		return 0, errors.New("--output json applies to a single pass; the daemon writes logs to stderr (use --log-format json)")
	}
	return interval, nil
}

// Run executes one pass, or prints its plan with --dry-run. It exits
// non-zero when any action failed.
func (c *CleanupCmd) Run(a *App) error {
	interval, err := c.validate()
	if err != nil {
		return err
	}
	if c.Daemon {
		return c.runDaemon(a, interval)
	}
	ctx, cancel := signalContext()
	defer cancel()
	ctrl, err := a.Controller(ctx, ControllerOptions{DryRun: c.DryRun, Workers: c.Workers, AllowMassRemoval: c.AllowMassRemoval})
	if err != nil {
		return err
	}
	if c.DryRun {
		plan, err := ctrl.PlanOnce(ctx)
		if err != nil {
			return err
		}
		if c.Output == "json" {
			return renderPlanJSON(a.Stdout, plan)
		}
		renderPlanText(a.Stdout, plan)
		return nil
	}
	// What the rules changed is part of what the pass did: reported with
	// its actions, not logged.
	fwChanged, fwErr := a.syncHostFirewall(ctx)
	rep, err := ctrl.ReconcileOnce(ctx)
	if err != nil {
		return err
	}
	a.Log.V(1).Info("Cleanup pass finished", controller.PlanLogValues(rep.Plan)...)
	if c.Output == "json" {
		if err := renderReportJSON(a.Stdout, rep, fwChanged); err != nil {
			return err
		}
		return passError(rep, fwErr)
	}
	renderReportText(a.Stdout, rep, fwChanged)
	return passError(rep, fwErr)
}

// runDaemon takes the host's daemon lock and runs the controller until
// SIGINT or SIGTERM, then drains and exits 0.
func (c *CleanupCmd) runDaemon(a *App, interval time.Duration) error {
	// The daemon's stderr is its log (the journal): every action it takes,
	// at info, unlike a one-shot command's.
	a.Log = newLogger(a.CLI.LogFormat, a.CLI.Verbosity, a.Stderr)
	ctx, cancel := signalContext()
	defer cancel()
	// After the first signal, restore the default handling so that a
	// second one ends the process at once instead of waiting for the drain.
	go func() {
		<-ctx.Done()
		cancel()
	}()
	cfg, err := a.Config()
	if err != nil {
		return err
	}
	daemonLock, err := lock.AcquireDaemon(lock.DaemonPath(cfg.State.Dir()))
	if err != nil {
		return err
	}
	defer daemonLock.Release()
	srv, err := c.startMetrics(a, cfg)
	if err != nil {
		return err
	}
	ctrl, err := openBusy(ctx, a, func() (*controller.Controller, error) {
		return a.Controller(ctx, ControllerOptions{Workers: c.Workers})
	})
	if err != nil {
		return err
	}
	rt, err := a.Runtime()
	if err != nil {
		return err
	}
	d := &controller.Daemon{C: ctrl, Watcher: rt.Watcher(ctrl.Store.InstanceID(), ctrl.Log), Interval: interval, Workers: c.Workers, OnResync: a.ensureHostFirewall}
	if srv != nil {
		// A resync that hangs past its timeout turns the daemon unready.
		d.Health = metrics.NewHealth(interval+controller.DefaultResyncTimeout, a.Clock.Now)
		srv.serve(ctx, a, ctrl, d.Health)
		defer srv.wait()
	}
	a.Log.Info("Cleanup daemon started", "pid", os.Getpid(), "interval", interval.String(), "workers", c.Workers, "lock", daemonLock.Path(), "db", cfg.State.DBPath)
	if err := d.Run(ctx); err != nil {
		return fmt.Errorf("cleanup daemon: %w", err)
	}
	a.Log.Info("Cleanup daemon stopped")
	return nil
}

// openBusy retries open while the state database is busy (another process
// migrating or holding a long write), so that a busy database delays the
// daemon's start instead of failing it.
func openBusy(ctx context.Context, a *App, open func() (*controller.Controller, error)) (*controller.Controller, error) {
	wait := 500 * time.Millisecond
	for logged := false; ; logged = true {
		ctrl, err := open()
		if err == nil || !sqlstore.IsBusy(err) {
			return ctrl, err
		}
		if !logged {
			a.Log.Error(err, "State database is busy; retrying")
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-a.Clock.After(wait):
		}
		wait = min(2*wait, 10*time.Second)
	}
}

// metricsServer is the daemon's /metrics endpoint, listening before the
// loop starts so a bad address or a port in use fails the start.
type metricsServer struct {
	ln      net.Listener
	metrics *metrics.Metrics
	// status reads the status gauges; set by serve, before any scrape.
	status func() metrics.Status
	done   chan struct{}
}

// startMetrics listens on --metrics-addr, or else cleanup.metrics_addr;
// it returns nil when both are empty.
func (c *CleanupCmd) startMetrics(a *App, cfg config.Config) (*metricsServer, error) {
	addr := c.MetricsAddr
	if addr == "" {
		addr = cfg.Cleanup.MetricsAddr
	}
	if addr == "" {
		return nil, nil
	}
	ln, err := metrics.Listen(addr)
	if err != nil {
		return nil, err
	}
	s := &metricsServer{ln: ln, done: make(chan struct{})}
	s.metrics = metrics.New(func() metrics.Status { return s.status() }, statusOptions(cfg)...)
	// Set before the Docker client is made: every request the daemon
	// sends is timed by operation.
	a.dockerObserver = s.metrics.ObserveDockerRequest
	return s, nil
}

// serve registers the metrics, reading status from the daemon's own store
// and Docker client at scrape time, and serves them until ctx ends.
func (s *metricsServer) serve(ctx context.Context, a *App, ctrl *controller.Controller, h *metrics.Health) {
	s.status = func() metrics.Status {
		// Bounded: a scrape must not hang on a stuck dockerd.
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return metrics.ReadStatus(sctx, metrics.Sources{
			Sessions:   ctrl.Store.Load,
			Containers: func(ctx context.Context) (int, error) { return countManagedContainers(ctx, a) },
			Placements: func(ctx context.Context) (map[string]observed.Placement, error) { return readPlacements(ctx, a) },
			ResetAfter: resetAfter(a),
		}, a.Clock.Now())
	}
	ctrl.Metrics = s.metrics
	a.Log.Info("Serving metrics", "addr", s.ln.Addr().String(), "paths", "/metrics /healthz /readyz")
	go func() {
		defer close(s.done)
		metrics.Serve(ctx, s.ln, metrics.Handler(s.metrics, h), a.Log)
	}()
}

// wait returns when the endpoint has shut down.
func (s *metricsServer) wait() { <-s.done }
