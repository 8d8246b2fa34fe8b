package desired

import (
	"sort"
	"time"
)

// ClockStepThreshold is the difference between wall-clock and monotonic
// elapsed time that counts as a step of the clock, and ClockStepConfirm
// how long after a forward step deadlines of live sessions are held.
const (
	ClockStepThreshold = time.Minute
	ClockStepConfirm   = time.Minute
)

// FutureRow is a timestamp written at "now" that lies after now: the clock
// stepped back since it was written (or it was wrong then).
type FutureRow struct {
	Key   SessionKey `json:"key"`
	Field string     `json:"field"`
	At    time.Time  `json:"at"`
}

// FutureRows returns the rows of d with a timestamp written at the time
// (creation, a lease's start, a restart) later than now by more than
// ClockStepThreshold, newest first. Deadlines are in the future by design
// and are not looked at.
func FutureRows(d State, now time.Time) []FutureRow {
	limit := now.Add(ClockStepThreshold)
	var out []FutureRow
	add := func(k SessionKey, field string, at time.Time) {
		if at.After(limit) {
			out = append(out, FutureRow{Key: k, Field: field, At: at})
		}
	}
	for _, s := range d.Sessions {
		add(s.Key, "created_at", s.CreatedAt)
		add(s.Key, "last_restart_at", s.LastRestartAt)
		for _, l := range s.Leases {
			add(s.Key, "lease.started_at", l.StartedAt)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].At.Equal(out[j].At) {
			return out[i].At.After(out[j].At)
		}
		if out[i].Key != out[j].Key {
			return out[i].Key.String() < out[j].Key.String()
		}
		return out[i].Field < out[j].Field
	})
	return out
}

// ClockSample is what a one-shot pass records of the clocks, so that the
// next pass, in another process, can tell a step of the wall clock from
// time passing: the wall clock, CLOCK_BOOTTIME (monotonic across
// processes, counting suspend) and the kernel's boot id, and the boot time
// until which teardowns of connected sessions are held after a forward step
// (zero: no hold).
type ClockSample struct {
	Wall      time.Time
	Boot      time.Duration
	BootID    string
	HoldUntil time.Duration
}

// ClockCheck is what a pass learns by comparing its clocks with the
// previous pass's sample.
type ClockCheck struct {
	// Next is the sample to record.
	Next ClockSample
	// Step is the wall-clock time elapsed since the previous sample minus
	// the boot time elapsed: positive when the wall clock stepped forward.
	// Zero without a comparable sample.
	Step time.Duration
	// Previous is the previous sample's wall-clock time (zero: none, or
	// taken before a reboot).
	Previous time.Time
	// HoldLiveDeadlinesUntil is the wall-clock instant until which
	// max-lifetime teardowns of connected sessions are held (zero: none).
	HoldLiveDeadlinesUntil time.Time
}

// CheckClock compares the clocks of a pass (now, without HoldUntil) with
// the previous pass's sample. A forward step of more than
// ClockStepThreshold holds teardowns of connected sessions until a pass at
// least ClockStepConfirm later by boot time, on a clock that did not step
// again, confirms them. A reboot (another boot id, or boot time going
// backwards) is no step: the sample is taken afresh and any hold dropped,
// since the connections it protected ended with the boot.
func CheckClock(prev *ClockSample, now ClockSample) ClockCheck {
	now.Wall = now.Wall.Round(0)
	now.HoldUntil = 0
	if prev == nil || now.Boot < prev.Boot || (prev.BootID != "" && now.BootID != "" && prev.BootID != now.BootID) {
		return ClockCheck{Next: now}
	}
	c := ClockCheck{Previous: prev.Wall, Step: now.Wall.Sub(prev.Wall) - (now.Boot - prev.Boot)}
	now.HoldUntil = prev.HoldUntil
	if c.Step > ClockStepThreshold {
		now.HoldUntil = now.Boot + ClockStepConfirm
	}
	if now.Boot >= now.HoldUntil {
		now.HoldUntil = 0 // confirmed (or never held)
	} else {
		c.HoldLiveDeadlinesUntil = now.Wall.Add(now.HoldUntil - now.Boot)
	}
	c.Next = now
	return c
}
