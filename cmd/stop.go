package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/controller"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/lock"
	"github.com/podspawn/podspawn/desired/sqlstore"
	"github.com/podspawn/podspawn/reconcile"
)

// userLockTimeout bounds the wait for a user's lock in admin commands;
// tests shorten it.
var userLockTimeout = 30 * time.Second

// StopCmd destroys one session.
type StopCmd struct {
	Session string `arg:"" name:"user[@project]" help:"The session: alice for alice's default session, alice@backend for her backend project."`
	DryRun  bool   `help:"Print the plan of the teardown and change nothing."`
	Output  string `help:"Format of the --dry-run plan: text or json." enum:"text,json" default:"text" short:"o"`
}

// Help is shown by podspawn stop --help.
func (StopCmd) Help() string {
	return `Destroys the session's container, its companion service containers and their volumes, its network, and then its record in the state database. Connected SSH sessions are cut off and unsaved work inside the container is lost.

The session is first marked for removal (under the user's lock, so a login cannot race it), then torn down. If Docker refuses a removal, stop names the object and Docker's error and exits 1; the session stays marked for removal and 'podspawn cleanup' finishes the teardown once the cause is fixed.

Exit status: 0 destroyed (or, with --dry-run, plan printed), 1 error.`
}

// Run marks the session terminating and reconciles it.
func (c *StopCmd) Run(a *App) error {
	key, err := desired.ParseSessionKey(c.Session)
	if err != nil {
		return err
	}
	ctx, cancel := signalContext()
	defer cancel()
	st, err := a.Store(ctx)
	if err != nil {
		return err
	}
	if c.DryRun {
		sess, err := st.LoadKey(ctx, key)
		if err != nil {
			return err
		}
		if sess == nil {
			return noSessionError(key)
		}
		ctrl, err := a.Controller(ctx, ControllerOptions{DryRun: true})
		if err != nil {
			return err
		}
		return printWhatIf(ctx, a, ctrl, c.Output, []*desired.Session{sess}, reconcile.ReasonUserRequested, "requested by podspawn stop", nil)
	}

	cfg, err := a.Config()
	if err != nil {
		return err
	}
	l, err := lockUser(ctx, cfg.State.LockDir, key.User)
	if err != nil {
		return err
	}
	defer l.Unlock()
	sess, err := st.LoadKey(ctx, key)
	if err != nil {
		return err
	}
	if sess == nil {
		return noSessionError(key)
	}
	ctrl, err := readyController(ctx, a)
	if err != nil {
		return err
	}
	project := key.Project
	if _, err := st.MarkTerminatingWhere(ctx, key.User, &project, string(reconcile.ReasonUserRequested), a.Clock.Now()); err != nil {
		return err
	}
	if err := teardown(ctx, a, ctrl, st, sess); err != nil {
		return fmt.Errorf("could not destroy session %w\n  The session stays marked for removal (status terminating); fix the cause, then run 'podspawn cleanup' (or this command again) to finish the teardown", err)
	}
	fmt.Fprintln(a.Stdout, destroyedLine(sess))
	return nil
}

func noSessionError(k desired.SessionKey) error {
	return fmt.Errorf("no active session for %s", k)
}

func destroyedLine(s *desired.Session) string {
	return fmt.Sprintf("Destroyed session: %s (container %s)", s.Key, containerOf(s))
}

// lockUser takes the per-user lock that spawn and the controller take, so
// an admin edit never races a login of the same user.
func lockUser(ctx context.Context, dir, user string) (*lock.Lock, error) {
	return lock.AcquireUser(ctx, dir, user, userLockTimeout)
}

// readyController builds the controller and checks that Docker answers,
// so that a teardown is not started (and a session marked) while Docker
// is down.
func readyController(ctx context.Context, a *App) (*controller.Controller, error) {
	ctrl, err := a.Controller(ctx, ControllerOptions{})
	if err != nil {
		return nil, err
	}
	dc, err := a.Docker()
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := dc.Ping(pctx); err != nil {
		return nil, fmt.Errorf("Docker is not reachable, nothing was changed: %s (start Docker, e.g. systemctl start docker, then retry)", shortReason(err))
	}
	return ctrl, nil
}

// teardownFailure is a teardown that stopped at a Docker or database error.
type teardownFailure struct {
	Key  desired.SessionKey
	Err  error
	Done []string
}

func (f *teardownFailure) Error() string {
	msg := fmt.Sprintf("%s: %v", f.Key, f.Err)
	if len(f.Done) > 0 {
		msg += " (already done: " + strings.Join(f.Done, ", ") + ")"
	}
	return msg
}

// teardown reconciles a session already marked terminating (the caller
// holds the user's lock) and checks that its record is really gone:
// success is claimed only for what was done.
func teardown(ctx context.Context, a *App, ctrl *controller.Controller, st *sqlstore.Store, sess *desired.Session) error {
	rep := ctrl.ReconcileKeyLocked(ctx, sess.Key)
	// Protected or foreign objects are never removed; say so rather than
	// let "Destroyed" suggest they are gone.
	for _, s := range rep.Plan.Skipped {
		fmt.Fprintf(a.Stderr, "Note: left %s %s of %s in place (%s: %s)\n", s.ObjectKind, s.Target, sess.Key, s.Reason, s.Detail)
	}
	if rep.Err != nil {
		f := &teardownFailure{Key: sess.Key, Err: rep.Err}
		for _, r := range rep.Results {
			if r.Err == nil && r.Outcome == actions.Changed && r.Action.Kind.Effect() == reconcile.EffectRemove {
				f.Done = append(f.Done, verbPast(r.Action))
			}
		}
		return f
	}
	now, err := st.LoadKey(ctx, sess.Key)
	if err != nil {
		return &teardownFailure{Key: sess.Key, Err: fmt.Errorf("checking that the record is gone: %w", err)}
	}
	if now != nil && now.ID == sess.ID {
		return &teardownFailure{Key: sess.Key, Err: fmt.Errorf("still recorded (status %s) after the teardown", now.Status)}
	}
	return nil
}

// printWhatIf prints the plan of tearing sessions down for reason, as the
// real command would after marking them. edit may change desired state
// further (remove-user drops the user).
func printWhatIf(ctx context.Context, a *App, ctrl *controller.Controller, output string, sessions []*desired.Session, reason reconcile.Reason, detail string, edit func(*desired.State)) error {
	var ks []desired.SessionKey
	var marks []reconcile.Action
	for _, s := range sessions {
		ks = append(ks, s.Key)
		if s.Status != desired.StatusTerminating {
			marks = append(marks, reconcile.Action{Kind: reconcile.KindMarkTerminating, Key: s.Key, Target: "session " + s.Key.String(),
				SessionID: s.ID, Reason: reason, Detail: detail})
		}
	}
	plan, err := ctrl.PlanKeysWith(ctx, ks, func(d *desired.State) {
		for _, s := range sessions {
			if cur := d.Session(s.Key); cur != nil && cur.Status != desired.StatusTerminating {
				cur.Status = desired.StatusTerminating
				cur.TerminateReason = string(reason)
			}
		}
		if edit != nil {
			edit(d)
		}
	})
	if err != nil {
		return err
	}
	// The real command marks the sessions before reconciling; show that step.
	plan.Actions = append(marks, plan.Actions...)
	if output == "json" {
		return renderPlanJSON(a.Stdout, plan)
	}
	renderPlanText(a.Stdout, plan)
	return nil
}
