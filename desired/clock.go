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
