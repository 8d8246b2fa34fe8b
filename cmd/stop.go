package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/podspawn/podspawn/controller"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/reconcile"
)

// userLockTimeout bounds the wait for a user's lock (admin commands and
// the controller they build); tests shorten it.
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

	ctrl, err := a.Controller(ctx, ControllerOptions{})
	if err != nil {
		return err
	}
	res := ctrl.Teardown(ctx, []controller.Target{{User: key.User, Project: key.Project}}, reconcile.ReasonUserRequested, controller.TeardownHooks{
		Check: func(_ controller.Target, sessions []*desired.Session) error {
			if len(sessions) == 0 {
				return noSessionError(key)
			}
			return dockerReady(ctx, a)
		},
		Done: a.printTeardown,
	})[0]
	if res.Err != nil {
		return res.Err
	}
	if err := res.Sessions[0].Err; err != nil {
		return fmt.Errorf("could not destroy session %s\n  The session stays marked for removal (status terminating); fix the cause, then run 'podspawn cleanup' (or this command again) to finish the teardown", failureText(err))
	}
	return nil
}

func noSessionError(k desired.SessionKey) error {
	return fmt.Errorf("no active session for %s", k)
}

// dockerReady checks that Docker answers, so that a teardown is not
// started (and a session marked) while Docker is down.
func dockerReady(ctx context.Context, a *App) error {
	rt, err := a.Runtime()
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := rt.Ping(pctx); err != nil {
		return fmt.Errorf("Docker is not reachable, nothing was changed: %s (start Docker, e.g. systemctl start docker, then retry)", shortReason(err))
	}
	return nil
}

// printTeardown prints a session's outcome as soon as it is known.
func (a *App) printTeardown(r controller.SessionTeardown) {
	// Protected or foreign objects are never removed; say so rather than
	// let "Destroyed" suggest they are gone.
	for _, s := range r.Skipped {
		fmt.Fprintf(a.Stderr, "Note: left %s %s of %s in place (%s: %s)\n", s.ObjectKind, s.Target, r.Session.Key, s.Reason, s.Detail)
	}
	if r.Err == nil {
		fmt.Fprintf(a.Stdout, "Destroyed session: %s (container %s)\n", r.Session.Key, containerOf(r.Session))
	}
}

// failureText is a failed teardown with the removals it already did.
func failureText(err error) string {
	msg := err.Error()
	var f *controller.TeardownError
	if errors.As(err, &f) && len(f.Done) > 0 {
		done := make([]string, len(f.Done))
		for i, a := range f.Done {
			done[i] = verbPast(a)
		}
		msg += " (already done: " + strings.Join(done, ", ") + ")"
	}
	return msg
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
