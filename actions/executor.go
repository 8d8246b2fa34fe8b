// Package actions executes plan actions. Every action is idempotent: a
// removal of what is already gone succeeds, a creation of what already
// exists with the session's labels adopts it, and nothing without our
// labels is ever touched.
package actions

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/podspawn/podspawn/reconcile"
)

// Outcome says what executing an action did.
type Outcome string

const (
	Changed   Outcome = "changed"
	Unchanged Outcome = "unchanged"
)

// Effect is what an action does to the world, for counts, messages and
// which actions may run side by side.
type Effect string

const (
	EffectCreate Effect = "create"
	EffectChange Effect = "change"
	EffectRemove Effect = "remove"
)

// EffectOf groups a kind into create, change or remove.
func EffectOf(k reconcile.Kind) Effect {
	switch k {
	case reconcile.KindCreateNetwork, reconcile.KindCreateVolume, reconcile.KindCreateContainer:
		return EffectCreate
	case reconcile.KindRemoveContainer, reconcile.KindRemoveNetwork, reconcile.KindRemoveVolume, reconcile.KindDeleteSession:
		return EffectRemove
	}
	return EffectChange
}

// Executor runs one action.
type Executor interface {
	Execute(ctx context.Context, a reconcile.Action) (Outcome, error)
}

// Preparer is an Executor that can create a create-container action's
// container ahead of the actions before it in the plan (its network), so
// that executing the action later only has to start it: on a new session
// the container's creation then overlaps the network's. Prepare is best
// effort and reports nothing: whatever it did not do, Execute does, and a
// container it created carries the session's labels like any other, so a
// plan that fails before the start removes it as it would a started one.
// It never creates what must exist before the container (the volumes it
// mounts, which Docker would otherwise create without labels).
type Preparer interface {
	Prepare(ctx context.Context, a reconcile.Action)
}

// ErrTerminal marks errors that retrying cannot fix (an object that is in
// the way and not ours); the controller does not hot-loop on them.
var ErrTerminal = errors.New("needs an operator")

// Store is the desired-state side of the executor.
type Store interface {
	MarkRunning(ctx context.Context, sessionID string, now time.Time) (bool, error)
	StartGrace(ctx context.Context, sessionID string, expiry, now time.Time) (bool, error)
	CancelGrace(ctx context.Context, sessionID string, now time.Time) (bool, error)
	MarkTerminating(ctx context.Context, sessionID, reason string, now time.Time) (bool, error)
	DeleteSession(ctx context.Context, sessionID string) (bool, error)
	ReleaseLease(ctx context.Context, leaseID int64) (bool, error)
	RecordRestart(ctx context.Context, sessionID string, count int, nextAt, now time.Time) (bool, error)
	ResetRestarts(ctx context.Context, sessionID string, now time.Time) (bool, error)
	RecordWarning(ctx context.Context, sessionID string, before time.Duration, now time.Time) (bool, error)
}

// OutcomeOf is the outcome of a step that reports whether it changed
// anything.
func OutcomeOf(changed bool, err error) (Outcome, error) {
	if err != nil {
		return "", err
	}
	if changed {
		return Changed, nil
	}
	return Unchanged, nil
}

// ExecuteStore runs the database kinds; handled is false for any other
// kind, which the runtime's executor runs.
func ExecuteStore(ctx context.Context, st Store, a reconcile.Action, now time.Time) (Outcome, bool, error) {
	var (
		changed bool
		err     error
	)
	switch a.Kind {
	case reconcile.KindMarkRunning:
		changed, err = st.MarkRunning(ctx, a.SessionID, now)
	case reconcile.KindStartGrace:
		changed, err = st.StartGrace(ctx, a.SessionID, a.At, now)
	case reconcile.KindCancelGrace:
		changed, err = st.CancelGrace(ctx, a.SessionID, now)
	case reconcile.KindMarkTerminating:
		changed, err = st.MarkTerminating(ctx, a.SessionID, string(a.Reason), now)
	case reconcile.KindDeleteSession:
		changed, err = st.DeleteSession(ctx, a.SessionID)
	case reconcile.KindReleaseLease:
		changed, err = st.ReleaseLease(ctx, a.LeaseID)
	case reconcile.KindResetRestarts:
		changed, err = st.ResetRestarts(ctx, a.SessionID, now)
	case reconcile.KindWarn:
		changed, err = warn(ctx, st, a, now)
	default:
		return "", false, nil
	}
	if err != nil {
		err = fmt.Errorf("%s %s: %w", a.Kind, a.Target, err)
	}
	o, err := OutcomeOf(changed, err)
	return o, true, err
}

// HostFirewall keeps the host access rules in place (hostfw.Firewall):
// with security.block_host_access, session networks cannot reach the
// host's own services.
type HostFirewall interface {
	Ensure(ctx context.Context) ([]string, error)
}

// Images is the runtime's image store: what a session's generation needs
// before it can start, and the builds of project images.
type Images interface {
	ImageExists(ctx context.Context, ref string) (bool, error)
	// BuildImage builds tag from a Dockerfile alone; the build output is
	// returned for error messages.
	BuildImage(ctx context.Context, tag, dockerfile string) (string, error)
}
