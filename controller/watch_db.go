package controller

import (
	"context"

	"github.com/go-logr/logr"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/sqlstore"
)

// dbWatcher polls the database's data_version and, when another connection
// committed, diffs the session stamps and enqueues the keys that changed.
// It also hands the current leases to the process watcher.
type dbWatcher struct {
	w      *sqlstore.Watcher
	log    logr.Logger
	procs  *procWatcher
	notify func(desired.SessionKey)

	version int64
	prev    map[desired.SessionKey]sqlstore.SessionStamp
	primed  bool
	failing bool
}

// poll checks for a change once.
func (w *dbWatcher) poll(ctx context.Context) {
	err := w.check(ctx)
	switch {
	case err != nil && !w.failing:
		w.failing = true
		w.log.Error(err, "Watching the state database failed; relying on deadlines and resyncs until it recovers")
	case err != nil:
		w.log.V(1).Info("Watching the state database still fails", "err", err.Error())
	case w.failing:
		w.failing = false
		w.log.Info("Watching the state database again")
	}
	w.procs.check()
}

func (w *dbWatcher) check(ctx context.Context) error {
	v, err := w.w.DataVersion(ctx)
	if err != nil {
		return err
	}
	if w.primed && v == w.version {
		return nil
	}
	snap, err := w.w.Snapshot(ctx)
	if err != nil {
		return err
	}
	if w.primed {
		for k, st := range snap.Sessions {
			if old, ok := w.prev[k]; !ok || old != st {
				w.notify(k)
			}
		}
		for k := range w.prev {
			if _, ok := snap.Sessions[k]; !ok {
				w.notify(k)
			}
		}
	}
	w.version, w.prev, w.primed = v, snap.Sessions, true
	w.procs.sync(snap.Leases)
	return nil
}
