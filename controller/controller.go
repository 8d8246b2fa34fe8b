// Package controller drives reconciliation: it loads desired and observed
// state, asks reconcile.Compute for a plan and executes it key by key
// under the per-user lock. The same per-key function serves the one-shot
// pass (cleanup, admin commands, spawn) and the daemon's work queue.
package controller

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/utils/clock"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/keys"
	"github.com/podspawn/podspawn/desired/lock"
	"github.com/podspawn/podspawn/desired/sqlstore"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/observed/dockerobs"
	"github.com/podspawn/podspawn/observed/proc"
	"github.com/podspawn/podspawn/reconcile"
)

// Controller holds the dependencies of a reconcile.
type Controller struct {
	Store    *sqlstore.Store
	KeyDir   string
	LockDir  string
	Observer dockerobs.API
	Executor actions.Executor
	Options  reconcile.Options
	Clock    clock.WithTicker
	Log      logr.Logger
	// Workers bounds how many keys are reconciled at once.
	Workers int
	// ReconcileTimeout bounds one key's reconcile.
	ReconcileTimeout time.Duration
	// LockTimeout bounds the wait for a user's lock.
	LockTimeout time.Duration
	// Guard bounds what a pass removes because desired state is missing.
	Guard reconcile.GuardLimits

	guard guardCache
}

// guardCache shares the whole plan's guard decision between per-key
// reconciles: a key's own plan cannot tell a mass removal from one user
// removed, so the first key that needs the decision computes it from a
// full plan and keys that started before that computation reuse it.
type guardCache struct {
	mu      sync.Mutex
	asked   atomic.Uint64 // ticks once per request and per computation
	decided uint64        // the tick at which the cached decision started reading state
	holds   []reconcile.Hold
}

func (c *Controller) workers() int {
	if c.Workers < 1 {
		return 1
	}
	return c.Workers
}

// LoadDesired reads the whole desired state, or fails as a whole.
func (c *Controller) LoadDesired(ctx context.Context) (desired.State, error) {
	sessions, err := c.Store.Load(ctx)
	if err != nil {
		return desired.State{}, err
	}
	users, err := keys.ListUsers(c.KeyDir)
	if err != nil {
		return desired.State{}, err
	}
	return desired.State{InstanceID: c.Store.InstanceID(), Sessions: sessions, Users: users, DatabaseCreatedAt: c.Store.CreatedAt()}, nil
}

// Observe lists every labelled Docker object (one call per kind) and
// checks the lease processes of d.
func (c *Controller) Observe(ctx context.Context, d desired.State) (observed.State, error) {
	objs, err := dockerobs.List(ctx, c.Observer, "")
	if err != nil {
		return observed.State{}, err
	}
	return observed.State{Objects: objs, Exited: proc.Exited(leaseRefs(d))}, nil
}

func leaseRefs(d desired.State) []observed.ProcessRef {
	var refs []observed.ProcessRef
	for _, s := range d.Sessions {
		for _, l := range s.Leases {
			refs = append(refs, observed.ProcessRef{PID: l.PID, Start: l.PIDStart})
		}
	}
	return refs
}

// Plan computes the full plan at the current time, with the actions the
// blast-radius guard holds moved to Held.
func (c *Controller) Plan(ctx context.Context) (reconcile.Plan, error) {
	tick := c.guard.asked.Add(1)
	d, err := c.LoadDesired(ctx)
	if err != nil {
		return reconcile.Plan{}, err
	}
	o, err := c.Observe(ctx, d)
	if err != nil {
		return reconcile.Plan{}, err
	}
	p := c.guarded(reconcile.Compute(d, o, c.Clock.Now(), c.Options), d, o)
	c.remember(tick, p.Holds)
	return p, nil
}

// guarded applies the guard to a full plan.
func (c *Controller) guarded(p reconcile.Plan, d desired.State, o observed.State) reconcile.Plan {
	return reconcile.Guard(p, d, o, c.Guard)
}

// HoldFix tells an operator how to proceed with held removals.
const HoldFix = "check the plan with 'podspawn cleanup --dry-run'; if the removals are meant, run 'podspawn cleanup --allow-mass-removal' once"

// LogHolds reports the guard's rules, once per pass.
func (c *Controller) LogHolds(p reconcile.Plan) {
	for _, h := range p.Holds {
		c.Log.Error(nil, "Holding removals (blast-radius guard)", "rule", h.Reason, "sessions", len(h.Keys), "detail", h.Detail, "fix", HoldFix)
	}
}

// remember caches a decision whose state was read after tick.
func (c *Controller) remember(tick uint64, holds []reconcile.Hold) {
	c.guard.mu.Lock()
	defer c.guard.mu.Unlock()
	if tick > c.guard.decided {
		c.guard.decided, c.guard.holds = tick, holds
	}
}

// holds returns a guard decision read after the caller's tick: the cached
// one if it is that fresh, else one from a new full plan.
func (c *Controller) holds(ctx context.Context, since uint64) ([]reconcile.Hold, error) {
	if c.Guard.Allow {
		return nil, nil
	}
	c.guard.mu.Lock()
	if c.guard.decided > since {
		h := c.guard.holds
		c.guard.mu.Unlock()
		return h, nil
	}
	c.guard.mu.Unlock()
	p, err := c.Plan(ctx)
	if err != nil {
		return nil, fmt.Errorf("deciding whether removals are held (blast-radius guard): %w", err)
	}
	return p.Holds, nil
}

// PlanKeys computes the plan restricted to keys, from fresh per-key state.
func (c *Controller) PlanKeys(ctx context.Context, ks []desired.SessionKey) (reconcile.Plan, error) {
	var merged reconcile.Plan
	merged.Now = c.Clock.Now()
	for _, k := range ks {
		p, err := c.planKey(ctx, k, merged.Now)
		if err != nil {
			return reconcile.Plan{}, err
		}
		merged.Actions = append(merged.Actions, p.Actions...)
		merged.Skipped = append(merged.Skipped, p.Skipped...)
		merged.Unchanged += p.Unchanged
		merged.Wakes = append(merged.Wakes, p.Wakes...)
		if !p.Wake.IsZero() && (merged.Wake.IsZero() || p.Wake.Before(merged.Wake)) {
			merged.Wake = p.Wake
		}
	}
	// Plans are ordered by key; ks need not be.
	slices.SortStableFunc(merged.Wakes, func(a, b reconcile.KeyWake) int { return a.Key.Compare(b.Key) })
	return merged, nil
}

// planKey loads one key's desired and observed state and computes its plan.
func (c *Controller) planKey(ctx context.Context, k desired.SessionKey, now time.Time) (reconcile.Plan, error) {
	d := desired.State{InstanceID: c.Store.InstanceID()}
	sess, err := c.Store.LoadKey(ctx, k)
	if err != nil {
		return reconcile.Plan{}, err
	}
	if sess != nil {
		d.Sessions = []*desired.Session{sess}
	}
	if d.Users, err = keys.ListUsers(c.KeyDir); err != nil {
		return reconcile.Plan{}, err
	}
	objs, err := c.observeKey(ctx, k)
	if err != nil {
		return reconcile.Plan{}, err
	}
	o := observed.State{Objects: objs, Exited: proc.Exited(leaseRefs(d))}
	return reconcile.Compute(d, o, now, c.Options), nil
}

// Result is what happened to one action.
type Result struct {
	Action  reconcile.Action
	Outcome actions.Outcome
	Err     error
}

// KeyReport is the outcome of reconciling one key.
type KeyReport struct {
	Key     desired.SessionKey
	Plan    reconcile.Plan
	Results []Result
	Err     error
}

// lockName maps a key to its per-user lock. Unattributed objects share one.
func lockName(k desired.SessionKey) string {
	if k == desired.Unattributed {
		return "_unattributed"
	}
	return k.User
}

// ReconcileKey reconciles one key: it takes the user's lock (unless the
// caller holds it), recomputes the key's plan from fresh state (so a
// reconnect that happened since any earlier plan wins) and executes it in
// order, stopping at the first failure so a row is never deleted before
// Docker agreed.
func (c *Controller) ReconcileKey(ctx context.Context, k desired.SessionKey, lockHeld bool) (rep KeyReport) {
	return c.reconcileKey(ctx, k, lockHeld, nil)
}

// reconcileKey is ReconcileKey; a pass that planned everything hands over
// its guard decision as decided, others ask for a fresh one when needed.
func (c *Controller) reconcileKey(ctx context.Context, k desired.SessionKey, lockHeld bool, decided *[]reconcile.Hold) (rep KeyReport) {
	rep.Key = k
	since := c.guard.asked.Add(1)
	defer func() {
		if r := recover(); r != nil {
			rep.Err = fmt.Errorf("panic while reconciling %s: %v\n%s", k, r, debug.Stack())
		}
	}()
	if c.ReconcileTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.ReconcileTimeout)
		defer cancel()
	}
	if !lockHeld {
		lctx := ctx
		if c.LockTimeout > 0 {
			var cancel context.CancelFunc
			lctx, cancel = context.WithTimeout(ctx, c.LockTimeout)
			defer cancel()
		}
		l, err := lock.Acquire(lctx, c.LockDir, lockName(k))
		if err != nil {
			rep.Err = err
			return rep
		}
		defer l.Unlock()
	}
	plan, err := c.planKey(ctx, k, c.Clock.Now())
	if err != nil {
		rep.Err = err
		return rep
	}
	log := c.Log.WithValues("user", k.User, "project", k.Project)
	if plan.NeedsGuard() {
		var holds []reconcile.Hold
		if decided != nil {
			holds = *decided
		} else if holds, err = c.holds(ctx, since); err != nil {
			rep.Plan, rep.Err = plan, err
			return rep
		}
		plan = reconcile.HoldKeys(plan, holds)
		if len(plan.Held) > 0 {
			// The pass that decided it reports the rule; this is the key's share.
			log.V(1).Info("Holding removals (blast-radius guard)", "held", len(plan.Held))
		}
	}
	rep.Plan = plan
	for _, a := range plan.Actions {
		_, dry := c.Executor.(*actions.Recording)
		if !dry {
			log.Info(actionMessage(a.Kind), "action", a.Kind, "target", a.Target, "reason", a.Reason, "detail", a.Detail)
		}
		if a.Kind == reconcile.KindDeleteSession && !dry {
			if err := c.confirmGone(ctx, k, a.SessionID); err != nil {
				rep.Results = append(rep.Results, Result{Action: a, Err: err})
				rep.Err = err
				return rep
			}
		}
		o, err := c.Executor.Execute(ctx, a)
		rep.Results = append(rep.Results, Result{Action: a, Outcome: o, Err: err})
		if err != nil {
			rep.Err = err
			return rep
		}
	}
	return rep
}

// confirmGone asks Docker again, right before a row is deleted, whether
// any object of the generation is left. A list taken while dockerd shuts
// down can miss objects; deleting the row then would forget them.
func (c *Controller) confirmGone(ctx context.Context, k desired.SessionKey, sessionID string) error {
	if k == desired.Unattributed {
		return nil
	}
	objs, err := dockerobs.ListKey(ctx, c.Observer, k)
	if err != nil {
		return fmt.Errorf("confirming that session %s is gone from Docker: %w", k, err)
	}
	var left []string
	for _, o := range objs {
		// A protected object stays by the operator's choice; it does not hold the row.
		if o.SessionID() == sessionID && !o.Kept() {
			left = append(left, fmt.Sprintf("%s %s", o.Kind, o.Name))
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("session %s still has %s in Docker; keeping its record for the next pass", k, strings.Join(left, ", "))
	}
	return nil
}

func actionMessage(k reconcile.Kind) string {
	switch k.Effect() {
	case reconcile.EffectCreate:
		return "Creating object"
	case reconcile.EffectRemove:
		return "Removing object"
	}
	return "Updating session"
}

// Report is the outcome of a pass.
type Report struct {
	// Plan is the plan the pass started from.
	Plan reconcile.Plan
	Keys []KeyReport
}

// Held returns the actions the guard held in this pass and the rules that
// held them, each rule once with the union of its keys.
func (r Report) Held() ([]reconcile.Action, []reconcile.Hold) {
	var held []reconcile.Action
	var holds []reconcile.Hold
	for _, k := range r.Keys {
		held = append(held, k.Plan.Held...)
	next:
		for _, h := range k.Plan.Holds {
			for i := range holds {
				if holds[i].Reason == h.Reason {
					holds[i].Keys = append(holds[i].Keys, h.Keys...)
					continue next
				}
			}
			h.Keys = slices.Clone(h.Keys)
			holds = append(holds, h)
		}
	}
	return held, holds
}

// Failed returns the key reports that ended in an error.
func (r Report) Failed() []KeyReport {
	var out []KeyReport
	for _, k := range r.Keys {
		if k.Err != nil {
			out = append(out, k)
		}
	}
	return out
}

// Results flattens every action result in key order.
func (r Report) Results() []Result {
	var out []Result
	for _, k := range r.Keys {
		out = append(out, k.Results...)
	}
	return out
}

// ErrLoad wraps failures to load state: nothing was planned or done.
var ErrLoad = errors.New("loading state")

// reconcileUserKeys takes the lock name once and reconciles the keys
// ks[i] for i in idx, writing each report to out[i].
func (c *Controller) reconcileUserKeys(ctx context.Context, name string, ks []desired.SessionKey, idx []int, out []KeyReport, decided *[]reconcile.Hold) {
	lctx := ctx
	if c.LockTimeout > 0 {
		var cancel context.CancelFunc
		lctx, cancel = context.WithTimeout(ctx, c.LockTimeout)
		defer cancel()
	}
	l, err := lock.Acquire(lctx, c.LockDir, name)
	if err != nil {
		for _, i := range idx {
			out[i] = KeyReport{Key: ks[i], Err: err}
		}
		return
	}
	defer l.Unlock()
	for _, i := range idx {
		out[i] = c.reconcileKey(ctx, ks[i], true, decided)
	}
}

// ReconcileOnce runs one pass. With no keys it plans everything and
// reconciles the keys that have work; with keys, only those. Keys are
// reconciled concurrently, at most Workers at a time.
func (c *Controller) ReconcileOnce(ctx context.Context, ks ...desired.SessionKey) (Report, error) {
	var (
		plan reconcile.Plan
		err  error
	)
	var decided *[]reconcile.Hold
	if len(ks) == 0 {
		plan, err = c.Plan(ctx)
		// Held keys too, so their reports say what was held.
		ks = plan.Keys()
		for _, a := range plan.Held {
			if !slices.Contains(ks, a.Key) {
				ks = append(ks, a.Key)
			}
		}
		decided = &plan.Holds
	} else {
		plan, err = c.PlanKeys(ctx, ks)
	}
	if err != nil {
		return Report{}, fmt.Errorf("%w: %w", ErrLoad, err)
	}
	rep := Report{Plan: plan, Keys: make([]KeyReport, len(ks))}
	// One task per user: the keys of a user share its lock, so handing
	// them to separate workers would only make those workers wait.
	var order []string
	byUser := map[string][]int{}
	for i, k := range ks {
		n := lockName(k)
		if _, ok := byUser[n]; !ok {
			order = append(order, n)
		}
		byUser[n] = append(byUser[n], i)
	}
	sem := make(chan struct{}, c.workers())
	var wg sync.WaitGroup
	for _, name := range order {
		idx := byUser[name]
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c.reconcileUserKeys(ctx, name, ks, idx, rep.Keys, decided)
		}()
	}
	wg.Wait()
	return rep, nil
}
