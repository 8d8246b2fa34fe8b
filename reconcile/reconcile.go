package reconcile

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/spec"
	"github.com/podspawn/podspawn/observed"
)

// Options tune Compute.
type Options struct {
	// OrphanMinAge: a labelled object with no session is removed only once
	// it is at least this old, so a session being created is never reaped.
	OrphanMinAge time.Duration
	// PendingTimeout: a session still "creating" with no live connection
	// after this long is abandoned.
	PendingTimeout time.Duration
	// CrashLoop backs off from restarting a session container that keeps
	// stopping; its zero value restarts at once, without limit.
	CrashLoop CrashLoop
	// WarnBefore are the lead times before a session's max lifetime at
	// which its live connections are warned (session.warn_before).
	WarnBefore []time.Duration
	// HoldLiveDeadlinesUntil is set by the caller after the wall clock
	// stepped forward: until then, a session with live connections whose
	// max lifetime or grace period has passed is kept (skipped, reason clock-step) and the
	// key wakes at this instant, when a pass on a clock that did not step
	// again confirms the deadline.
	HoldLiveDeadlinesUntil time.Time
}

// expired is the one deadline rule: a deadline is reached at its instant.
func expired(deadline, now time.Time) bool { return !now.Before(deadline) }

// Phases order keys in the plan: the admin docs' order (grace expiries,
// then max lifetimes, then orphans), with bookkeeping and creation first
// because a user may be waiting on them.
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
	var phases [phaseCount][]Action
	c := &keyCtx{instanceID: d.InstanceID, exited: o.Exited, now: now, opt: opt}
	for _, s := range invalid {
		plan.Skipped = append(plan.Skipped, Skip{Key: s.Key, ObjectKind: "session", Target: fmt.Sprintf("session %q", s.Key.String()), Reason: ReasonInvalidKey,
			Detail: "the user or project name of this row is not valid; fix or delete the row (podspawn never creates it)"})
	}
	for _, g := range groups {
		c.reset(g)
		switch {
		case g.sessions > 1:
			c.duplicateSessions(g.sessions)
		case c.sess == nil:
			c.orphans(c.removable, ReasonOrphan)
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
	// The admin docs' order across keys: phase by phase, keys in order.
	for _, as := range phases {
		plan.Actions = append(plan.Actions, as...)
	}
	plan.Skipped = append(plan.Skipped, c.skipped...)
	return plan
}

type keyCtx struct {
	key        desired.SessionKey
	instanceID string
	sess       *desired.Session
	hasUser    bool
	// removable are the key's objects podspawn may remove, in teardown
	// order; present adds the protected ones, which exist for every
	// decision but are never removed.
	removable []*item
	present   []*item
	exited    map[observed.ProcessRef]struct{}
	now       time.Time
	opt       Options
	skipped   []Skip

	actions []Action
	phase   int
	wake    time.Time
}

func (c *keyCtx) reset(g *keyGroup) {
	c.key, c.sess, c.hasUser = g.key, g.sess, g.hasUser
	c.actions, c.phase, c.wake = nil, 0, time.Time{}
	c.removable, c.present = c.partition(g.objects)
}

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

func (c *keyCtx) skip(it *item, r Reason, detail string) {
	c.skipped = append(c.skipped, Skip{Key: c.key, ObjectKind: it.Kind, Target: it.Name, Reason: r, Detail: detail})
}

// partition sorts a key's items into teardown order and reports the ones
// podspawn must not touch: objects not managed by podspawn, those of
// another state database, and those an operator protected. It returns the
// items podspawn may remove and, as a longer view of the same array, those
// plus the protected ones. Sorting first makes the skips independent of
// Docker's listing order.
func (c *keyCtx) partition(items []*item) (removable, present []*item) {
	sortForRemoval(items)
	var kept []*item
	n := 0
	for i := range items {
		it := items[i]
		switch it.class {
		case classUnmanaged:
			c.skip(it, ReasonUnmanaged, "not labelled "+observed.ManagedSelector)
		case classForeign:
			c.skip(it, ReasonForeignInstance, fmt.Sprintf("created by another podspawn state database (instance %s)", it.Instance()))
		case classProtected:
			c.skip(it, ReasonProtected, "labelled "+observed.LabelKeep+"=true")
			kept = append(kept, it)
		default:
			items[n] = it // n never passes i
			n++
		}
	}
	m := n + copy(items[n:], kept)
	return items[:n], items[:m]
}

// sortForRemoval orders items in place in teardown order: session
// containers, service containers, networks (Docker refuses to remove a
// network with endpoints), then volumes (refused while a container uses them).
func sortForRemoval(items []*item) {
	if len(items) < 2 {
		return
	}
	slices.SortStableFunc(items, func(a, b *item) int {
		if a.rank != b.rank {
			return cmp.Compare(a.rank, b.rank)
		}
		if r := strings.Compare(a.Name, b.Name); r != 0 {
			return r
		}
		return strings.Compare(a.ID, b.ID)
	})
}

func removeKind(k observed.Kind) Kind {
	switch k {
	case observed.KindContainer:
		return KindRemoveContainer
	case observed.KindNetwork:
		return KindRemoveNetwork
	}
	return KindRemoveVolume
}

func (c *keyCtx) remove(it *item, r Reason, detail string, phase int) {
	c.add(Action{Kind: removeKind(it.Kind), Target: it.Name, TargetID: it.ID, SessionID: it.session, Reason: r, Detail: detail,
		StopsSession: it.sessionContainer && it.Running, NoInstance: it.noInstance}, phase)
}

// markUnplanned flags the key's actions from index i on as decided from
// missing desired state.
func (c *keyCtx) markUnplanned(i int) {
	for ; i < len(c.actions); i++ {
		c.actions[i].Unplanned = true
	}
}

// duplicateSessions leaves a key alone whose desired state holds more than
// one session: which one is meant is unknown, and either choice would
// remove the other's objects. Loaders never produce this (the key is the
// table's primary key); a caller that builds a State by hand might.
func (c *keyCtx) duplicateSessions(n int) {
	c.skipped = append(c.skipped, Skip{Key: c.key, ObjectKind: "session", Target: "session " + c.key.String(), Reason: ReasonDuplicateSession,
		Detail: fmt.Sprintf("the desired state holds %d sessions for this key; nothing is done until it holds one", n)})
}

// orphans removes objects with no session row once they are old enough.
func (c *keyCtx) orphans(items []*item, r Reason) {
	for _, it := range items {
		c.orphan(it, r)
	}
}

func (c *keyCtx) orphan(obj *item, r Reason) {
	ripe := obj.Created.Add(c.opt.OrphanMinAge)
	if !expired(ripe, c.now) {
		c.skip(obj, ReasonOrphanTooYoung, fmt.Sprintf("no session record; removable in %s", human(ripe.Sub(c.now))))
		c.wakeAt(ripe)
		return
	}
	detail := "no session record"
	if c.key == desired.Unattributed {
		detail = "no session record and no podspawn.user label"
	}
	c.remove(obj, r, detail, phaseOrphan)
	c.markUnplanned(len(c.actions) - 1)
}

// current: the object was made by this database for the session's
// generation. Both labels are required, as the executor requires them to
// adopt an object; without an instance label it is an orphan.
func (c *keyCtx) current(it *item) bool {
	return it.session == c.sess.ID && it.ours
}

// staleGeneration: the object was made by this database for an earlier
// generation of the key.
func (c *keyCtx) staleGeneration(it *item) bool {
	return it.session != c.sess.ID && it.session != "" && it.ours
}

// findCurrent returns the object of the session's generation with that
// kind and name, protected or not.
func (c *keyCtx) findCurrent(k observed.Kind, name string) *item {
	for i := range c.present {
		if it := c.present[i]; it.Kind == k && it.Name == name && c.current(it) {
			return it
		}
	}
	return nil
}

func (c *keyCtx) session() {
	s := c.sess
	var dead, alive []desired.Lease
	for _, l := range s.Leases {
		if _, gone := c.exited[observed.ProcessRef{PID: l.PID, Start: l.PIDStart}]; gone {
			dead = append(dead, l)
		} else {
			alive = append(alive, l)
		}
	}
	live := len(alive)

	sessCtr := c.findCurrent(observed.KindContainer, s.Spec.ContainerName)
	persistent := s.Mode == desired.ModePersistent

	reason, detail, phase := c.teardownReason(live, sessCtr, persistent)
	if (reason == ReasonLifetimeExceeded || reason == ReasonGraceExpired) && live > 0 && c.heldByClockStep(detail) {
		reason = ""
	}
	if reason != "" {
		c.teardown(reason, detail, phase, sessCtr)
		return
	}

	c.releaseDead(dead, sessCtr)
	for i := range c.removable {
		if c.staleGeneration(c.removable[i]) {
			c.remove(c.removable[i], ReasonStaleGeneration, "left by an earlier generation of this session", phaseOrphan)
		}
	}
	for i := range c.removable {
		if it := c.removable[i]; !c.current(it) && !c.staleGeneration(it) {
			c.orphan(it, ReasonOrphan)
		}
	}
	c.duplicates()

	switch {
	case s.Status == desired.StatusGrace && live > 0:
		c.add(Action{Kind: KindCancelGrace, Target: "session " + c.key.String(), SessionID: s.ID, Reason: ReasonReconnected,
			Detail: fmt.Sprintf("%d live connection(s)", live)}, phaseMaintain)
	case s.Status == desired.StatusRunning && live == 0 && !persistent && sessCtr != nil && sessCtr.Running:
		// destroy-on-disconnect and a zero grace period are teardowns above.
		at := c.now.Add(s.GracePeriod)
		c.add(Action{Kind: KindStartGrace, Target: "session " + c.key.String(), SessionID: s.ID, At: at, Reason: ReasonDisconnected,
			Detail: fmt.Sprintf("no live connections; grace period of %s ends at %s", human(s.GracePeriod), at.UTC().Format(time.RFC3339))}, phaseMaintain)
		c.wakeAt(at)
	}

	c.ensure(sessCtr, live)
	c.resetRestarts(sessCtr)
	c.warn(alive)

	if !persistent {
		c.wakeAt(s.MaxLifetimeAt)
		if s.Status == desired.StatusGrace {
			c.wakeAt(s.GraceExpiry)
		}
	}
	if s.Status == desired.StatusCreating && live == 0 {
		c.wakeAt(s.CreatedAt.Add(c.opt.PendingTimeout))
	}
}

// heldByClockStep keeps a connected session past its max lifetime (or
// grace period: a reconnect not yet seen by a pass) while the wall clock
// just stepped forward (Options.HoldLiveDeadlinesUntil): a pass after the
// hold confirms the deadline.
func (c *keyCtx) heldByClockStep(detail string) bool {
	if !c.now.Before(c.opt.HoldLiveDeadlinesUntil) {
		return false
	}
	c.skipped = append(c.skipped, Skip{Key: c.key, ObjectKind: "session", Target: "session " + c.key.String(), Reason: ReasonClockStep,
		Detail: fmt.Sprintf("%s, but the wall clock just stepped forward; a pass at %s confirms", detail, c.opt.HoldLiveDeadlinesUntil.UTC().Format(time.RFC3339))})
	c.wakeAt(c.opt.HoldLiveDeadlinesUntil)
	return true
}

// teardown removes the session for reason: its row is marked, every
// generation's objects and unowned leftovers of the key go (protected ones
// stay; the plan lists them as skipped), then the row.
func (c *keyCtx) teardown(reason Reason, detail string, phase int, sessCtr *item) {
	s := c.sess
	// A missing key file is the one teardown that comes from absence.
	if reason == ReasonUserRemoved && s.Status != desired.StatusTerminating {
		defer c.markUnplanned(len(c.actions))
	}
	if s.Status != desired.StatusTerminating {
		c.add(Action{Kind: KindMarkTerminating, Target: "session " + c.key.String(), SessionID: s.ID, Reason: reason, Detail: detail}, phase)
	}
	for i := range c.removable {
		c.remove(c.removable[i], reason, detail, phase)
		if reason == ReasonCrashLoop && c.removable[i] == sessCtr {
			c.actions[len(c.actions)-1].LogTail = CrashLoopLogLines
		}
	}
	c.add(Action{Kind: KindDeleteSession, Target: "session " + c.key.String(), SessionID: s.ID, Reason: reason, Detail: detail}, phase)
}

// duplicates removes all but the oldest of same-named objects of the
// current generation: dockerd 20.10 can create a second network of the
// same name when a create is retried while an abandoned one is still in
// flight, and containers then fail with "network is ambiguous".
func (c *keyCtx) duplicates() {
	for i := range c.removable {
		it := c.removable[i]
		if it.Kind != observed.KindNetwork || !c.current(it) {
			continue
		}
		for j := range c.removable {
			o := c.removable[j]
			if j == i || o.Kind != it.Kind || o.Name != it.Name || !c.current(o) {
				continue
			}
			if o.Created.Before(it.Created) || (o.Created.Equal(it.Created) && o.ID < it.ID) {
				c.remove(it, ReasonDuplicate, "a second network with the name of the session network", phaseMaintain)
				break
			}
		}
	}
}

// teardownReason decides whether the session goes, and why. The order
// gives one destroy per session with the admin docs' phase order.
func (c *keyCtx) teardownReason(live int, sessCtr *item, persistent bool) (Reason, string, int) {
	s := c.sess
	crash := c.crashLoopDetail(sessCtr)
	switch {
	case s.Status == desired.StatusTerminating:
		r := Reason(s.TerminateReason)
		if r == "" {
			r = ReasonUserRequested
		}
		return r, "marked for removal", phaseTeardown
	case !c.hasUser:
		return ReasonUserRemoved, fmt.Sprintf("user %s has no key file", c.key.User), phaseTeardown
	case !persistent && s.Status == desired.StatusGrace && !s.GraceExpiry.IsZero() && expired(s.GraceExpiry, c.now):
		return ReasonGraceExpired, fmt.Sprintf("grace period ended %s ago", human(c.now.Sub(s.GraceExpiry))), phaseGrace
	case !persistent && expired(s.MaxLifetimeAt, c.now):
		return ReasonLifetimeExceeded, fmt.Sprintf("max lifetime reached %s ago, with %d live connection(s)", human(c.now.Sub(s.MaxLifetimeAt)), live), phaseLifetime
	case s.Status == desired.StatusCreating && live == 0 && expired(s.CreatedAt.Add(c.opt.PendingTimeout), c.now):
		return ReasonCreationAbandoned, fmt.Sprintf("still creating after %s with no live connection", human(c.now.Sub(s.CreatedAt))), phaseTeardown
	case crash != "":
		return ReasonCrashLoop, crash, phaseTeardown
	case s.Status != desired.StatusCreating && live == 0 && sessCtr == nil:
		// A stopped container is started again (see ensure): its files are
		// the user's work. A missing one has nothing left to keep.
		return ReasonContainerGone, fmt.Sprintf("container %s is missing", s.Spec.ContainerName), phaseTeardown
	case s.Status == desired.StatusRunning && live == 0 && EndsAtDisconnect(s):
		return ReasonDisconnected, fmt.Sprintf("last connection ended (mode %s, grace period %s)", s.Mode, human(s.GracePeriod)), phaseTeardown
	}
	return "", "", 0
}

// EndsAtDisconnect reports whether s is torn down as soon as its last
// connection ends: destroy-on-disconnect, or a grace period of zero.
func EndsAtDisconnect(s *desired.Session) bool {
	return s.Mode == desired.ModeDestroyOnDisconnect || (s.Mode == desired.ModeGracePeriod && s.GracePeriod <= 0)
}

// ensure creates what a live generation is missing: its network, service
// volumes and containers, then the session container; a creating
// generation is then marked running.
func (c *keyCtx) ensure(sessCtr *item, live int) {
	s := c.sess
	creating := s.Status == desired.StatusCreating
	r := ReasonServiceMissing
	if creating {
		r = ReasonSessionCreating
	}
	// A stopped session container (dockerd restart, reboot, OOM-killed
	// init) is started again rather than replaced, keeping the user's files,
	// unless it is backing off from a crash loop. One that Docker is
	// removing (an operator's docker rm -f) cannot be started: its destroy
	// event brings the key back, and then it is missing.
	restart := !creating && sessCtr != nil && !sessCtr.Running && sessCtr.State != observed.StateRemoving
	var rec *Restart
	if restart {
		var wait bool
		rec, wait = c.restartPolicy(sessCtr)
		restart = !wait
	}
	// Whatever is created or started joins the network, so it must exist first.
	needNet := creating || restart
	for _, svc := range s.Spec.Services {
		if ctr := c.findCurrent(observed.KindContainer, s.Spec.ServiceContainerName(svc.Name)); ctr == nil || !ctr.Running {
			needNet = true
		}
	}
	if needNet && c.findCurrent(observed.KindNetwork, s.Spec.NetworkName) == nil {
		c.add(Action{Kind: KindCreateNetwork, Target: s.Spec.NetworkName, SessionID: s.ID, Reason: r,
			Detail: "session network", Labels: spec.Labels(c.sess, c.instanceID, observed.RoleSession, "")}, phaseMaintain)
	}
	for _, svc := range s.Spec.Services {
		for _, v := range svc.Volumes {
			name := s.Spec.VolumeName(svc.Name, v.Name)
			if c.findCurrent(observed.KindVolume, name) == nil {
				c.add(Action{Kind: KindCreateVolume, Target: name, SessionID: s.ID, Reason: r,
					Detail: fmt.Sprintf("volume %s of service %s", v.Name, svc.Name), Labels: spec.Labels(c.sess, c.instanceID, observed.RoleService, svc.Name)}, phaseMaintain)
			}
		}
	}
	for _, svc := range s.Spec.Services {
		name := s.Spec.ServiceContainerName(svc.Name)
		if ctr := c.findCurrent(observed.KindContainer, name); ctr == nil || !ctr.Running {
			c.add(Action{Kind: KindCreateContainer, Target: name, SessionID: s.ID, Reason: r, Detail: "service " + svc.Name,
				Labels: spec.Labels(c.sess, c.instanceID, observed.RoleService, svc.Name), Container: spec.Service(c.sess, svc)}, phaseMaintain)
		}
	}
	switch {
	case creating && (sessCtr == nil || !sessCtr.Running):
		c.add(Action{Kind: KindCreateContainer, Target: s.Spec.ContainerName, SessionID: s.ID, Reason: r, Detail: "session container",
			Labels: spec.Labels(c.sess, c.instanceID, observed.RoleSession, ""), Container: spec.Session(c.sess)}, phaseMaintain)
	case restart:
		c.add(Action{Kind: KindCreateContainer, Target: s.Spec.ContainerName, SessionID: s.ID, Reason: ReasonContainerStopped,
			Detail: c.restartDetail(sessCtr, rec), Labels: spec.Labels(c.sess, c.instanceID, observed.RoleSession, ""), Container: spec.Session(c.sess), Restart: rec}, phaseMaintain)
	case sessCtr == nil && live > 0:
		c.skipped = append(c.skipped, Skip{Key: c.key, ObjectKind: observed.KindContainer, Target: s.Spec.ContainerName,
			Reason: ReasonContainerDownBusy, Detail: fmt.Sprintf("container is missing with %d live connection(s); the next connection replaces it", live)})
	}
	if creating {
		c.add(Action{Kind: KindMarkRunning, Target: "session " + c.key.String(), SessionID: s.ID, Reason: r, Detail: "all objects exist"}, phaseMaintain)
	}
}

// human renders a duration to the second for reasons ("2m10s").
func human(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	return d.Truncate(time.Second).String()
}
