package controller

import "github.com/podspawn/podspawn/reconcile"

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
		switch a.Kind.Effect() {
		case reconcile.EffectCreate:
			s.Create++
		case reconcile.EffectRemove:
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
