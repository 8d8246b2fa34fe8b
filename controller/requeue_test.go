package controller_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/reconcile"
)

// stop marks the container named name exited.
func (w *world) stop(name string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	c := w.containers[name]
	c.State = container.StateExited
	w.containers[name] = c
}

// dieOnStart makes every start of the session container of k leave it
// exited at once, as a command that exits right away does.
func (e *env) dieOnStart(k desired.SessionKey) {
	e.exec.setIntercept(func(ctx context.Context, a reconcile.Action, next actions.Executor) (actions.Outcome, error) {
		o, err := next.Execute(ctx, a)
		if err == nil && a.Kind == reconcile.KindCreateContainer && a.Target == desired.ContainerName(k) {
			e.world.stop(a.Target)
		}
		return o, err
	})
}

func restartsOf(as []reconcile.Action) int {
	n := 0
	for _, a := range as {
		if a.Kind == reconcile.KindCreateContainer && a.Reason == reconcile.ReasonContainerStopped {
			n++
		}
	}
	return n
}

// TestProcessNextItemCrashLoopBacksOff: with crash-loop handling off, a
// session container that exits right after every start makes each pass
// "succeed" with a change (the start). The follow-up look goes through the
// rate limiter, so the restarts slow down (0.5s, 1s, 2s, ...) instead of
// looping hot; before, the key was added again at once, and this test
// counted 50 restarts without the clock moving.
func TestProcessNextItemCrashLoopBacksOff(t *testing.T) {
	e := newEnv(t)
	alice := desired.SessionKey{User: "alice"}
	e.addUser(t, "alice")
	e.addSession(t, alice, sessOpts{status: desired.StatusRunning, live: true, running: true})
	e.world.stop(desired.ContainerName(alice))
	e.dieOnStart(alice)
	q := e.queue(t)
	q.Add(alice)

	want := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second}
	var got []time.Duration
	for i := range want {
		e.process(t, q)
		if n := q.NumRequeues(alice); n != i+1 {
			t.Fatalf("NumRequeues = %d after restart %d, want %d", n, i+1, i+1)
		}
		if n := q.Len(); n != 0 {
			t.Fatalf("Len = %d right after restart %d, want 0 (the key waits out its backoff)", n, i+1)
		}
		d := e.clk.nextTimer(t)
		got = append(got, d)
		e.clk.Step(d)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("delays between restarts (-want +got):\n%s", diff)
	}
	if n := restartsOf(e.exec.executed()); n != len(want) {
		t.Fatalf("restarted %d times, want %d (one per pass); executed %v", n, len(want), steps(e.exec.executed()))
	}
	if got := e.world.names(); !slices.Contains(got, "container/podspawn-alice:exited") {
		t.Fatalf("world = %v, want alice's container still exited", got)
	}
}
