package audit

import (
	"context"
	"sync/atomic"

	"github.com/go-logr/logr"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/reconcile"
)

// Executor decorates the real executor: the process that executes a
// session's first mark-running writes session.create, the one that
// deletes its row writes session.destroy. Both steps change the row once
// per generation (a repeat is Unchanged), so each event is written once
// whichever process (spawn, a one-shot pass, the daemon) gets there.
type Executor struct {
	Next  actions.Executor
	Audit *Writer
	// Actor is who runs this process: the SSH user for spawn, the admin
	// for commands, ActorController for the daemon.
	Actor string
	Log   logr.Logger

	removed atomic.Int64
}

// Prepare passes a to Next when it prepares actions (actions.Preparer);
// preparing changes nothing an audit records.
func (e *Executor) Prepare(ctx context.Context, a reconcile.Action) {
	if p, ok := e.Next.(actions.Preparer); ok {
		p.Prepare(ctx, a)
	}
}

// Execute runs a and audits what it changed. A failed audit write is
// logged, not returned: the action happened, and failing it would only
// make the controller retry what is already done.
func (e *Executor) Execute(ctx context.Context, a reconcile.Action) (actions.Outcome, error) {
	o, err := e.Next.Execute(ctx, a)
	if err != nil || o != actions.Changed {
		return o, err
	}
	if actions.EffectOf(a.Kind) == actions.EffectRemove {
		e.removed.Add(1)
	}
	ev := Event{User: a.Key.User, Project: a.Key.Project, Session: a.SessionID, Reason: string(a.Reason), Container: desired.ContainerName(a.Key)}
	switch a.Kind {
	case reconcile.KindMarkRunning:
		ev.Event, ev.Actor = SessionCreate, e.actor()
	case reconcile.KindDeleteSession:
		ev.Event, ev.Actor = SessionDestroy, e.destroyActor(a.Reason)
	default:
		return o, err
	}
	if werr := e.Audit.Write(ev); werr != nil {
		e.Log.Error(werr, "Writing audit event failed", "event", ev.Event, "user", ev.User, "project", ev.Project)
	}
	return o, err
}

// Removed counts the removals this executor carried out (containers,
// networks, volumes, rows), for the audit record of a cleanup pass.
func (e *Executor) Removed() int64 { return e.removed.Load() }

func (e *Executor) actor() string {
	if e.Actor == "" {
		return ActorController
	}
	return e.Actor
}

// destroyActor: a person's request (stop, remove-user, remove-project, a
// disconnect that ends the session) is theirs; a deadline, an orphan or a
// crash loop is the controller's, whichever process noticed it.
func (e *Executor) destroyActor(r reconcile.Reason) string {
	switch r {
	case reconcile.ReasonUserRequested, reconcile.ReasonUserRemoved, reconcile.ReasonProjectRemoved, reconcile.ReasonDisconnected:
		return e.actor()
	}
	return ActorController
}
