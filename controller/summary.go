package controller

import (
	"slices"
	"time"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/reconcile"
)

// Summary counts a plan's actions by effect, for "Plan: ..." lines,
// the JSON plan and logs.
type Summary struct {
	Create    int `json:"create"`
	Change    int `json:"change"`
	Remove    int `json:"remove"`
	Unchanged int `json:"unchanged"`
	Skipped   int `json:"skipped"`
	Held      int `json:"held,omitempty"`
}

// Summarize counts the actions of p.
func Summarize(p reconcile.Plan) Summary {
	s := Summary{Unchanged: p.Unchanged, Skipped: len(p.Skipped), Held: len(p.Held)}
	for _, a := range p.Actions {
		switch actions.EffectOf(a.Kind) {
		case actions.EffectCreate:
			s.Create++
		case actions.EffectRemove:
			s.Remove++
		default:
			s.Change++
		}
	}
	return s
}

// PlanLogValues returns p's summary as logr key/value pairs.
func PlanLogValues(p reconcile.Plan) []any {
	s := Summarize(p)
	kv := []any{"create", s.Create, "change", s.Change, "remove", s.Remove, "unchanged", s.Unchanged, "skip", s.Skipped}
	if s.Held > 0 {
		kv = append(kv, "held", s.Held)
	}
	return kv
}

// planKeys returns the keys that have actions in p, in plan order.
func planKeys(p reconcile.Plan) []desired.SessionKey {
	var keys []desired.SessionKey
	seen := map[desired.SessionKey]bool{}
	for _, a := range p.Actions {
		if !seen[a.Key] {
			seen[a.Key] = true
			keys = append(keys, a.Key)
		}
	}
	return keys
}

// wakeFor returns the earliest future deadline of key k in p.
func wakeFor(p reconcile.Plan, k desired.SessionKey) (time.Time, bool) {
	i, found := slices.BinarySearchFunc(p.Wakes, k, func(w reconcile.KeyWake, k desired.SessionKey) int { return w.Key.Compare(k) })
	if !found {
		return time.Time{}, false
	}
	return p.Wakes[i].At, true
}
