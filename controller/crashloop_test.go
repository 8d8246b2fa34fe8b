package controller_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/controller"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/reconcile"
)

// TestCrashLoopAcrossOneShotPasses: the back-off lives on the session row,
// so one-shot passes (a timer-driven cleanup, a daemon started later) keep
// it: a pass during the back-off starts nothing, one at its end restarts,
// and the stop after the last allowed restart tears the session down with
// reason crash-loop; the container's log tail is asked for on the way.
func TestCrashLoopAcrossOneShotPasses(t *testing.T) {
	e := newEnv(t)
	e.ctrl.Options.CrashLoop = reconcile.CrashLoop{MaxRestarts: 3, ResetAfter: 10 * time.Minute, BackoffBase: time.Second, BackoffMax: 5 * time.Minute}
	alice := desired.SessionKey{User: "alice"}
	e.addUser(t, "alice")
	e.addSession(t, alice, sessOpts{status: desired.StatusRunning, live: true, running: true})
	e.world.stop(desired.ContainerName(alice))
	e.dieOnStart(alice)
	ctx := context.Background()

	// pass runs one one-shot pass and returns how many restarts it did.
	pass := func() int {
		t.Helper()
		before := len(e.exec.executed())
		rep, err := e.ctrl.ReconcileOnce(ctx)
		if err != nil || len(rep.Failed()) > 0 {
			t.Fatalf("pass at +%s: %v, failed %v", e.clk.Since(epoch), err, rep.Failed())
		}
		return restartsOf(e.exec.executed()[before:])
	}
	row := func() *desired.Session {
		s, err := e.store.LoadKey(ctx, alice)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	// at is when each pass runs, from the start; want is how many
	// restarts it does: at once, then not before +1s, then not before
	// 2s after that.
	type step struct {
		at   time.Duration
		want int
	}
	ms := time.Millisecond
	for _, s := range []step{{0, 1}, {500 * ms, 0}, {999 * ms, 0}, {time.Second, 1}, {2 * time.Second, 0}, {3*time.Second - ms, 0}, {3 * time.Second, 1}} {
		e.clk.SetTime(epoch.Add(s.at))
		if got := pass(); got != s.want {
			t.Fatalf("pass at +%s restarted %d times, want %d", s.at, got, s.want)
		}
	}
	if r := row(); r.RestartCount != 3 || !r.LastRestartAt.Equal(epoch.Add(3*time.Second)) || !r.NextRestartAt.Equal(epoch.Add(7*time.Second)) {
		t.Fatalf("row after 3 restarts: count %d, last %s, next %s; want 3, +3s, +7s", r.RestartCount, r.LastRestartAt, r.NextRestartAt)
	}

	// It stopped again after its last allowed restart: torn down.
	e.clk.SetTime(epoch.Add(4 * time.Second))
	before := len(e.exec.executed())
	if _, err := e.ctrl.ReconcileOnce(ctx); err != nil {
		t.Fatal(err)
	}
	var got []kindReason
	for _, a := range e.exec.executed()[before:] {
		got = append(got, kindReason{a.Kind, a.Reason, a.LogTail})
	}
	want := []kindReason{
		{reconcile.KindMarkTerminating, reconcile.ReasonCrashLoop, 0},
		{reconcile.KindRemoveContainer, reconcile.ReasonCrashLoop, reconcile.CrashLoopLogLines},
		{reconcile.KindRemoveNetwork, reconcile.ReasonCrashLoop, 0},
		{reconcile.KindDeleteSession, reconcile.ReasonCrashLoop, 0},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("actions after the limit (-want +got):\n%s", diff)
	}
	if r := row(); r != nil {
		t.Fatalf("row after the crash-loop teardown: %+v, want it deleted", r)
	}
}

type kindReason struct {
	Kind    reconcile.Kind
	Reason  reconcile.Reason
	LogTail int
}

// TestCrashLoopCountStartsOverAfterUptime: a restarted container that
// stays up for the reset time gets its count set back to zero, on the
// wake the pass before asked for, so a later stop is restarted at once.
func TestCrashLoopCountStartsOverAfterUptime(t *testing.T) {
	e := newEnv(t)
	e.ctrl.Options.CrashLoop = reconcile.CrashLoop{MaxRestarts: 3, ResetAfter: 10 * time.Minute, BackoffBase: time.Second, BackoffMax: 5 * time.Minute}
	alice := desired.SessionKey{User: "alice"}
	e.addUser(t, "alice")
	s := e.addSession(t, alice, sessOpts{status: desired.StatusRunning, live: true, running: true})
	ctx := context.Background()
	if _, err := e.store.RecordRestart(ctx, s.ID, 2, epoch.Add(2*time.Second), epoch); err != nil {
		t.Fatal(err)
	}
	plan, err := e.ctrl.PlanKeysWith(ctx, []desired.SessionKey{alice}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if w, _ := controller.WakeForTest(plan, alice); !plan.Empty() || !w.Equal(epoch.Add(10*time.Minute)) {
		t.Fatalf("plan while up for less than the reset time: %v, wake %s; want nothing and a wake at +10m", plan.Actions, w)
	}
	e.clk.SetTime(epoch.Add(10 * time.Minute))
	if _, err := e.ctrl.ReconcileOnce(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := e.store.LoadKey(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	if got.RestartCount != 0 || !got.NextRestartAt.IsZero() {
		t.Fatalf("after 10m up: count %d, next %s; want 0 and none", got.RestartCount, got.NextRestartAt)
	}
	if diff := cmp.Diff([]reconcile.Kind{reconcile.KindResetRestarts}, kinds(e.exec.executed())); diff != "" {
		t.Fatalf("executed (-want +got):\n%s", diff)
	}
}

func kinds(as []reconcile.Action) []reconcile.Kind {
	var out []reconcile.Kind
	for _, a := range as {
		out = append(out, a.Kind)
	}
	return out
}
