package controller

import (
	"sync"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/reconcile"
)

// restartReports remembers, per key, what was last reported of a session
// container the runtime restarts itself, so a kubelet's CrashLoopBackOff
// is logged once per change (a new restart, a new exit code), not at
// every pass that sees it.
type restartReports struct {
	mu   sync.Mutex
	last map[desired.SessionKey]string
}

// reportRuntimeRestarts logs k's runtime-restarting skip when it differs
// from the last one logged, and forgets k once the plan has none.
func (c *Controller) reportRuntimeRestarts(k desired.SessionKey, skipped []reconcile.Skip) {
	var skip *reconcile.Skip
	for i := range skipped {
		if skipped[i].Key == k && skipped[i].Reason == reconcile.ReasonRuntimeRestarting {
			skip = &skipped[i]
		}
	}
	r := &c.restarts
	r.mu.Lock()
	defer r.mu.Unlock()
	if skip == nil {
		delete(r.last, k)
		return
	}
	if r.last[k] == skip.Detail {
		return
	}
	if r.last == nil {
		r.last = map[desired.SessionKey]string{}
	}
	r.last[k] = skip.Detail
	c.Log.Info("Session container is being restarted by the runtime", "user", k.User, "project", k.Project,
		"container", skip.Target, "reason", string(skip.Reason), "detail", skip.Detail)
}
