// Package actions executes plan actions. Every action is idempotent: a
// removal of what is already gone succeeds, a creation of what already
// exists with the session's labels adopts it, and nothing without our
// labels is ever touched.
package actions

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/podspawn/podspawn/reconcile"
)

// Outcome says what executing an action did.
type Outcome string

const (
	Changed     Outcome = "changed"
	Unchanged   Outcome = "unchanged"
	WouldChange Outcome = "would-change"
)

// Executor runs one action.
type Executor interface {
	Execute(ctx context.Context, a reconcile.Action) (Outcome, error)
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
}

func outcome(changed bool, err error) (Outcome, error) {
	if err != nil {
		return "", err
	}
	if changed {
		return Changed, nil
	}
	return Unchanged, nil
}

// executeStore runs the database kinds.
func executeStore(ctx context.Context, st Store, a reconcile.Action, now time.Time) (Outcome, bool, error) {
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
	default:
		return "", false, nil
	}
	if err != nil {
		err = fmt.Errorf("%s %s: %w", a.Kind, a.Target, err)
	}
	o, err := outcome(changed, err)
	return o, true, err
}

// Recording is the dry-run executor: it records every action and changes
// nothing, so a dry run goes through the same code path as a real pass.
type Recording struct {
	mu      sync.Mutex
	Actions []reconcile.Action
}

// Execute records a.
func (r *Recording) Execute(_ context.Context, a reconcile.Action) (Outcome, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Actions = append(r.Actions, a)
	return WouldChange, nil
}
