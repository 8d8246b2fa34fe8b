package controller_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/observed/dockerobs"
	"github.com/podspawn/podspawn/reconcile"
)

// countingObserver counts container lists (one per list of every kind)
// and runs before, when set, ahead of each.
type countingObserver struct {
	dockerobs.API
	mu     sync.Mutex
	lists  int
	before func(n int)
}

func (o *countingObserver) ContainerList(ctx context.Context, opts container.ListOptions) ([]container.Summary, error) {
	o.mu.Lock()
	o.lists++
	n, before := o.lists, o.before
	o.mu.Unlock()
	if before != nil {
		before(n)
	}
	return o.API.ContainerList(ctx, opts)
}

func (o *countingObserver) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.lists
}

// removalLog records when each removal started and ended, in one sequence.
type removalLog struct {
	mu     sync.Mutex
	seq    int
	start  map[string]int
	end    map[string]int
	active int
	peak   int
}

func newRemovalLog() *removalLog {
	return &removalLog{start: map[string]int{}, end: map[string]int{}}
}

func (l *removalLog) begin(a reconcile.Action) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	l.start[actionID(a)] = l.seq
	l.active++
	l.peak = max(l.peak, l.active)
	return l.active
}

func (l *removalLog) finish(a reconcile.Action) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	l.end[actionID(a)] = l.seq
	l.active--
}

func actionID(a reconcile.Action) string { return string(a.Kind) + " " + a.Target }

// before reports whether a ended before b started.
func (l *removalLog) before(a, b string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	ea, oka := l.end[a]
	sb, okb := l.start[b]
	return oka && okb && ea < sb
}

// Orphans are independent of each other: a pass removes them side by side,
// at most RemoveWorkers at once and whatever Workers says, while a
// session's objects still go one after another (container, network, row)
// and unattributed networks wait for the unattributed containers. Orphans
// are planned from the pass's one list of Docker, not one list per key.
func TestReconcileOnceRemovesOrphansConcurrently(t *testing.T) {
	const (
		orphans = 8
		limit   = 4
	)
	cases := map[string]struct {
		labels func(e *env, i int) map[string]string
		// networks: how many orphan networks, besides the containers.
		networks int
	}{
		// Left by an older podspawn: no user label, all on the unattributed key.
		"unattributed": {
			labels: func(*env, int) map[string]string {
				return map[string]string{observed.LabelManagedBy: observed.ManagedByValue}
			},
			networks: 2,
		},
		// A session's objects whose row is gone: one key per user.
		"one user each": {
			labels: func(e *env, i int) map[string]string {
				return map[string]string{
					observed.LabelManagedBy: observed.ManagedByValue, observed.LabelUser: fmt.Sprintf("orphan%d", i),
					observed.LabelSession: fmt.Sprintf("gone%d", i), observed.LabelInstance: e.store.InstanceID(), observed.LabelRole: observed.RoleSession,
				}
			},
			networks: orphans,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			e.ctrl.Workers, e.ctrl.RemoveWorkers = 1, limit
			// So many orphans are what the blast-radius guard holds (running
			// session containers, or no instance label on a database younger
			// than them); confirmed, as --allow-mass-removal does, so the
			// removals themselves are under test.
			e.ctrl.Guard.Allow = true
			obs := &countingObserver{API: e.world}
			e.ctrl.Observer = dockerobs.Lister{API: obs}
			alice, carol := desired.SessionKey{User: "alice"}, desired.SessionKey{User: "carol"}
			e.addUser(t, "alice")
			e.addUser(t, "carol")
			e.addSession(t, alice, sessOpts{status: desired.StatusTerminating, reason: string(reconcile.ReasonUserRequested), running: true})
			e.addSession(t, carol, sessOpts{status: desired.StatusRunning, live: true, running: true})
			old := epoch.Add(-24 * time.Hour)
			var ctrs, nets []string
			for i := range orphans {
				ctrs = append(ctrs, fmt.Sprintf("orphan-c%d", i))
				e.world.addContainer(ctrs[i], tc.labels(e, i), true, old)
			}
			for i := range tc.networks {
				nets = append(nets, fmt.Sprintf("orphan-n%d", i))
				e.world.addNetwork(nets[i], tc.labels(e, i), old)
			}

			// Every orphan container removal waits until limit of them are
			// in flight together: one at a time, they would never get there.
			rl := newRemovalLog()
			full := make(chan struct{})
			var fullOnce sync.Once
			var orphansInFlight atomic.Int32
			e.exec.setIntercept(func(ctx context.Context, a reconcile.Action, next actions.Executor) (actions.Outcome, error) {
				if actions.EffectOf(a.Kind) != "remove" {
					return next.Execute(ctx, a)
				}
				rl.begin(a)
				defer rl.finish(a)
				if a.Kind == reconcile.KindRemoveContainer && a.Reason == reconcile.ReasonOrphan {
					// Counted apart from alice's chain, whose removals would
					// otherwise let the total step over limit unseen. None
					// leaves before full, so one of them sees exactly limit.
					active := orphansInFlight.Add(1)
					defer orphansInFlight.Add(-1)
					if active == limit {
						fullOnce.Do(func() { close(full) })
					}
					select {
					case <-full:
					case <-time.After(waitFor):
						fullOnce.Do(func() { close(full) }) // fail once, not once per orphan
						return "", fmt.Errorf("%d orphan removals were in flight together, want %d", active, limit)
					}
				}
				return next.Execute(ctx, a)
			})

			rep, err := e.ctrl.ReconcileOnce(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range rep.Failed() {
				t.Errorf("%s failed: %v", k.Key, k.Err)
			}
			if rl.peak > limit+1 { // the orphans at most limit, alice's chain one more
				t.Errorf("%d removals in flight at once, want at most %d orphans and alice's one", rl.peak, limit)
			}
			want := []string{"container/podspawn-carol:running", "network/podspawn-carol-net"}
			if diff := cmp.Diff(want, e.world.names()); diff != "" {
				t.Errorf("world after the pass (-want +got):\n%s", diff)
			}
			// alice's chain, in order, each step after the previous one ended.
			chain := []string{"remove-container podspawn-alice", "remove-network podspawn-alice-net"}
			if !rl.before(chain[0], chain[1]) {
				t.Errorf("%s did not end before %s started", chain[0], chain[1])
			}
			if st := e.status(t, alice); st != "" {
				t.Errorf("alice's row: status %q, want deleted", st)
			}
			// A network is removed only once the containers that may use it are gone.
			for i, n := range nets {
				deps := ctrs // unattributed: any of them
				if name == "one user each" {
					deps = ctrs[i : i+1] // its own session's
				}
				for _, c := range deps {
					if !rl.before("remove-container "+c, "remove-network "+n) {
						t.Errorf("remove-network %s did not start after remove-container %s ended", n, c)
					}
				}
			}
			// One list for the pass, and alice's two (her plan, re-read under
			// her lock, and the check that Docker let go before her row is
			// deleted); none per orphan key.
			if got := obs.count(); got != 3 {
				t.Errorf("the pass listed containers %d times, want 3 (the pass, alice's plan, alice's confirmation)", got)
			}
		})
	}
}

// An orphan key is planned from the pass's list only while it still has no
// row: a session created between the pass's load and the key's turn (a
// spawn got the user's lock first) is planned from fresh state, and its
// objects, listed as orphans by the pass, stay.
func TestReconcileOnceReplansAnOrphanKeyThatGainedASession(t *testing.T) {
	e := newEnv(t)
	dave := desired.SessionKey{User: "dave"}
	e.addUser(t, "dave")
	obs := &countingObserver{API: e.world}
	e.ctrl.Observer = dockerobs.Lister{API: obs}
	// An old orphan of an earlier generation, gone with the pass.
	e.world.addContainer("podspawn-dave-old", map[string]string{
		observed.LabelManagedBy: observed.ManagedByValue, observed.LabelUser: "dave", observed.LabelSession: "gone",
		observed.LabelInstance: e.store.InstanceID(), observed.LabelRole: observed.RoleSession,
	}, true, epoch.Add(-24*time.Hour))
	// The session appears after the pass loaded the rows and before it lists
	// Docker, so the pass's plan takes its objects for orphans.
	obs.before = func(n int) {
		if n == 1 {
			e.addSession(t, dave, sessOpts{status: desired.StatusRunning, live: true, running: true})
		}
	}

	rep, err := e.ctrl.ReconcileOnce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var planned []string
	for _, a := range rep.Plan.Actions {
		planned = append(planned, actionID(a))
	}
	if diff := cmp.Diff([]string{"remove-container podspawn-dave", "remove-container podspawn-dave-old", "remove-network podspawn-dave-net"}, planned); diff != "" {
		t.Fatalf("the pass's plan (-want +got):\n%s", diff)
	}
	for _, k := range rep.Failed() {
		t.Errorf("%s failed: %v", k.Key, k.Err)
	}
	want := []string{"container/podspawn-dave:running", "network/podspawn-dave-net"}
	if diff := cmp.Diff(want, e.world.names()); diff != "" {
		t.Fatalf("world after the pass (-want +got):\n%s", diff)
	}
	if st := e.status(t, dave); st != desired.StatusRunning {
		t.Fatalf("dave's status = %q, want running", st)
	}
}

// A panic while removing an unattributed object, on a goroutine of its
// own, fails the key like any other panic instead of the process.
func TestReconcileOnceRecoversAPanicInAConcurrentRemoval(t *testing.T) {
	e := newEnv(t)
	e.ctrl.Guard.Allow = true // orphans without an instance label, older than the database
	for i := range 3 {
		e.world.addContainer(fmt.Sprintf("orphan-c%d", i), map[string]string{observed.LabelManagedBy: observed.ManagedByValue}, true, epoch.Add(-24*time.Hour))
	}
	e.exec.setIntercept(func(ctx context.Context, a reconcile.Action, next actions.Executor) (actions.Outcome, error) {
		if a.Target == "orphan-c1" {
			panic("boom")
		}
		return next.Execute(ctx, a)
	})
	rep, err := e.ctrl.ReconcileOnce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	failed := rep.Failed()
	if len(failed) != 1 || failed[0].Key != desired.Unattributed || !strings.Contains(failed[0].Err.Error(), "panic while reconciling") {
		t.Fatalf("failed keys = %+v, want the unattributed key with the panic", failed)
	}
	if diff := cmp.Diff([]string{"container/orphan-c1:running"}, e.world.names()); diff != "" {
		t.Fatalf("world after the pass (-want +got):\n%s", diff)
	}
}

// Orphans reconciled in the removal pool, each planned from the pass's
// list, still take the pass's guard decision: running session containers
// of a vanished database are held, not removed.
func TestReconcileOnceHoldsOrphansInTheRemovalPool(t *testing.T) {
	e := newEnv(t)
	for i := range 8 {
		e.world.addContainer(fmt.Sprintf("orphan-c%d", i), map[string]string{
			observed.LabelManagedBy: observed.ManagedByValue, observed.LabelUser: fmt.Sprintf("orphan%d", i),
			observed.LabelSession: "gone", observed.LabelInstance: e.store.InstanceID(), observed.LabelRole: observed.RoleSession,
		}, true, epoch.Add(-24*time.Hour))
	}
	before := e.world.names()
	rep, err := e.ctrl.ReconcileOnce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	held, holds := rep.Held()
	if len(held) != 8 || len(holds) != 1 || holds[0].Reason != reconcile.HoldMassRemoval {
		t.Fatalf("held %d actions under %+v; want the 8 orphans held for mass-removal", len(held), holds)
	}
	if got := e.exec.executed(); len(got) != 0 {
		t.Fatalf("executed %v, want nothing", steps(got))
	}
	if diff := cmp.Diff(before, e.world.names()); diff != "" {
		t.Fatalf("world changed (-before +after):\n%s", diff)
	}
}
