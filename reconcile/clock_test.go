package reconcile_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

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
	holdUntil := now.Add(reconcile.ClockStepConfirm)
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

func TestFutureRows(t *testing.T) {
	future := now.Add(3 * time.Hour)
	l := builder.Lease(1, 4242)
	l.StartedAt = future.Add(time.Minute)
	d := builder.Desired(
		builder.Session("alice", "").CreatedAt(future).Leases(l).Build(),
		builder.Session("bob", "").CreatedAt(now.Add(reconcile.ClockStepThreshold)).Build(), // within the slack
		builder.Session("carol", "").CreatedAt(now.Add(-time.Hour)).Restarts(1, future, future.Add(time.Hour)).Build(),
	).Build()
	want := []reconcile.FutureRow{
		{Key: key("alice", ""), Field: "lease.started_at", At: future.Add(time.Minute)},
		{Key: key("alice", ""), Field: "created_at", At: future},
		{Key: key("carol", ""), Field: "last_restart_at", At: future},
	}
	if diff := cmp.Diff(want, reconcile.FutureRows(d, now)); diff != "" {
		t.Fatalf("FutureRows (-want +got):\n%s", diff)
	}
	if got := reconcile.FutureRows(builder.Desired(builder.Session("dan", "").Build()).Build(), now); len(got) != 0 {
		t.Fatalf("FutureRows of a present row = %v, want none", got)
	}
}
