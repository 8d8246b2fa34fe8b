package controller

import (
	"context"
	"fmt"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/reconcile"
)

// Target selects sessions to tear down: User's session of Project, or
// with AllProjects every session of User.
type Target struct {
	User        string
	Project     string
	AllProjects bool
}

// Key is the session key a single-session target names.
func (t Target) Key() desired.SessionKey {
	return desired.SessionKey{User: t.User, Project: t.Project}
}

func (t Target) project() *string {
	if t.AllProjects {
		return nil
	}
	return &t.Project
}

// TeardownHooks are a command's own steps, run under the user's lock.
type TeardownHooks struct {
	// Check sees the sessions the target selects before anything is
	// marked; an error leaves everything as it was. It runs even when the
	// target selects none (stop refuses that).
	Check func(t Target, sessions []*desired.Session) error
	// Edit changes desired state once the sessions are marked and before
	// any is torn down (remove-user removes the key file here, so no login
	// can start a new session while the old ones go).
	Edit func(t Target, sessions []*desired.Session) error
	// Done sees each session's outcome as soon as it is known.
	Done func(SessionTeardown)
}

// TargetTeardown is the outcome of one target.
type TargetTeardown struct {
	Target Target
	// Err is a failure before any session was torn down: the lock,
	// loading, Check, marking or Edit; it is returned as it came.
	Err      error
	Sessions []SessionTeardown
}

// SessionTeardown is the outcome of one session.
type SessionTeardown struct {
	// Session is the row as found before it was marked.
	Session *desired.Session
	// Skipped are the objects the plan leaves in place (protected or
	// foreign): gone from the session, not from Docker.
	Skipped []reconcile.Skip
	// Err is nil when the session is destroyed, else a *TeardownError.
	Err error
}

// TeardownError is a session teardown that stopped at a Docker or
// database error. The session stays marked, so a later pass finishes it.
type TeardownError struct {
	Key desired.SessionKey
	Err error
	// Done are the removals that succeeded before the failure.
	Done []reconcile.Action
}

func (e *TeardownError) Error() string { return fmt.Sprintf("%s: %v", e.Key, e.Err) }

func (e *TeardownError) Unwrap() error { return e.Err }

// Teardown destroys the sessions targets select, for reason. Per user,
// under that user's lock (so a login cannot race it): it loads the
// target's sessions, runs Check, marks them terminating (a session already
// terminating keeps its reason), runs Edit, then reconciles each session
// and checks that its record is gone, so success is claimed only for what
// was done. Users are handled in the order they first appear in targets;
// one user's failure does not stop the others.
func (c *Controller) Teardown(ctx context.Context, targets []Target, reason reconcile.Reason, h TeardownHooks) []TargetTeardown {
	out := make([]TargetTeardown, len(targets))
	var users []string
	byUser := map[string][]int{}
	for i, t := range targets {
		out[i].Target = t
		if _, ok := byUser[t.User]; !ok {
			users = append(users, t.User)
		}
		byUser[t.User] = append(byUser[t.User], i)
	}
	for _, u := range users {
		c.teardownUser(ctx, u, byUser[u], reason, h, out)
	}
	return out
}

// teardownUser takes user's lock once for the targets out[i], i in idx.
func (c *Controller) teardownUser(ctx context.Context, user string, idx []int, reason reconcile.Reason, h TeardownHooks, out []TargetTeardown) {
	fail := func(err error) {
		for _, i := range idx {
			out[i].Err = err
		}
	}
	// The name becomes a lock file name; never let it leave the directory.
	if err := desired.ValidateUserName(user); err != nil {
		fail(err)
		return
	}
	l, err := c.lock(ctx, user)
	if err != nil {
		fail(err)
		return
	}
	defer l.Unlock()
	for _, i := range idx {
		out[i] = c.teardownTarget(ctx, out[i].Target, reason, h)
	}
}

// teardownTarget runs one target; the caller holds the user's lock.
func (c *Controller) teardownTarget(ctx context.Context, t Target, reason reconcile.Reason, h TeardownHooks) TargetTeardown {
	res := TargetTeardown{Target: t}
	sessions, err := c.targetSessions(ctx, t)
	if err == nil && h.Check != nil {
		err = h.Check(t, sessions)
	}
	if err == nil && len(sessions) > 0 {
		_, err = c.Store.MarkTerminatingWhere(ctx, t.User, t.project(), string(reason), c.Clock.Now())
	}
	if err == nil && h.Edit != nil {
		err = h.Edit(t, sessions)
	}
	if err != nil {
		res.Err = err
		return res
	}
	for _, s := range sessions {
		r := c.teardownSession(ctx, s)
		if h.Done != nil {
			h.Done(r)
		}
		res.Sessions = append(res.Sessions, r)
	}
	return res
}

func (c *Controller) targetSessions(ctx context.Context, t Target) ([]*desired.Session, error) {
	if t.AllProjects {
		return c.Store.UserSessions(ctx, t.User)
	}
	s, err := c.Store.LoadKey(ctx, t.Key())
	if err != nil || s == nil {
		return nil, err
	}
	return []*desired.Session{s}, nil
}

// teardownSession reconciles a marked session and checks that its record
// is gone; the caller holds the user's lock.
func (c *Controller) teardownSession(ctx context.Context, s *desired.Session) SessionTeardown {
	r := SessionTeardown{Session: s}
	rep := c.ReconcileKeyLocked(ctx, s.Key)
	r.Skipped = rep.Plan.Skipped
	if rep.Err != nil {
		f := &TeardownError{Key: s.Key, Err: rep.Err}
		for _, res := range rep.Results {
			if res.Err == nil && res.Outcome == actions.Changed && actions.EffectOf(res.Action.Kind) == actions.EffectRemove {
				f.Done = append(f.Done, res.Action)
			}
		}
		r.Err = f
		return r
	}
	now, err := c.Store.LoadKey(ctx, s.Key)
	switch {
	case err != nil:
		r.Err = &TeardownError{Key: s.Key, Err: fmt.Errorf("checking that the record is gone: %w", err)}
	case now != nil && now.ID == s.ID:
		r.Err = &TeardownError{Key: s.Key, Err: fmt.Errorf("still recorded (status %s) after the teardown", now.Status)}
	}
	return r
}
