package reconcile

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/observed"
)

// Options tune Compute.
type Options struct {
	// OrphanMinAge: a labelled object with no session is removed only once
	// it is this old, so a session being created is never reaped.
	OrphanMinAge time.Duration
	// PendingTimeout: a session still creating with no live connection
	// after this long is abandoned.
	PendingTimeout time.Duration
	CrashLoop      CrashLoop
	// WarnBefore are the lead times before a max lifetime at which live
	// connections are warned (session.warn_before).
	WarnBefore []time.Duration
	// HoldLiveDeadlinesUntil is set after the wall clock stepped forward:
	// until then a connected session past its max lifetime or grace period
	// is kept (skip clock-step), and a pass at this instant confirms it.
	HoldLiveDeadlinesUntil time.Time
}

// expired is the one deadline rule: a deadline is reached at its instant.
func expired(deadline, now time.Time) bool { return !now.Before(deadline) }

// Phases order keys in the plan as the admin docs do (grace expiries, max
// lifetimes, orphans), bookkeeping and creation first: a user may be
// waiting on them.
const (
	phaseMaintain = iota
	phaseGrace
	phaseLifetime
	phaseTeardown
	phaseOrphan
	phaseCount
)

// Compute returns the plan that moves observed towards desired at now.
// It never mutates its inputs and returns the same plan for the same
// inputs, whatever the order of sessions, users and objects.
func Compute(d desired.State, o observed.State, now time.Time, opt Options) Plan {
	groups, invalid := pair(d, o)
	plan := Plan{Now: now}
	for _, s := range invalid {
		plan.Skipped = append(plan.Skipped, Skip{Key: s.Key, ObjectKind: "session", Target: fmt.Sprintf("session %q", s.Key.String()), Reason: ReasonInvalidKey,
			Detail: "the user or project name of this row is not valid; fix or delete the row (podspawn never creates it)"})
	}
	var phases [phaseCount][]Action
	c := &keyCtx{instanceID: d.InstanceID, exited: o.Exited, now: now, opt: opt}
	for _, g := range groups {
		c.reset(g)
		switch {
		case g.sessions > 1:
			// Which session is meant is unknown; either choice would remove
			// the other's objects. Loaders never produce this.
			c.skip("session", c.sessionTarget(), ReasonDuplicateSession,
				fmt.Sprintf("the desired state holds %d sessions for this key; nothing is done until it holds one", g.sessions))
		case c.sess == nil:
			for _, it := range c.removable {
				c.orphan(it)
			}
		default:
			c.session()
		}
		if len(c.actions) > 0 {
			phases[c.phase] = append(phases[c.phase], c.actions...)
		} else if g.sessions == 1 {
			plan.Unchanged++
		}
		if !c.wake.IsZero() {
			plan.Wakes = append(plan.Wakes, KeyWake{Key: g.key, At: c.wake})
			if plan.Wake.IsZero() || c.wake.Before(plan.Wake) {
				plan.Wake = c.wake
			}
		}
	}
	for _, as := range phases {
		plan.Actions = append(plan.Actions, as...)
	}
	plan.Skipped = append(plan.Skipped, c.skipped...)
	return plan
}

// keyCtx is the decision of one key in the making.
type keyCtx struct {
	key        desired.SessionKey
	instanceID string
	sess       *desired.Session
	hasUser    bool
	// removable are the key's objects podspawn may remove, in teardown
	// order; present adds the protected ones, which count for every
	// decision but are never removed.
	removable, present []*item
	exited             map[observed.ProcessRef]struct{}
	now                time.Time
	opt                Options
	skipped            []Skip

	actions []Action
	phase   int
	wake    time.Time
}

func (c *keyCtx) reset(g *keyGroup) {
	c.key, c.sess, c.hasUser = g.key, g.sess, g.hasUser
	c.actions, c.phase, c.wake = nil, 0, time.Time{}
	c.removable, c.present = c.partition(g.objects)
}

// add appends a to the key's chain; the key takes its earliest phase.
func (c *keyCtx) add(a Action, phase int) {
	a.Key = c.key
	if len(c.actions) == 0 || phase < c.phase {
		c.phase = phase
	}
	c.actions = append(c.actions, a)
}

func (c *keyCtx) wakeAt(t time.Time) {
	if t.After(c.now) && (c.wake.IsZero() || t.Before(c.wake)) {
		c.wake = t
	}
}

func (c *keyCtx) skip(kind observed.Kind, target string, r Reason, detail string) {
	c.skipped = append(c.skipped, Skip{Key: c.key, ObjectKind: kind, Target: target, Reason: r, Detail: detail})
}

func (c *keyCtx) sessionTarget() string { return "session " + c.key.String() }

// onSession is an action on the key's session row.
func (c *keyCtx) onSession(k Kind, r Reason, detail string) Action {
	return Action{Kind: k, Target: c.sessionTarget(), SessionID: c.sess.ID, Reason: r, Detail: detail}
}

// partition sorts a key's objects into teardown order (so skips do not
// depend on Docker's listing order), skips those podspawn must not touch,
// and keeps the protected ones in present only.
func (c *keyCtx) partition(items []*item) (removable, present []*item) {
	slices.SortStableFunc(items, func(a, b *item) int {
		if a.rank != b.rank {
			return cmp.Compare(a.rank, b.rank)
		}
		return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(a.ID, b.ID))
	})
	var kept []*item
	n := 0
	for _, it := range items {
		if it.untouchable != "" {
			c.skip(it.Kind, it.Name, it.untouchable, it.why)
		}
		switch it.untouchable {
		case "":
			items[n] = it // n never passes the loop's index
			n++
		case ReasonProtected:
			kept = append(kept, it)
		}
	}
	m := n + copy(items[n:], kept)
	return items[:n], items[:m]
}

var removeKinds = map[observed.Kind]Kind{
	observed.KindContainer: KindRemoveContainer,
	observed.KindNetwork:   KindRemoveNetwork,
	observed.KindVolume:    KindRemoveVolume,
}

func (c *keyCtx) remove(it *item, r Reason, detail string, phase int) {
	c.add(Action{Kind: removeKinds[it.Kind], Target: it.Name, TargetID: it.ID, SessionID: it.session, Reason: r, Detail: detail,
		RemovesSession: it.sessionContainer, NoInstance: it.noInstance}, phase)
}

// markUnplanned flags the key's actions from index i on as decided from
// missing desired state.
func (c *keyCtx) markUnplanned(i int) {
	for ; i < len(c.actions); i++ {
		c.actions[i].Unplanned = true
	}
}

// orphan removes an object with no session once it is old enough.
func (c *keyCtx) orphan(it *item) {
	ripe := it.Created.Add(c.opt.OrphanMinAge)
	if !expired(ripe, c.now) {
		c.skip(it.Kind, it.Name, ReasonOrphanTooYoung, fmt.Sprintf("no session record; removable in %s", human(ripe.Sub(c.now))))
		c.wakeAt(ripe)
		return
	}
	detail := "no session record"
	if c.key == desired.Unattributed {
		detail = "no session record and no podspawn.user label"
	}
	c.remove(it, ReasonOrphan, detail, phaseOrphan)
	c.markUnplanned(len(c.actions) - 1)
}

// current: made by this database for the session's generation. Both labels
// are required, as the executor requires them to adopt an object.
func (c *keyCtx) current(it *item) bool { return it.session == c.sess.ID && it.ours }

// staleGeneration: made by this database for an earlier generation.
func (c *keyCtx) staleGeneration(it *item) bool {
	return it.session != c.sess.ID && it.session != "" && it.ours
}

// findCurrent returns the current object of that kind and name, protected
// or not.
func (c *keyCtx) findCurrent(k observed.Kind, name string) *item {
	for _, it := range c.present {
		if it.Kind == k && it.Name == name && c.current(it) {
			return it
		}
	}
	return nil
}

func running(it *item) bool { return it != nil && it.Running }

// human renders a duration to the second for details ("2m10s").
func human(d time.Duration) string { return d.Abs().Truncate(time.Second).String() }

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }
