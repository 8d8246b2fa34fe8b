package reconcile

import (
	"fmt"
	"slices"
	"time"

	"github.com/podspawn/podspawn/desired"
)

// warn plans the lifetime warning due at now, if any, and wakes the key
// at the next lead time. Of several lead times passed since the last
// warning (a daemon that was down), only the shortest is sent: the user
// needs the latest news, not the backlog. Nobody is warned without a live
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
		if at := s.MaxLifetimeAt.Add(-lead); !expired(at, c.now) {
			c.wakeAt(at)
		} else {
			due = lead
		}
	}
	if due == 0 || len(live) == 0 {
		return
	}
	a := c.onSession(KindWarn, ReasonLifetimeEnding, fmt.Sprintf("max lifetime ends in %s, at %s; warning %d connection(s)",
		human(s.MaxLifetimeAt.Sub(c.now)), stamp(s.MaxLifetimeAt), len(live)))
	a.At, a.Before, a.Leases = s.MaxLifetimeAt, due, slices.Clone(live)
	c.add(a, phaseMaintain)
}
