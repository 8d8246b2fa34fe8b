package dockeract

import (
	"context"

	"github.com/podspawn/podspawn/reconcile"
)

// preparedKey names a container Prepare created: the action's container
// of one session generation.
type preparedKey struct{ target, sessionID string }

// Prepare creates a create-container action's container without starting
// it (actions.Preparer), after the same host access check as Execute, so
// that Execute only starts it. Docker accepts a container whose network is
// still being created (some versions refuse it; then Execute creates it).
// A container that mounts volumes is left to Execute: they are created
// after the network, and Docker would make a missing one without labels.
func (d *Executor) Prepare(ctx context.Context, a reconcile.Action) {
	if a.Kind != reconcile.KindCreateContainer || a.Container == nil || len(a.Container.Volumes) > 0 {
		return
	}
	if err := d.ensureHostFirewall(ctx, a.Kind); err != nil {
		return
	}
	if err := d.prepareMounts(a.Container); err != nil {
		return
	}
	c, err := d.create(ctx, a)
	if err != nil {
		return
	}
	d.prepared.Store(preparedKey{a.Target, a.SessionID}, c)
}

// takePrepared returns the container Prepare created for a, once.
func (d *Executor) takePrepared(a reconcile.Action) (adopted, bool) {
	v, ok := d.prepared.LoadAndDelete(preparedKey{a.Target, a.SessionID})
	if !ok {
		return adopted{}, false
	}
	return v.(adopted), true
}
