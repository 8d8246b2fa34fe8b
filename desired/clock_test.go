package desired_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/test/builder"
)

func TestFutureRows(t *testing.T) {
	now := builder.Epoch
	key := func(user, project string) desired.SessionKey { return desired.SessionKey{User: user, Project: project} }
	future := now.Add(3 * time.Hour)
	l := builder.Lease(1, 4242)
	l.StartedAt = future.Add(time.Minute)
	d := builder.Desired(
		builder.Session("alice", "").CreatedAt(future).Leases(l).Build(),
		builder.Session("bob", "").CreatedAt(now.Add(desired.ClockStepThreshold)).Build(), // within the slack
		builder.Session("carol", "").CreatedAt(now.Add(-time.Hour)).Restarts(1, future, future.Add(time.Hour)).Build(),
	).Build()
	want := []desired.FutureRow{
		{Key: key("alice", ""), Field: "lease.started_at", At: future.Add(time.Minute)},
		{Key: key("alice", ""), Field: "created_at", At: future},
		{Key: key("carol", ""), Field: "last_restart_at", At: future},
	}
	if diff := cmp.Diff(want, desired.FutureRows(d, now)); diff != "" {
		t.Fatalf("FutureRows (-want +got):\n%s", diff)
	}
	if got := desired.FutureRows(builder.Desired(builder.Session("dan", "").Build()).Build(), now); len(got) != 0 {
		t.Fatalf("FutureRows of a present row = %v, want none", got)
	}
}

// TestCheckClock follows the samples of one-shot passes through a forward
// step, its confirmation, a backward step and reboots.
func TestCheckClock(t *testing.T) {
	wall := builder.Epoch
	sample := func(wall time.Time, boot time.Duration, id string) desired.ClockSample {
		return desired.ClockSample{Wall: wall, Boot: boot, BootID: id}
	}
	first := desired.CheckClock(nil, sample(wall, time.Hour, "b1"))
	if diff := cmp.Diff(desired.ClockCheck{Next: sample(wall, time.Hour, "b1")}, first); diff != "" {
		t.Fatalf("first pass (-want +got):\n%s", diff)
	}

	// 10 s of boot time, 2 h of wall clock: a forward step.
	stepped := wall.Add(2 * time.Hour)
	boot := time.Hour + 10*time.Second
	got := desired.CheckClock(&first.Next, sample(stepped, boot, "b1"))
	want := desired.ClockCheck{
		Next:                   desired.ClockSample{Wall: stepped, Boot: boot, BootID: "b1", HoldUntil: boot + desired.ClockStepConfirm},
		Step:                   2*time.Hour - 10*time.Second,
		Previous:               wall,
		HoldLiveDeadlinesUntil: stepped.Add(desired.ClockStepConfirm),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("pass after the step (-want +got):\n%s", diff)
	}

	// A pass 1 ns before the confirmation still holds, until the same instant.
	early := desired.CheckClock(&got.Next, sample(stepped.Add(desired.ClockStepConfirm-time.Nanosecond), boot+desired.ClockStepConfirm-time.Nanosecond, "b1"))
	if !early.HoldLiveDeadlinesUntil.Equal(want.HoldLiveDeadlinesUntil) || early.Next.HoldUntil != want.Next.HoldUntil || early.Step != 0 {
		t.Fatalf("pass before the confirmation = %+v, want the hold until %s", early, want.HoldLiveDeadlinesUntil)
	}
	confirmed := desired.CheckClock(&early.Next, sample(stepped.Add(desired.ClockStepConfirm), boot+desired.ClockStepConfirm, "b1"))
	if !confirmed.HoldLiveDeadlinesUntil.IsZero() || confirmed.Next.HoldUntil != 0 {
		t.Fatalf("confirming pass = %+v, want no hold", confirmed)
	}

	// Within the threshold: no step. Backwards: reported, never held.
	small := desired.CheckClock(&confirmed.Next, sample(stepped.Add(desired.ClockStepConfirm+2*time.Minute), boot+desired.ClockStepConfirm+time.Minute, "b1"))
	if small.Step != time.Minute || !small.HoldLiveDeadlinesUntil.IsZero() {
		t.Fatalf("a step of exactly the threshold = %+v, want no hold", small)
	}
	back := desired.CheckClock(&small.Next, sample(wall, small.Next.Boot+time.Second, "b1"))
	if back.Step >= -desired.ClockStepThreshold || !back.HoldLiveDeadlinesUntil.IsZero() {
		t.Fatalf("backward step = %+v, want a negative step and no hold", back)
	}

	// Reboots, by boot id or by boot time going back, drop the hold.
	for name, next := range map[string]desired.ClockSample{
		"new boot id":                     sample(stepped.Add(5*time.Hour), boot+time.Hour, "b2"),
		"boot time went back":             sample(stepped.Add(5*time.Hour), time.Second, "b1"),
		"no boot id, boot time went back": sample(stepped.Add(5*time.Hour), time.Second, ""),
	} {
		got := desired.CheckClock(&want.Next, next)
		if diff := cmp.Diff(desired.ClockCheck{Next: next}, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", name, diff)
		}
	}
}
