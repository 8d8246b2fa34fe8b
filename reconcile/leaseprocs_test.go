package reconcile_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/reconcile"
	"github.com/podspawn/podspawn/test/builder"
)

// killLeaseProcs kills what lease l of s left running in container ctr.
func killLeaseProcs(s *desired.Session, ctr observed.Object, l desired.Lease) reconcile.Action {
	return reconcile.Action{Kind: reconcile.KindKillLeaseProcesses, Key: s.Key, Target: ctr.Name, TargetID: ctr.ID, SessionID: s.ID, LeaseID: l.ID,
		Reason: reconcile.ReasonLeaseDead, Detail: fmt.Sprintf("connection process %d is gone; killing what it left running in the container", l.PID)}
}

// TestDeadLeaseProcesses: a dead connection's processes are killed before
// its lease is released, only while the session container runs (a
// stopped or missing one took them with it), never for a live lease, and
// never in a container an operator protected.
func TestDeadLeaseProcesses(t *testing.T) {
	kAW := key("alice", "web")
	l1, l2, l3 := builder.Lease(1, 4242), builder.Lease(2, 4343), builder.Lease(3, 4444)
	persistent := builder.Session("alice", "web").Mode(desired.ModePersistent)

	one := persistent.Leases(l1).Build()
	objs := builder.ObjectsFor(one, builder.Instance)
	net, ctr := objs[0], objs[1]
	three := builder.Session("alice", "web").Leases(l1, l2, l3).Build()
	stopped := builder.Container("alice", "web").Stopped().Build()
	kept := builder.Container("alice", "web").Keep().Build()
	withSvc := builder.Session("alice", "web").Mode(desired.ModePersistent).Service("db", "postgres:16").Leases(l1).Build()
	svcObjs := builder.ObjectsFor(withSvc, builder.Instance)
	sNet, sSvc, sCtr := svcObjs[0], svcObjs[1], svcObjs[2]
	if sSvc.Role() != observed.RoleService || sCtr.Role() != observed.RoleSession {
		t.Fatalf("ObjectsFor order changed: %s, %s", sSvc.Name, sCtr.Name)
	}

	runCases(t, map[string]computeCase{
		"live lease: nothing is killed": {
			desired:  builder.Desired(one).Build(),
			observed: builder.Observed(objs...).Alive(l1).Build(),
			now:      now,
			want:     reconcile.Plan{Now: now, Unchanged: 1},
		},
		"unchecked lease counts as live: nothing is killed": {
			desired:  builder.Desired(one).Build(),
			observed: builder.Observed(objs...).Build(),
			now:      now,
			want:     reconcile.Plan{Now: now, Unchanged: 1},
		},
		"dead lease: kill in the session container, not the service's, then release": {
			desired:  builder.Desired(withSvc).Build(),
			observed: builder.Observed(sNet, sSvc, sCtr).Dead(l1).Build(),
			now:      now,
			want:     reconcile.Plan{Now: now, Actions: []reconcile.Action{killLeaseProcs(withSvc, sCtr, l1), releaseLease(withSvc, l1)}},
		},
		"two of three leases dead: each is killed then released, in lease order; the live one is left": {
			desired:  builder.Desired(three).Build(),
			observed: builder.Observed(objs...).Dead(l1, l3).Alive(l2).Build(),
			now:      now,
			want: reconcile.Plan{Now: now, Wake: defaultLifetime, Wakes: wakes(kAW, defaultLifetime), Actions: []reconcile.Action{
				killLeaseProcs(three, ctr, l1), releaseLease(three, l1), killLeaseProcs(three, ctr, l3), releaseLease(three, l3),
			}},
		},
		"every lease dead: kills and releases come before the grace period": {
			desired:  builder.Desired(three).Build(),
			observed: builder.Observed(objs...).Dead(l1, l2, l3).Build(),
			now:      now,
			want: reconcile.Plan{Now: now, Wake: now.Add(time.Minute), Wakes: wakes(kAW, now.Add(time.Minute)), Actions: []reconcile.Action{
				killLeaseProcs(three, ctr, l1), releaseLease(three, l1), killLeaseProcs(three, ctr, l2), releaseLease(three, l2),
				killLeaseProcs(three, ctr, l3), releaseLease(three, l3), startGrace(three, now.Add(time.Minute)),
			}},
		},
		"container stopped: nothing runs to kill; release, then start it again": {
			desired:  builder.Desired(one).Build(),
			observed: builder.Observed(net, stopped).Dead(l1).Build(),
			now:      now,
			want:     reconcile.Plan{Now: now, Actions: []reconcile.Action{releaseLease(one, l1), restartSession(one, "exited")}},
		},
		"container missing: the session goes, nothing to kill": {
			desired:  builder.Desired(one).Build(),
			observed: builder.Observed(net).Dead(l1).Build(),
			now:      now,
			want:     reconcile.Plan{Now: now, Actions: teardown(one, true, reconcile.ReasonContainerGone, "container podspawn-alice-web is missing", net)},
		},
		"container protected by podspawn.keep: released, not entered": {
			desired:  builder.Desired(one).Build(),
			observed: builder.Observed(net, kept).Dead(l1).Build(),
			now:      now,
			want: reconcile.Plan{Now: now, Actions: []reconcile.Action{releaseLease(one, l1)},
				Skipped: []reconcile.Skip{{Key: kAW, ObjectKind: observed.KindContainer, Target: kept.Name, Reason: reconcile.ReasonProtected,
					Detail: "labelled podspawn.keep=true"}}},
		},
	})
}
