package reconcile

import (
	"fmt"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/spec"
	"github.com/podspawn/podspawn/observed"
)

// session decides a key that has a session: tear it down, or keep it and
// bring its objects, leases, grace period and warnings up to date.
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
	c.leftovers()
	switch {
	case s.Status == desired.StatusGrace && live > 0:
		c.add(c.onSession(KindCancelGrace, ReasonReconnected, fmt.Sprintf("%d live connection(s)", live)), phaseMaintain)
	case s.Status == desired.StatusRunning && live == 0 && !persistent && running(sessCtr):
		// destroy-on-disconnect and a zero grace period are teardowns above.
		a := c.onSession(KindStartGrace, ReasonDisconnected, "")
		a.At = c.now.Add(s.GracePeriod)
		a.Detail = fmt.Sprintf("no live connections; grace period of %s ends at %s", human(s.GracePeriod), stamp(a.At))
		c.add(a, phaseMaintain)
		c.wakeAt(a.At)
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

// teardownReason decides whether the session goes, and why. The order
// gives one destroy per session, in the admin docs' phase order.
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

// heldByClockStep keeps a connected session past its max lifetime (or its
// grace period: a reconnect no pass has seen yet) while
// the wall clock just stepped forward; a pass after the hold confirms.
func (c *keyCtx) heldByClockStep(detail string) bool {
	until := c.opt.HoldLiveDeadlinesUntil
	if !c.now.Before(until) {
		return false
	}
	c.skip("session", c.sessionTarget(), ReasonClockStep,
		fmt.Sprintf("%s, but the wall clock just stepped forward; a pass at %s confirms", detail, stamp(until)))
	c.wakeAt(until)
	return true
}

// teardown marks the row, removes every generation's objects and the
// key's unowned leftovers (protected ones stay, listed as skipped), then
// deletes the row: the row goes only once Docker agreed.
func (c *keyCtx) teardown(reason Reason, detail string, phase int, sessCtr *item) {
	first, marked := len(c.actions), c.sess.Status == desired.StatusTerminating
	if !marked {
		c.add(c.onSession(KindMarkTerminating, reason, detail), phase)
	}
	for _, it := range c.removable {
		c.remove(it, reason, detail, phase)
		if reason == ReasonCrashLoop && it == sessCtr {
			c.actions[len(c.actions)-1].LogTail = CrashLoopLogLines
		}
	}
	c.add(c.onSession(KindDeleteSession, reason, detail), phase)
	// A missing key file is the one teardown that comes from absence.
	if reason == ReasonUserRemoved && !marked {
		c.markUnplanned(first)
	}
}

// releaseDead kills, for each dead lease, what its connection left running
// in the session container, then releases the lease: a key's chain stops
// at its first failure, so a lease goes only once its processes are gone.
// A stopped container's processes died with it; a protected one is left
// alone, as for every other action.
func (c *keyCtx) releaseDead(dead []desired.Lease, sessCtr *item) {
	kill := running(sessCtr) && sessCtr.untouchable == ""
	for _, l := range dead {
		if kill {
			c.add(Action{Kind: KindKillLeaseProcesses, Target: sessCtr.Name, TargetID: sessCtr.ID, SessionID: c.sess.ID, LeaseID: l.ID, Reason: ReasonLeaseDead,
				Detail: fmt.Sprintf("connection process %d is gone; killing what it left running in the container", l.PID)}, phaseMaintain)
		}
		a := c.onSession(KindReleaseLease, ReasonLeaseDead, fmt.Sprintf("connection process %d is gone", l.PID))
		a.LeaseID = l.ID
		c.add(a, phaseMaintain)
	}
}

// leftovers removes an earlier generation's objects, then unowned objects
// old enough to be orphans, then duplicates of the session network: dockerd
// 20.10 can create a second network of the same name when a create is
// retried while an abandoned one is in flight, and containers then fail
// with "network is ambiguous". The oldest network stays.
func (c *keyCtx) leftovers() {
	for _, it := range c.removable {
		if c.staleGeneration(it) {
			c.remove(it, ReasonStaleGeneration, "left by an earlier generation of this session", phaseOrphan)
		}
	}
	for _, it := range c.removable {
		if !c.current(it) && !c.staleGeneration(it) {
			c.orphan(it)
		}
	}
	for _, it := range c.removable {
		if it.Kind != observed.KindNetwork || !c.current(it) {
			continue
		}
		for _, o := range c.removable {
			if o != it && o.Kind == it.Kind && o.Name == it.Name && c.current(o) &&
				(o.Created.Before(it.Created) || (o.Created.Equal(it.Created) && o.ID < it.ID)) {
				c.remove(it, ReasonDuplicate, "a second network with the name of the session network", phaseMaintain)
				break
			}
		}
	}
}

// create plans an object of the session's generation.
func (c *keyCtx) create(a Action, role, service string) {
	a.SessionID = c.sess.ID
	a.Labels = spec.Labels(c.sess, c.instanceID, role, service)
	c.add(a, phaseMaintain)
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
	rec, restart := c.restartPolicy(sessCtr)
	// Whatever is created or started joins the network, so it must exist first.
	needNet := creating || restart
	for _, svc := range s.Spec.Services {
		svcCtr := c.findCurrent(observed.KindContainer, s.Spec.ServiceContainerName(svc.Name))
		needNet = needNet || (!running(svcCtr) && !restartedByRuntime(svcCtr))
	}
	if needNet && c.findCurrent(observed.KindNetwork, s.Spec.NetworkName) == nil {
		c.create(Action{Kind: KindCreateNetwork, Target: s.Spec.NetworkName, Reason: r, Detail: "session network"}, observed.RoleSession, "")
	}
	for _, svc := range s.Spec.Services {
		for _, v := range svc.Volumes {
			if name := s.Spec.VolumeName(svc.Name, v.Name); c.findCurrent(observed.KindVolume, name) == nil {
				c.create(Action{Kind: KindCreateVolume, Target: name, Reason: r, Detail: fmt.Sprintf("volume %s of service %s", v.Name, svc.Name)}, observed.RoleService, svc.Name)
			}
		}
	}
	for _, svc := range s.Spec.Services {
		if name := s.Spec.ServiceContainerName(svc.Name); !running(c.findCurrent(observed.KindContainer, name)) && !restartedByRuntime(c.findCurrent(observed.KindContainer, name)) {
			c.create(Action{Kind: KindCreateContainer, Target: name, Reason: r, Detail: "service " + svc.Name, Container: spec.Service(s, svc)}, observed.RoleService, svc.Name)
		}
	}
	switch {
	case creating && !running(sessCtr):
		c.create(Action{Kind: KindCreateContainer, Target: s.Spec.ContainerName, Reason: r, Detail: "session container", Container: spec.Session(s)}, observed.RoleSession, "")
	case restart:
		c.create(Action{Kind: KindCreateContainer, Target: s.Spec.ContainerName, Reason: ReasonContainerStopped, Detail: c.restartDetail(sessCtr, rec),
			Container: spec.Session(s), Restart: rec}, observed.RoleSession, "")
	case sessCtr == nil && live > 0:
		c.skip(observed.KindContainer, s.Spec.ContainerName, ReasonContainerDownBusy,
			fmt.Sprintf("container is missing with %d live connection(s); the next connection replaces it", live))
	}
	if creating {
		c.add(c.onSession(KindMarkRunning, r, "all objects exist"), phaseMaintain)
	}
}
