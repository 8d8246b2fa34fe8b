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
	"github.com/podspawn/podspawn/controller/metrics"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/keys"
	"github.com/podspawn/podspawn/desired/lock"
	"github.com/podspawn/podspawn/desired/sqlstore"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/observed/proc"
	"github.com/podspawn/podspawn/reconcile"
)

// Lister lists the runtime's labelled objects (observed/dockerobs.Lister
// for Docker's containers, networks and volumes).
type Lister interface {
	// List returns every labelled object; stopped containers carry their
	// exit code and times.
	List(ctx context.Context) ([]observed.Object, error)
	// ListKey returns the objects of one session key.
	ListKey(ctx context.Context, k desired.SessionKey) ([]observed.Object, error)
	// CountContainers counts the labelled containers in every state.
	CountContainers(ctx context.Context) (int, error)
}

// Controller holds the dependencies of a reconcile.
type Controller struct {
	Store    *sqlstore.Store
	KeyDir   string
	LockDir  string
	Observer Lister
	// Executor runs plan actions; a controller without one only plans
	// (dry runs, doctor).
	Executor actions.Executor
	Options  reconcile.Options
	Clock    clock.WithTicker
	Log      logr.Logger
	// Workers bounds how many keys are reconciled at once.
	Workers int
	// RemoveWorkers bounds how many independent removals run at once: the
	// keys of a pass that hold only orphans, and the objects of the
	// unattributed key. Zero means DefaultRemoveWorkers.
	RemoveWorkers int
	// ReconcileTimeout bounds one key's reconcile.
	ReconcileTimeout time.Duration
	// LockTimeout bounds the wait for a user's lock.
	LockTimeout time.Duration
	// Guard bounds what a pass removes because desired state is missing.
	Guard reconcile.GuardLimits
	// Monotonic, when set, is a monotonic clock (time since a fixed
	// instant) that enables the detection of wall-clock steps between
	// passes (clockstep.go); the daemon sets it.
	Monotonic func() time.Duration
	// BootClock, when set, reads CLOCK_BOOTTIME and the kernel's boot id:
	// one-shot passes record them with the wall clock in the state
	// database and compare with the previous pass's (clockstep.go).
	BootClock func() (boot time.Duration, bootID string, err error)
	// Metrics, when set (the daemon's /metrics), counts what reconciles do.
	Metrics *metrics.Metrics

	guard    guardCache
	clock    clockWatch
	restarts restartReports
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

// DefaultRemoveWorkers is the default of RemoveWorkers. A forced removal
// is dockerd's work (kill, wait for the exit, unmount, delete the layer),
// so removals go to it side by side, at least as many at once as
// `docker rm -f a b c` sends (the docker CLI runs 50): on a busy 2-core
// host 32 at once was about a tenth slower than the CLI (hack/bench-cleanup.sh).
// The bound keeps a pass over thousands of orphans from opening thousands
// of connections.
const DefaultRemoveWorkers = 64

func (c *Controller) removeWorkers() int {
	if c.RemoveWorkers < 1 {
		return DefaultRemoveWorkers
	}
	return c.RemoveWorkers
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
	objs, err := c.Observer.List(ctx)
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
	p, _, err := c.planAll(ctx)
	return p, err
}

// PlanOnce is the plan of a one-shot pass (a dry run): Plan, holding
// teardowns after a step of the wall clock since the last one-shot pass
// as ReconcileOnce would, without recording this pass's clocks.
func (c *Controller) PlanOnce(ctx context.Context) (reconcile.Plan, error) {
	if _, err := c.checkStoredClock(ctx); err != nil {
		return reconcile.Plan{}, err
	}
	return c.Plan(ctx)
}

// planAll is Plan, and returns the state the plan came from.
func (c *Controller) planAll(ctx context.Context) (reconcile.Plan, *passState, error) {
	tick := c.guard.asked.Add(1)
	d, err := c.LoadDesired(ctx)
	if err != nil {
		return reconcile.Plan{}, nil, err
	}
	o, err := c.Observe(ctx, d)
	if err != nil {
		return reconcile.Plan{}, nil, err
	}
	now := c.planNow()
	c.reportFutureRows(d, now)
	p := c.guarded(reconcile.Compute(d, o, now, c.options()), d, o)
	c.remember(tick, p.Holds)
	return p, &passState{desired: d, objects: o.ByKey()}, nil
}

// passState is what a full pass loaded before planning. Its keys that had
// no session row are planned again from it rather than from a new list of
// Docker per key (see planOrphanKey).
type passState struct {
	desired desired.State
	objects map[desired.SessionKey][]observed.Object
}

// guarded applies the guard to a full plan.
func (c *Controller) guarded(p reconcile.Plan, d desired.State, o observed.State) reconcile.Plan {
	return reconcile.Guard(p, d, o, c.Guard)
}

// LogHolds reports the guard's rules, once per pass.
func (c *Controller) LogHolds(p reconcile.Plan) {
	for _, h := range p.Holds {
		c.Log.Error(nil, "Holding removals (blast-radius guard)", "rule", h.Reason, "sessions", len(h.Keys), "detail", h.Detail, "fix", reconcile.HoldFix)
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

// planOrphanKey plans a key that had no session row when pass was
// loaded. If it still has none, its plan is computed from the objects the
// pass listed: without a row every action is the removal of an object
// that was listed old enough, pinned by its ID, and no session can come to
// own it (a new generation's objects carry its new session id), so a new
// list would add nothing but objects made since, which the next pass
// judges. With a row now (a spawn came first), the key is planned from
// scratch as any session is.
func (c *Controller) planOrphanKey(ctx context.Context, k desired.SessionKey, now time.Time, pass *passState) (reconcile.Plan, error) {
	sess, err := c.Store.LoadKey(ctx, k)
	if err != nil {
		return reconcile.Plan{}, err
	}
	if sess != nil {
		return c.planLoadedKey(ctx, k, sess, now, nil)
	}
	d := desired.State{InstanceID: pass.desired.InstanceID, Users: pass.desired.Users, DatabaseCreatedAt: pass.desired.DatabaseCreatedAt}
	return reconcile.Compute(d, observed.State{Objects: pass.objects[k]}, now, c.options()), nil
}

// planLoadedKey computes the plan of key k whose row (nil if none) the
// caller loaded, from a fresh list of its objects.
func (c *Controller) planLoadedKey(ctx context.Context, k desired.SessionKey, sess *desired.Session, now time.Time, seen *[]observed.Object) (reconcile.Plan, error) {
	d := desired.State{InstanceID: c.Store.InstanceID()}
	if sess != nil {
		d.Sessions = []*desired.Session{sess}
	}
	var err error
	if d.Users, err = keys.ListUsers(c.KeyDir); err != nil {
		return reconcile.Plan{}, err
	}
	var objs []observed.Object
	if seen != nil {
		objs = *seen
	} else if objs, err = c.observeKey(ctx, k); err != nil {
		return reconcile.Plan{}, err
	}
	o := observed.State{Objects: objs, Exited: proc.Exited(leaseRefs(d))}
	return reconcile.Compute(d, o, now, c.options()), nil
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

// lock takes the lock named name within LockTimeout.
func (c *Controller) lock(ctx context.Context, name string) (*lock.Lock, error) {
	if name == lockName(desired.Unattributed) {
		return lock.AcquireTimeout(ctx, c.LockDir, name, c.LockTimeout, "the lock of unattributed objects", "another cleanup or the daemon holds it")
	}
	return lock.AcquireUser(ctx, c.LockDir, name, c.LockTimeout)
}

// ReconcileKey takes the user's lock and reconciles one key: it recomputes
// the key's plan from fresh state (so a reconnect that happened since any
// earlier plan wins) and executes it in order, stopping at the first
// failure so a row is never deleted before Docker agreed. The unattributed
// key's removals, which depend on nothing but their kind's order, run side
// by side (see executePlan).
func (c *Controller) ReconcileKey(ctx context.Context, k desired.SessionKey) KeyReport {
	l, err := c.lock(ctx, lockName(k))
	if err != nil {
		return KeyReport{Key: k, Err: err}
	}
	defer l.Unlock()
	return c.reconcileKey(ctx, k, keyRun{})
}

// ReconcileKeyLocked is ReconcileKey for a caller that holds the user's
// lock (an attach, a detach or a teardown in progress).
func (c *Controller) ReconcileKeyLocked(ctx context.Context, k desired.SessionKey) KeyReport {
	return c.reconcileKey(ctx, k, keyRun{})
}

// keyRun is what a pass that planned everything shares with the keys it
// reconciles; the zero keyRun is a key reconciled on its own.
type keyRun struct {
	// decided is the pass's guard decision; nil: ask for a fresh one when needed.
	decided *[]reconcile.Hold
	// pass, when set, is the pass's own state, and the key had no session
	// row in it: the key is planned with planOrphanKey.
	pass *passState
	// removals bounds the concurrent removals of unattributed objects
	// across the pass; nil means a bound of RemoveWorkers for this key.
	removals chan struct{}
	// seen, when set, are the key's objects as the caller observed them
	// under the key's lock: the key is planned from them.
	seen *[]observed.Object
}

// reconcileKey is ReconcileKeyLocked within a pass described by run.
func (c *Controller) reconcileKey(ctx context.Context, k desired.SessionKey, run keyRun) (rep KeyReport) {
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
	var (
		plan reconcile.Plan
		sess *desired.Session // nil for a key planned from the pass's state
		err  error
	)
	if run.pass != nil {
		plan, err = c.planOrphanKey(ctx, k, c.planNow(), run.pass)
	} else {
		plan, sess, err = c.planKeyAlone(ctx, k, run.seen)
	}
	if err != nil {
		rep.Err = err
		return rep
	}
	if plan.NeedsGuard() {
		var holds []reconcile.Hold
		if run.decided != nil {
			holds = *run.decided
		} else if holds, err = c.holds(ctx, since); err != nil {
			rep.Plan, rep.Err = plan, err
			return rep
		}
		plan = reconcile.HoldKeys(plan, holds)
		c.Metrics.ObserveHeld(len(plan.Held))
		if len(plan.Held) > 0 {
			// The pass that decided it reports the rule; this is the key's share.
			c.Log.V(1).Info("Holding removals (blast-radius guard)", "user", k.User, "project", k.Project, "held", len(plan.Held))
		}
	}
	rep.Plan = plan
	c.reportRuntimeRestarts(k, plan.Skipped)
	rep.Results, rep.Err = c.executePlan(ctx, k, plan.Actions, run.removals)
	c.observeDestroyed(sess, rep.Results)
	return rep
}

// planKeyAlone plans a key reconciled on its own (a login, a disconnect,
// an admin command, the daemon's queue) from its row and its objects (as
// seen, else listed now), keeping the hold of a clock step a pass recorded.
func (c *Controller) planKeyAlone(ctx context.Context, k desired.SessionKey, seen *[]observed.Object) (reconcile.Plan, *desired.Session, error) {
	if err := c.refreshClockHold(ctx); err != nil {
		return reconcile.Plan{}, nil, err
	}
	sess, err := c.Store.LoadKey(ctx, k)
	if err != nil {
		return reconcile.Plan{}, nil, err
	}
	plan, err := c.planLoadedKey(ctx, k, sess, c.planNow(), seen)
	return plan, sess, err
}

// observeDestroyed counts the sessions whose record results deleted and,
// for those torn down at a deadline, how late after it.
func (c *Controller) observeDestroyed(sess *desired.Session, results []Result) {
	if c.Metrics == nil {
		return
	}
	for _, r := range results {
		if r.Action.Kind != reconcile.KindDeleteSession || r.Err != nil || r.Outcome != actions.Changed {
			continue
		}
		var deadline time.Time
		if sess != nil && sess.ID == r.Action.SessionID {
			switch r.Action.Reason {
			case reconcile.ReasonGraceExpired:
				deadline = sess.GraceExpiry
			case reconcile.ReasonLifetimeExceeded:
				deadline = sess.MaxLifetimeAt
			}
		}
		c.Metrics.ObserveDestroyed(string(r.Action.Reason), deadline, c.Clock.Now())
	}
}

// executePlan executes the actions of key k in order and stops at the
// first failure. Objects of the unattributed key carry no user label, so
// no session owns them and none depends on another of its kind: each run
// of removals of one kind goes to Docker at once, bounded by removals (or
// RemoveWorkers), and the next kind starts when the run is done, keeping
// the teardown order (containers, then networks, which Docker refuses
// while a container is attached, then volumes). Every other key is one
// session's chain (container before network, row last), executed one
// action after another, except the creations that do not depend on each
// other (sideBySide) and the container creations the executor prepares
// while the network is created (executePreparing).
func (c *Controller) executePlan(ctx context.Context, k desired.SessionKey, acts []reconcile.Action, removals chan struct{}) ([]Result, error) {
	results := make([]Result, 0, len(acts))
	for len(acts) > 0 {
		n := 1
		for n < len(acts) && sideBySide(k, acts[0], acts[n]) {
			n++
		}
		switch {
		case n == 1:
			results = append(results, c.executePreparing(ctx, k, acts[0], acts[1:]))
		case actions.EffectOf(acts[0].Kind) == actions.EffectRemove:
			if removals == nil {
				removals = make(chan struct{}, c.removeWorkers())
			}
			results = append(results, c.executeConcurrently(ctx, k, acts[:n], removals)...)
		default:
			results = append(results, c.executeConcurrently(ctx, k, acts[:n], make(chan struct{}, n))...)
		}
		for _, r := range results[len(results)-n:] {
			if r.Err != nil {
				return results, r.Err
			}
		}
		acts = acts[n:]
	}
	return results, nil
}

// executeConcurrently executes independent actions side by side, each
// holding a slot of sem while it runs, and returns their results in the
// order of acts.
func (c *Controller) executeConcurrently(ctx context.Context, k desired.SessionKey, acts []reconcile.Action, sem chan struct{}) []Result {
	results := make([]Result, len(acts))
	var wg sync.WaitGroup
	for i, a := range acts {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			results[i] = Result{Action: a, Err: fmt.Errorf("%s %s: %w", a.Kind, a.Target, ctx.Err())}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			// A panic here would not reach reconcileKey's recover.
			defer func() {
				if r := recover(); r != nil {
					results[i] = Result{Action: a, Err: fmt.Errorf("panic while reconciling %s: %v\n%s", k, r, debug.Stack())}
				}
			}()
			results[i] = c.execute(ctx, k, a)
		}()
	}
	wg.Wait()
	return results
}

// executePreparing executes a, and while a creates a session's network,
// has the executor prepare the container creations that follow it in the
// plan (actions.Preparer): a new session's container is created while its
// network is, and started once the network is there, in plan order.
func (c *Controller) executePreparing(ctx context.Context, k desired.SessionKey, a reconcile.Action, rest []reconcile.Action) Result {
	p, ok := c.Executor.(actions.Preparer)
	if !ok || a.Kind != reconcile.KindCreateNetwork || k == desired.Unattributed {
		return c.execute(ctx, k, a)
	}
	var wg sync.WaitGroup
	for _, b := range rest {
		if b.Kind != reconcile.KindCreateContainer {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A panic here would not reach reconcileKey's recover; what
			// Prepare left undone, executing b does.
			defer func() {
				if r := recover(); r != nil {
					c.Log.Error(fmt.Errorf("panic: %v\n%s", r, debug.Stack()), "Preparing object failed", "user", k.User, "project", k.Project, "target", b.Target)
				}
			}()
			p.Prepare(ctx, b)
		}()
	}
	r := c.execute(ctx, k, a)
	wg.Wait()
	return r
}

// sideBySide reports whether a may run at the same time as first, the
// start of a run of actions of key k. A session's volumes have nothing to
// wait for but its network, which comes before them in the plan; its
// containers (services and the session container) wait only for the
// network and volumes, so a new session starts its containers at once.
// Removals side by side are the unattributed key's (see executePlan).
func sideBySide(k desired.SessionKey, first, a reconcile.Action) bool {
	if a.Kind != first.Kind {
		return false
	}
	switch a.Kind {
	case reconcile.KindCreateVolume, reconcile.KindCreateContainer:
		return true
	}
	return k == desired.Unattributed && actions.EffectOf(a.Kind) == actions.EffectRemove
}

// execute executes one action of key k, logging it first.
func (c *Controller) execute(ctx context.Context, k desired.SessionKey, a reconcile.Action) Result {
	if c.Executor == nil {
		return Result{Action: a, Err: fmt.Errorf("%s %s: this controller only plans (dry run)", a.Kind, a.Target)}
	}
	c.Log.Info(actionMessage(a.Kind), "user", k.User, "project", k.Project, "action", a.Kind, "target", a.Target, "reason", a.Reason, "detail", a.Detail)
	if a.Kind == reconcile.KindDeleteSession {
		if err := c.confirmGone(ctx, k, a.SessionID); err != nil {
			c.Metrics.ObserveAction(string(a.Kind), string(a.Reason), "", err)
			return Result{Action: a, Err: err}
		}
	}
	o, err := c.Executor.Execute(ctx, a)
	c.Metrics.ObserveAction(string(a.Kind), string(a.Reason), string(o), err)
	return Result{Action: a, Outcome: o, Err: err}
}

// confirmGone asks Docker again, right before a row is deleted, whether
// any object of the generation is left. A list taken while dockerd shuts
// down can miss objects; deleting the row then would forget them.
func (c *Controller) confirmGone(ctx context.Context, k desired.SessionKey, sessionID string) error {
	if k == desired.Unattributed {
		return nil
	}
	objs, err := c.Observer.ListKey(ctx, k)
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
	switch actions.EffectOf(k) {
	case actions.EffectCreate:
		return "Creating object"
	case actions.EffectRemove:
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
func (c *Controller) reconcileUserKeys(ctx context.Context, name string, ks []desired.SessionKey, idx []int, out []KeyReport, run keyRun) {
	l, err := c.lock(ctx, name)
	if err != nil {
		for _, i := range idx {
			out[i] = KeyReport{Key: ks[i], Err: err}
		}
		return
	}
	defer l.Unlock()
	for _, i := range idx {
		out[i] = c.reconcileKey(ctx, ks[i], run)
	}
}

// ReconcileOnce runs one pass: it plans everything and reconciles the
// keys that have work (a single key: ReconcileKey). Keys are reconciled
// concurrently: those with a session at most Workers at a time;
// in a full pass, those with only orphans at most RemoveWorkers at a time
// and planned from the pass's own list (see planOrphanKey).
func (c *Controller) ReconcileOnce(ctx context.Context) (Report, error) {
	sample, err := c.checkStoredClock(ctx)
	if err != nil {
		return Report{}, fmt.Errorf("%w: %w", ErrLoad, err)
	}
	plan, pass, err := c.planAll(ctx)
	if err != nil {
		return Report{}, fmt.Errorf("%w: %w", ErrLoad, err)
	}
	// Recorded once the pass could load its state: a pass that failed to
	// plan leaves the database as it was.
	if err := c.recordClock(ctx, sample); err != nil {
		c.Log.Error(err, "Recording this pass's clock sample failed; the next pass compares with an older one")
	}
	// Held keys too, so their reports say what was held.
	ks := planKeys(plan)
	for _, a := range plan.Held {
		if !slices.Contains(ks, a.Key) {
			ks = append(ks, a.Key)
		}
	}
	rep := Report{Plan: plan, Keys: make([]KeyReport, len(ks))}
	c.runPass(ctx, ks, pass, &plan.Holds, rep.Keys)
	return rep, nil
}

// groupByUser lists the lock names of ks in order and, per name, the
// indexes of its keys: the keys of a user share its lock, so handing them
// to separate workers would only make those workers wait.
func groupByUser(ks []desired.SessionKey) (order []string, byUser map[string][]int) {
	byUser = map[string][]int{}
	for i, k := range ks {
		n := lockName(k)
		if _, ok := byUser[n]; !ok {
			order = append(order, n)
		}
		byUser[n] = append(byUser[n], i)
	}
	return order, byUser
}

// runPass reconciles ks, one task per user, writing each report to out.
func (c *Controller) runPass(ctx context.Context, ks []desired.SessionKey, pass *passState, decided *[]reconcile.Hold, out []KeyReport) {
	order, byUser := groupByUser(ks)
	// A user whose keys had no session row holds only orphans: removals of
	// objects nobody uses, independent of every other user's. They go in a
	// pool of their own, RemoveWorkers wide, so a pass over many orphans
	// runs as wide as `docker rm -f` does and does not wait behind the
	// sessions' Workers. The unattributed key takes no slot of that pool
	// itself: its objects take one each (see executePlan).
	removals := make(chan struct{}, c.removeWorkers())
	var sessions, orphans []string
	unattributed := false
	for _, name := range order {
		switch {
		case pass == nil:
			sessions = append(sessions, name)
		case name == lockName(desired.Unattributed):
			unattributed = true
		case onlyOrphans(pass, ks, byUser[name]):
			orphans = append(orphans, name)
		default:
			sessions = append(sessions, name)
		}
	}
	orphanRun := keyRun{decided: decided, pass: pass, removals: removals}
	var wg sync.WaitGroup
	dispatch := func(names []string, sem chan struct{}, run keyRun) {
		defer wg.Done()
		for _, name := range names {
			idx := byUser[name]
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				c.reconcileUserKeys(ctx, name, ks, idx, out, run)
			}()
		}
	}
	wg.Add(2)
	go dispatch(sessions, make(chan struct{}, c.workers()), keyRun{decided: decided})
	go dispatch(orphans, removals, orphanRun)
	if unattributed {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := lockName(desired.Unattributed)
			c.reconcileUserKeys(ctx, name, ks, byUser[name], out, orphanRun)
		}()
	}
	wg.Wait()
}

// onlyOrphans reports whether none of the keys ks[i], i in idx, had a
// session row when pass was loaded.
func onlyOrphans(pass *passState, ks []desired.SessionKey, idx []int) bool {
	for _, i := range idx {
		if pass.desired.Session(ks[i]) != nil {
			return false
		}
	}
	return true
}
