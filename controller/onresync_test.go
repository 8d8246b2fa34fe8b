package controller

import (
	"context"
	"errors"
	"testing"
)

// Every resync, full or periodic, runs OnResync first (the host access
// rules); its failure is logged and the resync still enqueues its keys.
func TestDaemonResyncRunsOnResync(t *testing.T) {
	f := newFixture(t)
	calls := 0
	var fail error
	d := &Daemon{C: f.ctrl, Watcher: f.watcher(), Interval: 60e9, OnResync: func(ctx context.Context) error {
		if ctx.Err() != nil {
			t.Error("OnResync got a finished context")
		}
		calls++
		return fail
	}}
	q := NewQueue(f.clk, nil)
	defer q.ShutDown()
	k := f.orphan("alice")
	if err := d.resync(context.Background(), q, true); err != nil {
		t.Fatal(err)
	}
	fail = errors.New("iptables is not installed")
	if err := d.resync(context.Background(), q, false); err != nil {
		t.Fatalf("a failed OnResync failed the resync: %v", err)
	}
	if calls != 2 {
		t.Errorf("OnResync ran %d times in two resyncs", calls)
	}
	if n := f.logs.count("the host access rules could not be brought in line", "iptables is not installed"); n != 1 {
		t.Errorf("%d log lines for the failed OnResync:\n%s", n, f.logs.dump())
	}
	if q.Len() != 1 {
		t.Errorf("queue holds %d keys, want %s", q.Len(), k)
	}
}
