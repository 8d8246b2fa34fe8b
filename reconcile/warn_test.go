package reconcile_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/reconcile"
	"github.com/podspawn/podspawn/test/builder"
)

// TestComputeWarn: warnings before the max lifetime L with warn_before
// [15m, 1m], at the deadline boundaries, whole plans.
func TestComputeWarn(t *testing.T) {
	opt := testOpt
	opt.WarnBefore = []time.Duration{time.Minute, 15 * time.Minute} // any order
	L := defaultLifetime
	k := key("alice", "web")
	lease, lease2 := builder.Lease(1, 4242), builder.Lease(2, 4343)
	sess := func(warned time.Duration, ls ...desired.Lease) *desired.Session {
		return builder.Session("alice", "web").Warned(warned).Leases(ls...).Build()
	}
	objs := builder.ObjectsFor(sess(0), builder.Instance)
	obs := func(ls ...desired.Lease) observed.State { return builder.Observed(objs...).Alive(ls...).Build() }
	warn := func(s *desired.Session, at time.Time, before time.Duration, ls ...desired.Lease) reconcile.Action {
		ls = append([]desired.Lease(nil), ls...)
		for i := range ls {
			ls[i].SessionID = s.ID
		}
		return reconcile.Action{Kind: reconcile.KindWarn, Key: k, Target: sessionTarget(k), SessionID: s.ID, At: L, Before: before,
			Leases: ls, Reason: reconcile.ReasonLifetimeEnding,
			Detail: fmt.Sprintf("max lifetime ends in %s, at %s; warning %d connection(s)", L.Sub(at), L.Format(time.RFC3339), len(ls))}
	}
	idle := func(at, wake time.Time) reconcile.Plan {
		return reconcile.Plan{Now: at, Unchanged: 1, Wake: wake, Wakes: []reconcile.KeyWake{{Key: k, At: wake}}}
	}
	acting := func(at, wake time.Time, as ...reconcile.Action) reconcile.Plan {
		return reconcile.Plan{Now: at, Actions: as, Wake: wake, Wakes: []reconcile.KeyWake{{Key: k, At: wake}}}
	}
	first, last := L.Add(-15*time.Minute), L.Add(-time.Minute)
	type tc struct {
		s    *desired.Session
		o    observed.State
		now  time.Time
		want reconcile.Plan
	}
	cases := map[string]tc{
		"1ns before the first lead time: wake then": {sess(0, lease), obs(lease), first.Add(-1), idle(first.Add(-1), first)},
		"at the first lead time: warn every live connection": {sess(0, lease, lease2), obs(lease, lease2), first,
			acting(first, last, warn(sess(0), first, 15*time.Minute, lease, lease2))},
		"1ns after, first already sent: nothing until the second": {sess(15*time.Minute, lease), obs(lease), first.Add(1), idle(first.Add(1), last)},
		"1ns before the second":                                   {sess(15*time.Minute, lease), obs(lease), last.Add(-1), idle(last.Add(-1), last)},
		"at the second lead time": {sess(15*time.Minute, lease), obs(lease), last,
			acting(last, L, warn(sess(0), last, time.Minute, lease))},
		"both passed unsent (daemon down): only the shortest": {sess(0, lease), obs(lease), last.Add(time.Second),
			acting(last.Add(time.Second), L, warn(sess(0), last.Add(time.Second), time.Minute, lease))},
		"all sent: wake at the lifetime": {sess(time.Minute, lease), obs(lease), L.Add(-1), idle(L.Add(-1), L)},
		"no live connection (grace period): no warning": {builder.Session("alice", "web").Grace(L.Add(-30 * time.Second)).Build(), obs(), first,
			idle(first, last)},
		"persistent: never warned": {builder.Session("alice", "web").Mode(desired.ModePersistent).Leases(lease).Build(), obs(lease), last, reconcile.Plan{Now: last, Unchanged: 1}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			got := reconcile.Compute(builder.Desired(c.s).Build(), c.o, c.now, opt)
			if diff := cmp.Diff(c.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("plan mismatch (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("at the lifetime: removal, no warning", func(t *testing.T) {
		got := reconcile.Compute(builder.Desired(sess(0, lease)).Build(), obs(lease), L, opt)
		for _, a := range got.Actions {
			if a.Kind == reconcile.KindWarn {
				t.Fatalf("warned at the deadline: %+v", a)
			}
		}
		if len(got.Actions) == 0 || got.Actions[0].Reason != reconcile.ReasonLifetimeExceeded {
			t.Fatalf("want lifetime teardown, got %+v", got.Actions)
		}
	})
}
