package lock

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"
)

// UserHolders says who takes a user's lock, for the error of a busy one.
const UserHolders = "a login, cleanup or another admin command holds it"

// BusyError is a lock not taken within its timeout. It unwraps to the
// context's error, so errors.Is(err, context.DeadlineExceeded) holds.
type BusyError struct {
	What, Path, Holders string
	Timeout             time.Duration
	Err                 error
}

func (e *BusyError) Error() string {
	return fmt.Sprintf("%s is busy: could not take %s within %s (%s); nothing was changed, try again", e.What, e.Path, e.Timeout, e.Holders)
}

func (e *BusyError) Unwrap() error { return e.Err }

// AcquireTimeout is Acquire bounded by timeout (0: until ctx ends). Running
// out of time is a *BusyError naming what is busy (what), the lock file and
// who may hold it (holders), instead of a bare "context deadline exceeded".
func AcquireTimeout(ctx context.Context, dir, name string, timeout time.Duration, what, holders string) (*Lock, error) {
	if timeout <= 0 {
		return Acquire(ctx, dir, name)
	}
	lctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	l, err := Acquire(lctx, dir, name)
	// Only our own timeout means "busy"; the caller's deadline or a
	// signal is the caller's to report.
	if err != nil && errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		return nil, &BusyError{What: what, Path: filepath.Join(dir, name+".lock"), Holders: holders, Timeout: timeout, Err: err}
	}
	return l, err
}

// AcquireUser takes user's lock within timeout, the lock that spawn, the
// controller and admin commands share.
func AcquireUser(ctx context.Context, dir, user string, timeout time.Duration) (*Lock, error) {
	return AcquireTimeout(ctx, dir, user, timeout, "user "+user, UserHolders)
}
