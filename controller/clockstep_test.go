package controller_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/reconcile"
)

// TestForwardClockStepIsConfirmedBeforeTeardown: the wall clock jumps
// past a connected session's max lifetime while monotonic time moves a few
// seconds (a VM resume, an NTP correction). The pass right after the jump
// keeps the session and looks again a minute later; that pass, on a clock
// that did not step again, tears it down.
func TestForwardClockStepIsConfirmedBeforeTeardown(t *testing.T) {
	e := newEnv(t)
	var mono time.Duration
	e.ctrl.Monotonic = func() time.Duration { return mono }
	alice := desired.SessionKey{User: "alice"}
	e.addUser(t, "alice")
	e.addSession(t, alice, sessOpts{status: desired.StatusRunning, live: true, running: true})
	q := e.queue(t)

	q.Add(alice)
	e.process(t, q)
	if d := e.clk.nextTimer(t); d != maxLifetime {
		t.Fatalf("queue timer = %s, want the max lifetime %s", d, maxLifetime)
	}

	mono += 5 * time.Second
	e.clk.Step(maxLifetime + time.Hour)
	e.process(t, q)
	if got := e.exec.executed(); len(got) != 0 {
		t.Fatalf("executed %v right after the clock step, want nothing", steps(got))
	}
	if st := e.status(t, alice); st != desired.StatusRunning {
		t.Fatalf("status after the step = %q, want running", st)
	}
	if n := len(e.logs.matching("Wall clock stepped forward", `"step"="8h59m55s"`)); n != 1 {
		t.Fatalf("%d log lines about the forward step, want 1", n)
	}
	if d := e.clk.nextTimer(t); d != desired.ClockStepConfirm {
		t.Fatalf("queue timer after the step = %s, want %s", d, desired.ClockStepConfirm)
	}

	mono += desired.ClockStepConfirm
	e.clk.Step(desired.ClockStepConfirm)
	e.process(t, q)
	want := []step{
		{Kind: reconcile.KindMarkTerminating, Key: "alice", Target: "session alice", Reason: reconcile.ReasonLifetimeExceeded},
		{Kind: reconcile.KindRemoveContainer, Key: "alice", Target: "podspawn-alice", Reason: reconcile.ReasonLifetimeExceeded},
		{Kind: reconcile.KindRemoveNetwork, Key: "alice", Target: "podspawn-alice-net", Reason: reconcile.ReasonLifetimeExceeded},
		{Kind: reconcile.KindDeleteSession, Key: "alice", Target: "session alice", Reason: reconcile.ReasonLifetimeExceeded},
	}
	if diff := cmp.Diff(want, steps(e.exec.executed())); diff != "" {
		t.Fatalf("actions of the confirming pass (-want +got):\n%s", diff)
	}
}

// TestOneShotPassReportsRowsFromTheFuture: a pass whose clock is behind
// the newest timestamp in the database (the clock stepped back) says so.
func TestOneShotPassReportsRowsFromTheFuture(t *testing.T) {
	e := newEnv(t)
	alice := desired.SessionKey{User: "alice"}
	e.addUser(t, "alice")
	e.addSession(t, alice, sessOpts{status: desired.StatusRunning, live: true, running: true}) // created at epoch-1h
	e.clk.SetTime(epoch.Add(-3 * time.Hour))
	if _, err := e.ctrl.ReconcileOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := `"rows"=2 "newest"="2026-11-29T06:00:00Z" "user"="alice" "project"="" "field"="created_at"`
	if n := len(e.logs.matching("Rows from the future", want)); n != 1 {
		t.Fatalf("%d log lines reporting rows from the future with %s, want 1", n, want)
	}
}
