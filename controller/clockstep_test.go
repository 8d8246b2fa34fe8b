package controller_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/controller"
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

// fakeBoot is CLOCK_BOOTTIME and the boot id for one-shot passes.
type fakeBoot struct {
	since time.Duration
	id    string
}

func (b *fakeBoot) read() (time.Duration, string, error) { return b.since, b.id, nil }

// oneShot is the controller of a new one-shot process on e's database and
// world: no clock reading of its own, boot's clocks.
func (e *env) oneShot(boot *fakeBoot) *controller.Controller {
	o := e.ctrl
	return &controller.Controller{Store: o.Store, KeyDir: o.KeyDir, LockDir: o.LockDir, Observer: o.Observer, Executor: o.Executor,
		Options: o.Options, Clock: o.Clock, Log: o.Log, Workers: o.Workers, ReconcileTimeout: o.ReconcileTimeout, LockTimeout: o.LockTimeout,
		Guard: o.Guard, BootClock: boot.read}
}

// TestOneShotPassHoldsAfterAForwardClockStep: one-shot passes are
// separate processes (a fresh controller each, on one database). The
// wall clock jumps past a connected session's max lifetime while boot time
// moves 5 s: that pass keeps the session, so does one 1 ns short of a
// minute of boot time later, and the pass a minute later tears it down.
func TestOneShotPassHoldsAfterAForwardClockStep(t *testing.T) {
	e := newEnv(t)
	boot := &fakeBoot{since: time.Hour, id: "boot-1"}
	alice := desired.SessionKey{User: "alice"}
	e.addUser(t, "alice")
	e.addSession(t, alice, sessOpts{status: desired.StatusRunning, live: true, running: true})
	pass := func() controller.Report {
		t.Helper()
		rep, err := e.oneShot(boot).ReconcileOnce(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	if rep := pass(); len(e.exec.executed()) != 0 || len(rep.Plan.Skipped) != 0 {
		t.Fatalf("first pass: executed %v, skipped %v; want nothing", steps(e.exec.executed()), rep.Plan.Skipped)
	}

	boot.since += 5 * time.Second
	e.clk.Step(maxLifetime + time.Hour)
	holdUntil := e.clk.Now().Add(desired.ClockStepConfirm).UTC().Format(time.RFC3339)
	rep := pass()
	if got := e.exec.executed(); len(got) != 0 {
		t.Fatalf("executed %v right after the clock step, want nothing", steps(got))
	}
	if len(rep.Plan.Skipped) != 1 || rep.Plan.Skipped[0].Reason != reconcile.ReasonClockStep || !strings.Contains(rep.Plan.Skipped[0].Detail, "a pass at "+holdUntil+" confirms") {
		t.Fatalf("skipped after the step = %+v, want alice held by the clock step until %s", rep.Plan.Skipped, holdUntil)
	}
	if n := len(e.logs.matching("Wall clock stepped forward since the last pass", `"step"="8h59m55s"`, `"holdUntil"="`+holdUntil+`"`)); n != 1 {
		t.Fatalf("%d log lines about the forward step, want 1", n)
	}

	boot.since += desired.ClockStepConfirm - time.Nanosecond
	e.clk.Step(desired.ClockStepConfirm - time.Nanosecond)
	pass()
	if got := e.exec.executed(); len(got) != 0 {
		t.Fatalf("executed %v before the confirmation, want nothing", steps(got))
	}
	if n := len(e.logs.matching("still holding max-lifetime teardowns", `"holdUntil"="`+holdUntil+`"`)); n != 1 {
		t.Fatalf("%d log lines about the continuing hold, want 1", n)
	}

	boot.since += time.Nanosecond
	e.clk.Step(time.Nanosecond)
	pass()
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

// TestOneShotPassAfterARebootIsNoClockStep: after a reboot (another boot
// id, boot time small again) the wall clock is hours ahead of boot time;
// that is no step, and a connected session past its max lifetime goes.
func TestOneShotPassAfterARebootIsNoClockStep(t *testing.T) {
	e := newEnv(t)
	boot := &fakeBoot{since: 10 * time.Hour, id: "boot-1"}
	alice := desired.SessionKey{User: "alice"}
	e.addUser(t, "alice")
	e.addSession(t, alice, sessOpts{status: desired.StatusRunning, live: true, running: true})
	if _, err := e.oneShot(boot).ReconcileOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	*boot = fakeBoot{since: 11 * time.Hour, id: "boot-2"} // rebooted, and up longer than before
	e.clk.Step(maxLifetime + time.Hour)
	if _, err := e.oneShot(boot).ReconcileOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := steps(e.exec.executed()); len(got) != 4 || got[0].Kind != reconcile.KindMarkTerminating {
		t.Fatalf("executed %v after the reboot, want the lifetime teardown", got)
	}
	if n := len(e.logs.matching("Wall clock stepped")); n != 0 {
		t.Fatalf("%d log lines about a clock step after a reboot, want none", n)
	}
}

// TestKeyReconciledAloneKeepsAStoredClockStepHold: a one-shot pass saw a
// forward step and held a connected session; a connection's disconnect
// (another process, reconciling only its key) within the hold keeps it
// too, and one after the hold tears it down.
func TestKeyReconciledAloneKeepsAStoredClockStepHold(t *testing.T) {
	e := newEnv(t)
	boot := &fakeBoot{since: time.Hour, id: "boot-1"}
	alice := desired.SessionKey{User: "alice"}
	e.addUser(t, "alice")
	e.addSession(t, alice, sessOpts{status: desired.StatusRunning, live: true, running: true})
	ctx := context.Background()
	if _, err := e.oneShot(boot).ReconcileOnce(ctx); err != nil {
		t.Fatal(err)
	}
	boot.since += 5 * time.Second
	e.clk.Step(maxLifetime + time.Hour)
	if _, err := e.oneShot(boot).ReconcileOnce(ctx); err != nil {
		t.Fatal(err)
	}

	boot.since += 30 * time.Second
	e.clk.Step(30 * time.Second)
	rep := e.oneShot(boot).ReconcileKey(ctx, alice)
	if rep.Err != nil {
		t.Fatal(rep.Err)
	}
	if got := e.exec.executed(); len(got) != 0 {
		t.Fatalf("a key reconciled alone during the hold executed %v, want nothing", steps(got))
	}
	if len(rep.Plan.Skipped) != 1 || rep.Plan.Skipped[0].Reason != reconcile.ReasonClockStep {
		t.Fatalf("skipped during the hold = %+v, want alice held by the clock step", rep.Plan.Skipped)
	}

	boot.since += 30 * time.Second
	e.clk.Step(30 * time.Second)
	if rep := e.oneShot(boot).ReconcileKey(ctx, alice); rep.Err != nil {
		t.Fatal(rep.Err)
	}
	if got := steps(e.exec.executed()); len(got) == 0 || got[len(got)-1].Kind != reconcile.KindDeleteSession {
		t.Fatalf("after the hold executed %v, want alice torn down", got)
	}
}
