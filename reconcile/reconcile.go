package reconcile

import (
	"fmt"
	"sort"
	"time"

	"github.com/podspawn/podspawn/desired"
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
)

type chain struct {
	key     desired.SessionKey
	phase   int
	actions []Action
}

// Compute returns the plan that moves observed towards desired at now.
// It never mutates its inputs and returns the same plan for the same inputs.
func Compute(d desired.State, o observed.State, now time.Time, opt Options) Plan {
	plan := Plan{Now: now, WakeByKey: map[desired.SessionKey]time.Time{}}
	byKey := o.ByKey()

	keySet := map[desired.SessionKey]bool{}
	for k := range d.Sessions {
		keySet[k] = true
	}
	for k := range byKey {
		keySet[k] = true
	}
	keys := make([]desired.SessionKey, 0, len(keySet))
	for k := range keySet {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].Less(keys[j]) })

	var chains []chain
	for _, k := range keys {
		c := &keyCtx{key: k, d: d, sess: d.Sessions[k], alive: o.Alive, now: now, opt: opt, plan: &plan}
		c.objects = c.partition(byKey[k])
		if c.sess == nil {
			c.orphans(c.objects, ReasonOrphan)
		} else {
			c.session()
		}
		if len(c.actions) > 0 {
			chains = append(chains, chain{key: k, phase: c.phase, actions: c.actions})
		} else if c.sess != nil {
			plan.Unchanged++
		}
		if !c.wake.IsZero() {
			plan.WakeByKey[k] = c.wake
			if plan.Wake.IsZero() || c.wake.Before(plan.Wake) {
				plan.Wake = c.wake
			}
		}
	}
	sort.SliceStable(chains, func(i, j int) bool {
		if chains[i].phase != chains[j].phase {
			return chains[i].phase < chains[j].phase
		}
		return chains[i].key.Less(chains[j].key)
	})
	for _, c := range chains {
		plan.Actions = append(plan.Actions, c.actions...)
	}
	return plan
}

type keyCtx struct {
	key     desired.SessionKey
	d       desired.State
	sess    *desired.Session
	objects []observed.Object
	alive   map[observed.ProcessRef]bool
	now     time.Time
	opt     Options
	plan    *Plan

	actions []Action
	phase   int
	wake    time.Time
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

func (c *keyCtx) skip(obj observed.Object, r Reason, detail string) {
	c.plan.Skipped = append(c.plan.Skipped, Skip{Key: c.key, ObjectKind: obj.Kind, Target: obj.Name, Reason: r, Detail: detail})
}

// partition drops (and reports) objects podspawn must not touch: those of
// another state database, and those an operator protected.
func (c *keyCtx) partition(objs []observed.Object) []observed.Object {
	var mine []observed.Object
	for _, obj := range objs {
		switch {
		case obj.Instance() != "" && obj.Instance() != c.d.InstanceID:
			c.skip(obj, ReasonForeignInstance, fmt.Sprintf("created by another podspawn state database (instance %s)", obj.Instance()))
		case obj.Labels[observed.LabelKeep] == "true":
			c.skip(obj, ReasonProtected, "labelled "+observed.LabelKeep+"=true")
		default:
			mine = append(mine, obj)
		}
	}
	return sortForRemoval(mine)
}

// sortForRemoval orders objects in teardown order: session containers,
// service containers, networks (Docker refuses to remove a network with
// endpoints), then volumes (refused while a container uses them).
func sortForRemoval(objs []observed.Object) []observed.Object {
	out := append([]observed.Object(nil), objs...)
	rank := func(o observed.Object) int {
		switch o.Kind {
		case observed.KindContainer:
			if o.Role() == observed.RoleService {
				return 1
			}
			return 0
		case observed.KindNetwork:
			return 2
		}
		return 3
	}
	sort.SliceStable(out, func(i, j int) bool {
		ri, rj := rank(out[i]), rank(out[j])
		if ri != rj {
			return ri < rj
		}
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].ID < out[j].ID
	})
	return out
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

func (c *keyCtx) remove(obj observed.Object, r Reason, detail string, phase int) {
	c.add(Action{Kind: removeKind(obj.Kind), Target: obj.Name, TargetID: obj.ID, SessionID: obj.SessionID(), Reason: r, Detail: detail}, phase)
}

// orphans removes objects with no session row once they are old enough.
func (c *keyCtx) orphans(objs []observed.Object, r Reason) {
	for _, obj := range objs {
		ripe := obj.Created.Add(c.opt.OrphanMinAge)
		if !expired(ripe, c.now) {
			c.skip(obj, ReasonOrphanTooYoung, fmt.Sprintf("no session record; removable in %s", human(ripe.Sub(c.now))))
			c.wakeAt(ripe)
			continue
		}
		detail := "no session record"
		if c.key == desired.Unattributed {
			detail = "no session record and no podspawn.user label"
		}
		c.remove(obj, r, detail, phaseOrphan)
	}
}

func (c *keyCtx) session() {
	s := c.sess
	var current, staleGen, unowned []observed.Object
	for _, obj := range c.objects {
		switch {
		case obj.SessionID() == s.ID:
			current = append(current, obj)
		case obj.SessionID() != "" && obj.Instance() == c.d.InstanceID:
			staleGen = append(staleGen, obj)
		default:
			unowned = append(unowned, obj)
		}
	}

	var dead []desired.Lease
	for _, l := range s.Leases {
		if alive, checked := c.alive[observed.ProcessRef{PID: l.PID, Start: l.PIDStart}]; checked && !alive {
			dead = append(dead, l)
		}
	}
	live := len(s.Leases) - len(dead)

	sessCtr := find(current, observed.KindContainer, s.Spec.ContainerName)
	persistent := s.Mode == desired.ModePersistent

	reason, detail, phase := c.teardownReason(live, sessCtr, persistent)
	if reason != "" {
		if s.Status != desired.StatusTerminating {
			c.add(Action{Kind: KindMarkTerminating, Target: "session " + c.key.String(), SessionID: s.ID, Reason: reason, Detail: detail}, phase)
		}
		for _, obj := range sortForRemoval(append(append(append([]observed.Object(nil), current...), staleGen...), unowned...)) {
			c.remove(obj, reason, detail, phase)
		}
		c.add(Action{Kind: KindDeleteSession, Target: "session " + c.key.String(), SessionID: s.ID, Reason: reason, Detail: detail}, phase)
		return
	}

	for _, l := range dead {
		c.add(Action{Kind: KindReleaseLease, Target: "session " + c.key.String(), SessionID: s.ID, LeaseID: l.ID, Reason: ReasonLeaseDead,
			Detail: fmt.Sprintf("connection process %d is gone", l.PID)}, phaseMaintain)
	}
	for _, obj := range staleGen {
		c.remove(obj, ReasonStaleGeneration, "left by an earlier generation of this session", phaseOrphan)
	}
	c.orphans(unowned, ReasonOrphan)

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

	c.ensure(current, sessCtr, live)

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
// gives one destroy per session with the admin docs' phase order.
func (c *keyCtx) teardownReason(live int, sessCtr *observed.Object, persistent bool) (Reason, string, int) {
	s := c.sess
	switch {
	case s.Status == desired.StatusTerminating:
		r := Reason(s.TerminateReason)
		if r == "" {
			r = ReasonUserRequested
		}
		return r, "marked for removal", phaseTeardown
	case !c.d.Users[c.key.User]:
		return ReasonUserRemoved, fmt.Sprintf("user %s has no key file", c.key.User), phaseTeardown
	case !persistent && s.Status == desired.StatusGrace && !s.GraceExpiry.IsZero() && expired(s.GraceExpiry, c.now):
		return ReasonGraceExpired, fmt.Sprintf("grace period ended %s ago", human(c.now.Sub(s.GraceExpiry))), phaseGrace
	case !persistent && expired(s.MaxLifetimeAt, c.now):
		return ReasonLifetimeExceeded, fmt.Sprintf("max lifetime reached %s ago, with %d live connection(s)", human(c.now.Sub(s.MaxLifetimeAt)), live), phaseLifetime
	case s.Status == desired.StatusCreating && live == 0 && expired(s.CreatedAt.Add(c.opt.PendingTimeout), c.now):
		return ReasonCreationAbandoned, fmt.Sprintf("still creating after %s with no live connection", human(c.now.Sub(s.CreatedAt))), phaseTeardown
	case s.Status != desired.StatusCreating && live == 0 && (sessCtr == nil || !sessCtr.Running):
		if sessCtr == nil {
			return ReasonContainerGone, fmt.Sprintf("container %s is missing", s.Spec.ContainerName), phaseTeardown
		}
		return ReasonContainerGone, fmt.Sprintf("container %s is %s", s.Spec.ContainerName, sessCtr.State), phaseTeardown
	case s.Status == desired.StatusRunning && live == 0 && (s.Mode == desired.ModeDestroyOnDisconnect || (s.Mode == desired.ModeGracePeriod && s.GracePeriod <= 0)):
		return ReasonDisconnected, fmt.Sprintf("last connection ended (mode %s, grace period %s)", s.Mode, human(s.GracePeriod)), phaseTeardown
	}
	return "", "", 0
}

// ensure creates what a live generation is missing: its network, service
// volumes and containers, then the session container; a creating
// generation is then marked running.
func (c *keyCtx) ensure(current []observed.Object, sessCtr *observed.Object, live int) {
	s := c.sess
	creating := s.Status == desired.StatusCreating
	r := ReasonServiceMissing
	if creating {
		r = ReasonSessionCreating
	}
	if creating && find(current, observed.KindNetwork, s.Spec.NetworkName) == nil {
		c.add(Action{Kind: KindCreateNetwork, Target: s.Spec.NetworkName, SessionID: s.ID, Reason: r,
			Detail: "session network", Labels: c.labels(observed.RoleSession, "")}, phaseMaintain)
	}
	for _, svc := range s.Spec.Services {
		for _, v := range svc.Volumes {
			name := s.Spec.VolumeName(svc.Name, v.Name)
			if find(current, observed.KindVolume, name) == nil {
				c.add(Action{Kind: KindCreateVolume, Target: name, SessionID: s.ID, Reason: r,
					Detail: fmt.Sprintf("volume %s of service %s", v.Name, svc.Name), Labels: c.labels(observed.RoleService, svc.Name)}, phaseMaintain)
			}
		}
	}
	for _, svc := range s.Spec.Services {
		name := s.Spec.ServiceContainerName(svc.Name)
		if ctr := find(current, observed.KindContainer, name); ctr == nil || !ctr.Running {
			c.add(Action{Kind: KindCreateContainer, Target: name, SessionID: s.ID, Reason: r, Detail: "service " + svc.Name,
				Labels: c.labels(observed.RoleService, svc.Name), Container: c.serviceSpec(svc)}, phaseMaintain)
		}
	}
	if sessCtr == nil || !sessCtr.Running {
		if creating {
			c.add(Action{Kind: KindCreateContainer, Target: s.Spec.ContainerName, SessionID: s.ID, Reason: r, Detail: "session container",
				Labels: c.labels(observed.RoleSession, ""), Container: c.sessionSpec()}, phaseMaintain)
		} else if live > 0 {
			state := "missing"
			if sessCtr != nil {
				state = sessCtr.State
			}
			c.plan.Skipped = append(c.plan.Skipped, Skip{Key: c.key, ObjectKind: observed.KindContainer, Target: s.Spec.ContainerName,
				Reason: ReasonContainerDownBusy, Detail: fmt.Sprintf("container is %s with %d live connection(s); the next connection replaces it", state, live)})
		}
	}
	if creating {
		c.add(Action{Kind: KindMarkRunning, Target: "session " + c.key.String(), SessionID: s.ID, Reason: r, Detail: "all objects exist"}, phaseMaintain)
	}
}

func (c *keyCtx) labels(role, service string) map[string]string {
	l := map[string]string{
		observed.LabelManagedBy: observed.ManagedByValue,
		observed.LabelUser:      c.key.User,
		observed.LabelProject:   c.key.Project,
		observed.LabelSession:   c.sess.ID,
		observed.LabelInstance:  c.d.InstanceID,
		observed.LabelRole:      role,
	}
	if service != "" {
		l[observed.LabelService] = service
	}
	for k, v := range c.sess.Spec.ExtraLabels {
		if _, reserved := l[k]; !reserved {
			l[k] = v
		}
	}
	return l
}

func (c *keyCtx) sessionSpec() *ContainerSpec {
	sp := c.sess.Spec
	return &ContainerSpec{
		Role: observed.RoleSession, Image: sp.Image, Cmd: []string{"sleep", "infinity"},
		Env: append([]string(nil), sp.Env...), Hostname: sp.Hostname, Network: sp.NetworkName, Aliases: []string{sp.ContainerName},
		CPUs: sp.CPUs, MemoryBytes: sp.MemoryBytes, Security: sp.Security, Mounts: append([]desired.Mount(nil), sp.Mounts...),
		User: c.key.User, Shell: sp.Shell,
	}
}

func (c *keyCtx) serviceSpec(svc desired.Service) *ContainerSpec {
	sp := c.sess.Spec
	mem := svc.MemoryBytes
	if mem == 0 {
		mem = sp.MemoryBytes
	}
	vols := make([]desired.VolumeMount, 0, len(svc.Volumes))
	for _, v := range svc.Volumes {
		vols = append(vols, desired.VolumeMount{Name: sp.VolumeName(svc.Name, v.Name), Target: v.Target})
	}
	return &ContainerSpec{
		Role: observed.RoleService, Image: svc.Image, Cmd: append([]string(nil), svc.Command...), Env: append([]string(nil), svc.Env...),
		Hostname: svc.Name, Network: sp.NetworkName, Aliases: []string{svc.Name}, CPUs: svc.CPUs, MemoryBytes: mem,
		Security: sp.Security, Volumes: vols,
	}
}

func find(objs []observed.Object, k observed.Kind, name string) *observed.Object {
	for i := range objs {
		if objs[i].Kind == k && objs[i].Name == name {
			return &objs[i]
		}
	}
	return nil
}

// human renders a duration to the second for reasons ("2m10s").
func human(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	return d.Truncate(time.Second).String()
}
