package reconcile

import (
	"fmt"
	"slices"
	"time"

	"github.com/podspawn/podspawn/desired"
)

// KindWarn writes a warning on every live connection's terminal that the
// session reaches its max lifetime at Action.At; Action.Before is the lead
// time (from session.warn_before) being warned at, recorded on the row so
// it is sent once.
const KindWarn Kind = "warn"

// ReasonLifetimeEnding: the max lifetime is near.
const ReasonLifetimeEnding Reason = "lifetime-ending"

// warn plans the warning due at now, if any, and wakes the key at the
// next lead time. Of several lead times passed since the last warning
// (a daemon that was down), only the shortest is sent: the user needs
// the latest news, not the backlog. Nobody is warned without a live
// connection, and a lead time is never warned twice.
func (c *keyCtx) warn(live []desired.Lease) {
	s := c.sess
	if len(c.opt.WarnBefore) == 0 || s.Mode == desired.ModePersistent || s.MaxLifetimeAt.IsZero() {
		return
	}
	if s.Status != desired.StatusRunning && s.Status != desired.StatusGrace {
		return
	}
	leads := slices.Clone(c.opt.WarnBefore)
	slices.Sort(leads)
	slices.Reverse(leads) // longest first
	due := time.Duration(0)
	for _, lead := range leads {
		if lead <= 0 || (s.WarnedBefore != 0 && lead >= s.WarnedBefore) {
			continue
		}
		at := s.MaxLifetimeAt.Add(-lead)
		if !expired(at, c.now) {
			c.wakeAt(at)
			continue
		}
		due = lead
	}
	if due == 0 || len(live) == 0 {
		return
	}
	left := s.MaxLifetimeAt.Sub(c.now)
	c.add(Action{Kind: KindWarn, Target: "session " + c.key.String(), SessionID: s.ID, At: s.MaxLifetimeAt, Before: due,
		Leases: slices.Clone(live), Reason: ReasonLifetimeEnding,
		Detail: fmt.Sprintf("max lifetime ends in %s, at %s; warning %d connection(s)", human(left), s.MaxLifetimeAt.UTC().Format(time.RFC3339), len(live))},
		phaseMaintain)
}
