package controller

import (
	"context"
	"testing"
	"time"

	"github.com/podspawn/podspawn/desired"
)

// TestDaemonResyncKeepsAStoredClockStepHold: a one-shot pass saw a
// forward step of the wall clock and recorded a hold; a daemon started
// right after honours it at its first resync (it has no earlier reading
// of its own) and records its own sample for the next one-shot pass.
func TestDaemonResyncKeepsAStoredClockStepHold(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	now := f.clk.Now()
	// The one-shot passes: an hour of wall clock passed in 5 s of boot time.
	for _, s := range []desired.ClockSample{
		{Wall: now.Add(-time.Hour - 10*time.Second), Boot: time.Hour, BootID: "b"},
		{Wall: now.Add(-5 * time.Second), Boot: time.Hour + 5*time.Second, BootID: "b"},
	} {
		if _, err := f.store.CheckClock(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	boot := time.Hour + 10*time.Second
	f.ctrl.BootClock = func() (time.Duration, string, error) { return boot, "b", nil }
	d := &Daemon{C: f.ctrl, Watcher: f.watcher()}
	q := &recordingQueue{Queue: NewQueue(f.clk, nil)}
	t.Cleanup(q.ShutDown)

	if err := d.resyncOnce(ctx, q, false); err != nil {
		t.Fatal(err)
	}
	// Held until a minute of boot time after the step was seen.
	want := now.Add(desired.ClockStepConfirm - 5*time.Second)
	if got := f.ctrl.options().HoldLiveDeadlinesUntil; !got.Equal(want) {
		t.Fatalf("hold after the daemon's first resync = %s, want %s", got, want)
	}
	got, err := f.store.ClockSample(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got == nil || got.Boot != boot || !got.Wall.Equal(now) {
		t.Fatalf("sample after the resync = %+v, want the daemon's (boot %s, wall %s)", got, boot, now)
	}
}
