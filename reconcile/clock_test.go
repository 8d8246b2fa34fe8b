package reconcile_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/reconcile"
	"github.com/podspawn/podspawn/test/builder"
)

// TestComputeHoldsLiveDeadlinesAfterAClockStep: while the caller holds
// deadlines (a forward step of the wall clock was just seen), a connected
// session past its max lifetime is kept with a clock-step skip and a wake
// at the end of the hold; at that instant it goes as it would have. A
// session without live connections is not held.
func TestComputeHoldsLiveDeadlinesAfterAClockStep(t *testing.T) {
	kAW := key("alice", "web")
	lease := builder.Lease(1, 4242)
	lifeAt := now.Add(-2 * time.Hour) // the step jumped past it
	holdUntil := now.Add(desired.ClockStepConfirm)
	connected := builder.Session("alice", "web").MaxLifetimeAt(lifeAt).Leases(lease).Build()
	idle := builder.Session("bob", "").MaxLifetimeAt(lifeAt).Build()
	objs := builder.ObjectsFor(connected, builder.Instance)
	idleObjs := builder.ObjectsFor(idle, builder.Instance)
	d := builder.Desired(connected, idle).Build()
	o := builder.Observed(append(objs, idleObjs...)...).Alive(lease).Build()
	opt := testOpt
	opt.HoldLiveDeadlinesUntil = holdUntil

	bobGoes := teardown(idle, true, reconcile.ReasonLifetimeExceeded, "max lifetime reached 2h0m0s ago, with 0 live connection(s)", idleObjs[1], idleObjs[0])
	want := reconcile.Plan{Now: now, Actions: bobGoes, Unchanged: 1, Wake: holdUntil, Wakes: wakes(kAW, holdUntil),
		Skipped: []reconcile.Skip{{Key: kAW, ObjectKind: "session", Target: "session alice@web", Reason: reconcile.ReasonClockStep,
			Detail: "max lifetime reached 2h0m0s ago, with 1 live connection(s), but the wall clock just stepped forward; a pass at " +
				holdUntil.UTC().Format(time.RFC3339) + " confirms"}}}
	if diff := cmp.Diff(want, reconcile.Compute(d, o, now, opt), cmpopts.EquateEmpty()); diff != "" {
		t.Fatalf("plan during the hold (-want +got):\n%s", diff)
	}

	at := holdUntil
	bobGoes = teardown(idle, true, reconcile.ReasonLifetimeExceeded, "max lifetime reached 2h1m0s ago, with 0 live connection(s)", idleObjs[1], idleObjs[0])
	aliceGoes := teardown(connected, true, reconcile.ReasonLifetimeExceeded, "max lifetime reached 2h1m0s ago, with 1 live connection(s)", objs[1], objs[0])
	want = reconcile.Plan{Now: at, Actions: append(aliceGoes, bobGoes...)}
	if diff := cmp.Diff(want, reconcile.Compute(d, o, at, opt), cmpopts.EquateEmpty()); diff != "" {
		t.Fatalf("plan of the confirming pass (-want +got):\n%s", diff)
	}
}

// TestComputeHoldsAGraceExpiryOfAConnectedSessionAfterAClockStep: a
// session still in its grace period with a live connection (a reconnect
// no pass has seen yet) is not torn down for a grace period that a clock
// step ended; its grace period is cancelled instead, as without the step.
func TestComputeHoldsAGraceExpiryOfAConnectedSessionAfterAClockStep(t *testing.T) {
	kC := key("carol", "")
	lease := builder.Lease(1, 4242)
	holdUntil := now.Add(desired.ClockStepConfirm)
	s := builder.Session("carol", "").Grace(now.Add(-time.Hour)).Leases(lease).Build()
	d := builder.Desired(s).Build()
	o := builder.Observed(builder.ObjectsFor(s, builder.Instance)...).Alive(lease).Build()
	opt := testOpt
	opt.HoldLiveDeadlinesUntil = holdUntil
	got := reconcile.Compute(d, o, now, opt)
	want := reconcile.Plan{Now: now, Wake: holdUntil, Wakes: wakes(kC, holdUntil),
		Actions: []reconcile.Action{{Kind: reconcile.KindCancelGrace, Key: kC, Target: "session carol", SessionID: s.ID, Reason: reconcile.ReasonReconnected, Detail: "1 live connection(s)"}},
		Skipped: []reconcile.Skip{{Key: kC, ObjectKind: "session", Target: "session carol", Reason: reconcile.ReasonClockStep,
			Detail: "grace period ended 1h0m0s ago, but the wall clock just stepped forward; a pass at " + holdUntil.UTC().Format(time.RFC3339) + " confirms"}}}
	if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
		t.Fatalf("plan during the hold (-want +got):\n%s", diff)
	}
}
