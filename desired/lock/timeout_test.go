package lock_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/podspawn/podspawn/desired/lock"
)

func TestAcquireTimeoutSaysWhatIsBusy(t *testing.T) {
	dir := t.TempDir()
	held := acquire(t, dir, "alice")
	defer held.Unlock()

	l, err := lock.AcquireUser(context.Background(), dir, "alice", 10*time.Millisecond)
	want := "user alice is busy: could not take " + filepath.Join(dir, "alice.lock") +
		" within 10ms (a login, cleanup or another admin command holds it); nothing was changed, try again"
	var busy *lock.BusyError
	if l != nil || !errors.As(err, &busy) || err.Error() != want || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("AcquireUser on a held lock = %v, %v; want a *BusyError %q wrapping the deadline", l, err, want)
	}

	// The caller's own deadline is not "busy": the timeout did not run out.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	l, err = lock.AcquireTimeout(ctx, dir, "alice", time.Hour, "x", "y")
	if l != nil || errors.As(err, &busy) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("AcquireTimeout past the caller's deadline = %v, %v; want the plain deadline error", l, err)
	}

	// No timeout: it waits as long as the context allows.
	cctx, ccancel := context.WithCancel(context.Background())
	ccancel()
	if l, err := lock.AcquireTimeout(cctx, dir, "alice", 0, "x", "y"); l != nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("AcquireTimeout(timeout 0) on a cancelled context = %v, %v; want context.Canceled", l, err)
	}

	held.Unlock()
	l, err = lock.AcquireUser(context.Background(), dir, "alice", 10*time.Millisecond)
	if err != nil {
		t.Fatalf("AcquireUser on a free lock: %v", err)
	}
	l.Unlock()
}
