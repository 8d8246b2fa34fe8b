package controller

import (
	"context"
	"sync"
	"time"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/reconcile"
)

// clockWatch remembers the previous clock sample of a long-running
// controller, to tell a step of the wall clock (NTP correction, VM
// resume) from time passing: deadlines are stored as wall-clock times, so
// a forward step makes them all due at once.
type clockWatch struct {
	mu        sync.Mutex
	sampled   bool
	wall      time.Time // without a monotonic reading
	mono      time.Duration
	holdUntil time.Time
}

// planNow returns the time to plan at. With Monotonic set it also compares
// the wall-clock and monotonic time elapsed since the previous plan: after
// a forward step of more than desired.ClockStepThreshold, deadlines of
// connected sessions are held for desired.ClockStepConfirm (see
// options), so that only a second pass on a clock that did not step again
// tears them down.
func (c *Controller) planNow() time.Time {
	now := c.Clock.Now()
	if c.Monotonic == nil {
		return now
	}
	mono := c.Monotonic()
	w := &c.clock
	w.mu.Lock()
	defer w.mu.Unlock()
	// Round(0) drops Go's monotonic reading: the wall clock is compared.
	wall := now.Round(0)
	if w.sampled {
		step := wall.Sub(w.wall) - (mono - w.mono)
		switch {
		case step > desired.ClockStepThreshold:
			w.holdUntil = now.Add(desired.ClockStepConfirm)
			c.Log.Error(nil, "Wall clock stepped forward; holding max-lifetime teardowns of connected sessions until a pass confirms",
				"step", step.String(), "holdUntil", w.holdUntil.UTC().Format(time.RFC3339))
		case step < -desired.ClockStepThreshold:
			c.Log.Error(nil, "Wall clock stepped back; sessions and leases created before the step look younger than they are", "step", step.String())
		}
	}
	w.sampled, w.wall, w.mono = true, wall, mono
	return now
}

// checkStoredClock compares the clocks with those the previous one-shot
// pass recorded in the state database (a one-shot process has no earlier
// reading of its own). After a forward step it holds max-lifetime and
// grace teardowns of connected sessions like the daemon does, until a pass
// ClockStepConfirm later by boot time confirms. It returns this pass's
// sample for recordClock (nil without BootClock).
func (c *Controller) checkStoredClock(ctx context.Context) (*desired.ClockSample, error) {
	now, check, err := c.compareStoredClock(ctx)
	if now != nil {
		c.logStoredClock(check)
	}
	return now, err
}

// refreshClockHold is checkStoredClock for a single key's reconcile or a
// login: the hold is applied, and the pass that records the sample logs.
func (c *Controller) refreshClockHold(ctx context.Context) error {
	_, _, err := c.compareStoredClock(ctx)
	return err
}

func (c *Controller) compareStoredClock(ctx context.Context) (*desired.ClockSample, desired.ClockCheck, error) {
	if c.BootClock == nil {
		return nil, desired.ClockCheck{}, nil
	}
	boot, bootID, err := c.BootClock()
	if err != nil {
		return nil, desired.ClockCheck{}, err
	}
	now := desired.ClockSample{Wall: c.Clock.Now(), Boot: boot, BootID: bootID}
	prev, err := c.Store.ClockSample(ctx)
	if err != nil {
		return nil, desired.ClockCheck{}, err
	}
	check := desired.CheckClock(prev, now)
	if hold := check.HoldLiveDeadlinesUntil; !hold.IsZero() {
		c.clock.mu.Lock()
		if hold.After(c.clock.holdUntil) {
			c.clock.holdUntil = hold
		}
		c.clock.mu.Unlock()
	}
	return &now, check, nil
}

// recordClock records a pass's sample for the next one-shot pass.
func (c *Controller) recordClock(ctx context.Context, now *desired.ClockSample) error {
	if now == nil {
		return nil
	}
	_, err := c.Store.CheckClock(ctx, *now)
	return err
}

func (c *Controller) logStoredClock(check desired.ClockCheck) {
	last := check.Previous.UTC().Format(time.RFC3339)
	switch {
	case check.Step > desired.ClockStepThreshold:
		c.Log.Error(nil, "Wall clock stepped forward since the last pass; holding max-lifetime teardowns of connected sessions until a pass confirms",
			"step", check.Step.String(), "lastPass", last, "holdUntil", check.HoldLiveDeadlinesUntil.UTC().Format(time.RFC3339))
	case !check.HoldLiveDeadlinesUntil.IsZero():
		c.Log.Error(nil, "Wall clock stepped forward before the last pass; still holding max-lifetime teardowns of connected sessions until a pass confirms",
			"lastPass", last, "holdUntil", check.HoldLiveDeadlinesUntil.UTC().Format(time.RFC3339))
	case check.Step < -desired.ClockStepThreshold:
		c.Log.Error(nil, "Wall clock stepped back since the last pass; sessions and leases created before the step look younger than they are",
			"step", check.Step.String(), "lastPass", last)
	}
}

// options are c.Options with the hold of the last forward clock step.
func (c *Controller) options() reconcile.Options {
	opt := c.Options
	c.clock.mu.Lock()
	opt.HoldLiveDeadlinesUntil = c.clock.holdUntil
	c.clock.mu.Unlock()
	return opt
}

// reportFutureRows logs rows written after now: the clock stepped back
// since (or was wrong when they were written).
func (c *Controller) reportFutureRows(d desired.State, now time.Time) {
	rows := desired.FutureRows(d, now)
	if len(rows) == 0 {
		return
	}
	c.Log.Error(nil, "Rows from the future: the clock stepped back since they were written; their ages are wrong until the clock catches up",
		"rows", len(rows), "newest", rows[0].At.UTC().Format(time.RFC3339), "user", rows[0].Key.User, "project", rows[0].Key.Project, "field", rows[0].Field)
}
