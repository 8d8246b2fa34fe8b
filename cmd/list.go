package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"k8s.io/utils/clock"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/config"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/observed/proc"
	"github.com/podspawn/podspawn/reconcile"
)

// newClock is the clock run() gives App; tests replace it with a fake so
// that ages and plans are reproducible.
var newClock = func() clock.WithTicker { return clock.RealClock{} }

// ListCmd prints the sessions of the state database.
type ListCmd struct {
	Output string `help:"Output format: text; wide, text with a NODE column (Kubernetes: the node of the session's Pod, - while it is not scheduled; Docker: this host's name); or json for scripts: an array of objects with user, project (\"\" for the default session), container, status, mode, connections (live SSH connections), created_at, max_lifetime_at and grace_expiry (RFC 3339 UTC, null when not applicable), lifetime_left_seconds (0 once expired; max_lifetime_at and lifetime_left_seconds are null for persistent sessions, which never expire), restarts (restarts of the container since it last stayed up for cleanup.crash_loop_reset_after) and next_restart_at (when the next restart is allowed while it backs off, else null)." enum:"text,wide,json" default:"text" short:"o"`
}

// Help is shown by podspawn list --help.
func (ListCmd) Help() string {
	return `Lists every session recorded in the state database, ordered by user and project. It reads only the database, not Docker: a session whose container vanished still shows until cleanup removes it.

CONNS counts live connections: a connection whose spawn process has died does not count. LIFETIME LEFT is "expired" once the maximum lifetime is reached (cleanup then destroys the session) and "never" for persistent sessions.

STATUS is creating, running, grace_period or terminating, except "restarting (N)" for a session whose container stopped and was started again N times without staying up for cleanup.crash_loop_reset_after since (restarts back off, see cleanup.crash_loop_*), and "failed (crash-loop)" for one being torn down because it kept stopping.

With runtime: kubernetes, the kubelet restarts a crashing session container in its Pod itself (CrashLoopBackOff), so list also reads the instance's Pods (one list call): "restarting (N)" then shows the kubelet's restart count N of the session container while it is down or has not stayed up for cleanup.crash_loop_reset_after since its last start. When the API server cannot be read, list says so on stderr and shows the database's view.`
}

// sessionView is one session with what list and status derive from it.
type sessionView struct {
	Sess *desired.Session
	// Live is the number of leases whose process still runs.
	Live int
	// Placement is where the runtime runs the session container (nil when
	// it was not read, or there is none).
	Placement *observed.Placement
}

// loadSessionViews reads every session, ordered by user and project, and
// counts live leases.
func loadSessionViews(ctx context.Context, a *App) ([]sessionView, error) {
	st, err := a.Store(ctx)
	if err != nil {
		return nil, err
	}
	sessions, err := st.Load(ctx)
	if err != nil {
		return nil, err
	}
	var refs []observed.ProcessRef
	for _, s := range sessions {
		for _, l := range s.Leases {
			refs = append(refs, observed.ProcessRef{PID: l.PID, Start: l.PIDStart})
		}
	}
	alive := proc.Alive(refs)
	var out []sessionView
	for _, s := range sessions { // in key order
		v := sessionView{Sess: s}
		for _, l := range s.Leases {
			if alive[observed.ProcessRef{PID: l.PID, Start: l.PIDStart}] {
				v.Live++
			}
		}
		out = append(out, v)
	}
	return out, nil
}

// Run prints the table, or JSON with -o json.
func (c *ListCmd) Run(a *App) error {
	ctx, cancel := signalContext()
	defer cancel()
	views, err := loadSessionViews(ctx, a)
	if err != nil {
		return err
	}
	cfg, err := a.Config()
	if err != nil {
		return err
	}
	now := a.Clock.Now()
	warnFutureRows(a.Stderr, views, now)
	kube := cfg.Runtime == config.RuntimeKubernetes
	var nodes func(sessionView) string
	if kube || c.Output == "wide" {
		nodes = placeSessions(ctx, a, views, kube)
	}
	r := restartsView{resetAfter: cfg.Cleanup.CrashLoopResetAfter.Duration, now: now}
	if c.Output == "json" {
		return renderListJSON(a.Stdout, views, r)
	}
	if c.Output != "wide" {
		nodes = nil
	}
	renderListText(a.Stdout, views, r, nodes)
	return nil
}

// placeSessions reads where the runtime runs the sessions' containers and
// returns the NODE column: on Kubernetes the node of each session's Pod,
// "-" while it is not scheduled or has no Pod, "?" when the API server
// could not be read (said on stderr); on Docker this host's name, as every
// session runs on this host's Docker, read without asking Docker.
func placeSessions(ctx context.Context, a *App, views []sessionView, kube bool) func(sessionView) string {
	if !kube {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "-"
		}
		return func(sessionView) string { return host }
	}
	placements, err := readPlacements(ctx, a)
	if err != nil {
		fmt.Fprintf(a.Stderr, "Warning: cannot read the session Pods (%s); NODE is unknown and restarts are the database's\n", shortReason(err))
		return func(sessionView) string { return "?" }
	}
	for i := range views {
		if p, ok := placements[containerOf(views[i].Sess)]; ok {
			views[i].Placement = &p
		}
	}
	return func(v sessionView) string {
		if v.Placement == nil || v.Placement.Node == "" {
			return "-"
		}
		return v.Placement.Node
	}
}

func readPlacements(ctx context.Context, a *App) (map[string]observed.Placement, error) {
	st, err := a.Store(ctx)
	if err != nil {
		return nil, err
	}
	rt, err := a.Runtime()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return rt.Placements(ctx, st.InstanceID())
}

func renderListText(w io.Writer, views []sessionView, r restartsView, nodes func(sessionView) string) {
	if len(views) == 0 {
		fmt.Fprintln(w, "No active sessions.")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	head := "USER\tPROJECT\tCONTAINER\tSTATUS\tCONNS\tAGE\tLIFETIME LEFT"
	if nodes != nil {
		head += "\tNODE"
	}
	fmt.Fprintln(tw, head)
	for _, v := range views {
		s := v.Sess
		project := s.Key.Project
		if project == "" {
			project = "(default)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s", s.Key.User, project, containerOf(s), statusText(s, r.count(v)), v.Live,
			formatAge(r.now.Sub(s.CreatedAt)), lifetimeLeft(s, r.now))
		if nodes != nil {
			fmt.Fprintf(tw, "\t%s", nodes(v))
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
}

// restartsView counts a session's restarts for list: the session row's
// (podspawn's own restarts, on Docker) or, while the kubelet is
// restarting the session container in its Pod, the kubelet's count.
type restartsView struct {
	resetAfter time.Duration
	now        time.Time
}

func (r restartsView) count(v sessionView) int {
	if p := v.Placement; p != nil && p.Restarting(r.now, r.resetAfter) {
		return max(p.Restarts, v.Sess.RestartCount)
	}
	return v.Sess.RestartCount
}

// statusText is the STATUS column: the stored status, except for a
// session whose container was started again after it stopped ("restarting
// (3)": 3 restarts since it last stayed up for cleanup.crash_loop_reset_after)
// and one torn down for crash-looping ("failed (crash-loop)").
func statusText(s *desired.Session, restarts int) string {
	switch {
	case s.Status == desired.StatusTerminating && s.TerminateReason == string(reconcile.ReasonCrashLoop):
		return "failed (crash-loop)"
	case (s.Status == desired.StatusRunning || s.Status == desired.StatusGrace) && restarts > 0:
		return fmt.Sprintf("restarting (%d)", restarts)
	}
	return string(s.Status)
}

func containerOf(s *desired.Session) string {
	if s.Spec.ContainerName != "" {
		return s.Spec.ContainerName
	}
	return desired.ContainerName(s.Key)
}

func lifetimeLeft(s *desired.Session, now time.Time) string {
	if s.Mode == desired.ModePersistent {
		return "never"
	}
	left := s.MaxLifetimeAt.Sub(now)
	if left <= 0 {
		return "expired"
	}
	return formatAge(left)
}

// formatAge renders a duration truncated to its largest units: 45s, 5m,
// 2h, 2h30m. A negative duration (clock skew) shows as 0s.
func formatAge(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int64(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int64(d/time.Minute))
	}
	h := int64(d / time.Hour)
	m := int64((d % time.Hour) / time.Minute)
	if m == 0 {
		return fmt.Sprintf("%dh", h)
	}
	return fmt.Sprintf("%dh%dm", h, m)
}

type listJSON struct {
	User                string     `json:"user"`
	Project             string     `json:"project"`
	Container           string     `json:"container"`
	Status              string     `json:"status"`
	Mode                string     `json:"mode"`
	Connections         int        `json:"connections"`
	CreatedAt           time.Time  `json:"created_at"`
	MaxLifetimeAt       *time.Time `json:"max_lifetime_at"`
	GraceExpiry         *time.Time `json:"grace_expiry"`
	LifetimeLeftSeconds *int64     `json:"lifetime_left_seconds"`
	// Restarts counts the container's restarts since it last stayed up
	// for the crash-loop reset time; NextRestartAt is when the next one is
	// allowed (null when not backing off).
	Restarts      int        `json:"restarts"`
	NextRestartAt *time.Time `json:"next_restart_at"`
}

func renderListJSON(w io.Writer, views []sessionView, r restartsView) error {
	now := r.now
	out := make([]listJSON, 0, len(views))
	for _, v := range views {
		s := v.Sess
		j := listJSON{User: s.Key.User, Project: s.Key.Project, Container: containerOf(s), Status: string(s.Status),
			Mode: string(s.Mode), Connections: v.Live, CreatedAt: s.CreatedAt.UTC()}
		if s.Mode != desired.ModePersistent {
			at := s.MaxLifetimeAt.UTC()
			left := int64(s.MaxLifetimeAt.Sub(now) / time.Second)
			if left < 0 {
				left = 0
			}
			j.MaxLifetimeAt, j.LifetimeLeftSeconds = &at, &left
		}
		if !s.GraceExpiry.IsZero() {
			g := s.GraceExpiry.UTC()
			j.GraceExpiry = &g
		}
		j.Restarts = r.count(v)
		if s.RestartCount > 0 && s.NextRestartAt.After(now) {
			n := s.NextRestartAt.UTC()
			j.NextRestartAt = &n
		}
		out = append(out, j)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// warnFutureRows says on w when rows were written after now: the clock
// stepped back since, and the ages shown are wrong until it catches up.
func warnFutureRows(w io.Writer, views []sessionView, now time.Time) {
	var d desired.State
	for _, v := range views {
		d.Sessions = append(d.Sessions, v.Sess)
	}
	rows := desired.FutureRows(d, now)
	if len(rows) == 0 {
		return
	}
	r := rows[0]
	fmt.Fprintf(w, "Warning: %d timestamp(s) lie in the future (newest: %s of %s, %s ahead): the clock stepped back since they were written; ages and lifetimes are wrong until it catches up\n",
		len(rows), r.Field, r.Key, r.At.Sub(now).Round(time.Second))
}
