package reconcile

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
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
	phaseCount
)

// Compute returns the plan that moves observed towards desired at now.
// It never mutates its inputs and returns the same plan for the same inputs,
// whatever the order of the object list and of map iteration.
//
// Compute sees every session on every pass and is bound by memory
// latency and by the garbage collector, so each object's labels are read
// once into a compact item, keys are grouped by a counting sort, and one
// keyCtx with reused buffers serves all keys: the allocations per key are
// the plan's own (see BenchmarkCompute).
func Compute(d desired.State, o observed.State, now time.Time, opt Options) Plan {
	plan := Plan{Now: now, WakeByKey: make(map[desired.SessionKey]time.Time, len(d.Sessions))}
	items, perm, groups := groupByKey(d, o)

	// Keys arrive sorted, so appending each key's chain to its phase's
	// bucket orders the plan by (phase, key) without a sort.
	var byPhase [phaseCount][]Action
	c := &keyCtx{d: d, alive: o.Alive, now: now, opt: opt, plan: &plan}
	for i := range groups {
		c.reset(&groups[i], items, perm)
		if c.sess == nil {
			c.orphans(c.removable, ReasonOrphan)
		} else {
			c.session()
		}
		if len(c.actions) > 0 {
			byPhase[c.phase] = append(byPhase[c.phase], c.actions...)
		} else if c.sess != nil {
			plan.Unchanged++
		}
		if !c.wake.IsZero() {
			plan.WakeByKey[c.key] = c.wake
			if plan.Wake.IsZero() || c.wake.Before(plan.Wake) {
				plan.Wake = c.wake
			}
		}
	}
	n := 0
	for _, as := range byPhase {
		n += len(as)
	}
	if n > 0 {
		plan.Actions = make([]Action, 0, n)
		for _, as := range byPhase {
			plan.Actions = append(plan.Actions, as...)
		}
	}
	return plan
}

// item is an observed object (the caller's, never modified) with the
// labels Compute consults, read once.
type item struct {
	*observed.Object
	session string // generation label
	ours    bool   // the instance label is this database's
	rank    int8   // teardown order, see sortForRemoval
	class   int8
}

// Classes of items: what podspawn may do with the object.
const (
	classRemovable int8 = iota
	classProtected      // present, never removed
	classUnmanaged      // not podspawn's: invisible
	classForeign        // another state database's: invisible
)

// newItem reads the labels in one pass over the map (cheaper than a
// lookup per label) and returns the item and the key its labels name.
func newItem(o *observed.Object, instanceID string) (item, desired.SessionKey) {
	it := item{Object: o}
	var user, project, role, instance string
	var managed, keep bool
	for k, v := range o.Labels {
		switch k {
		case observed.LabelUser:
			user = v
		case observed.LabelProject:
			project = v
		case observed.LabelSession:
			it.session = v
		case observed.LabelInstance:
			instance = v
		case observed.LabelRole:
			role = v
		case observed.LabelManagedBy:
			managed = v == observed.ManagedByValue
		case observed.LabelKeep:
			keep = v == "true"
		}
	}
	it.ours = instance == instanceID
	switch o.Kind {
	case observed.KindContainer:
		if role == observed.RoleService {
			it.rank = 1
		}
	case observed.KindNetwork:
		it.rank = 2
	default:
		it.rank = 3
	}
	switch {
	case !managed:
		it.class = classUnmanaged
	case instance != "" && instance != instanceID:
		it.class = classForeign
	case keep:
		it.class = classProtected
	}
	return it, labelKey(user, project)
}

// keyGroup is one key's session (nil if none) and objects: the items
// numbered perm[lo:hi].
type keyGroup struct {
	key desired.SessionKey
	// prefix packs the user's first 8 bytes so that most key comparisons
	// in the sort touch no string memory.
	prefix uint64
	sess   *desired.Session
	lo, hi int32
}

func namePrefix(s string) uint64 {
	var p uint64
	for i := range 8 {
		p <<= 8
		if i < len(s) {
			p |= uint64(s[i])
		}
	}
	return p
}

// groupByKey pairs sessions with the objects their labels name, in key
// order: it returns one item per object, in the caller's order, and the
// groups, whose items are numbered by perm (a counting sort by key).
// Compute's cost is mostly memory, and the garbage collector's share grows
// with every byte allocated here, so nothing is copied twice.
func groupByKey(d desired.State, o observed.State) (items []item, perm []int32, groups []keyGroup) {
	index := make(map[desired.SessionKey]int32, len(d.Sessions))
	// Room for some keys that only objects name, so that orphans do not
	// force a copy of the whole slice.
	groups = make([]keyGroup, 0, len(d.Sessions)+len(o.Objects)/16+16)
	for k, s := range d.Sessions {
		index[k] = int32(len(groups))
		groups = append(groups, keyGroup{key: k, prefix: namePrefix(k.User), sess: s})
	}
	of := make([]int32, len(o.Objects))
	items = make([]item, len(o.Objects))
	for i := range o.Objects {
		var k desired.SessionKey
		items[i], k = newItem(&o.Objects[i], d.InstanceID)
		g, ok := index[k]
		if !ok {
			g = int32(len(groups))
			index[k] = g
			groups = append(groups, keyGroup{key: k, prefix: namePrefix(k.User)})
		}
		of[i] = g
	}
	start := make([]int32, len(groups)+1)
	for _, g := range of {
		start[g+1]++
	}
	for g := range groups {
		start[g+1] += start[g]
	}
	for g := range groups {
		groups[g].lo, groups[g].hi = start[g], start[g]
	}
	perm = make([]int32, len(items))
	for i, g := range of {
		perm[groups[g].hi] = int32(i)
		groups[g].hi++
	}
	slices.SortFunc(groups, func(a, b keyGroup) int {
		if a.prefix != b.prefix {
			return cmp.Compare(a.prefix, b.prefix)
		}
		if c := strings.Compare(a.key.User, b.key.User); c != 0 {
			return c
		}
		return strings.Compare(a.key.Project, b.key.Project)
	})
	return items, perm, groups
}

// labelKey is observed.Object.Key from the user and project labels,
// without its regexps, which dominated Compute at 100k sessions.
// TestObjectKeyMatchesObserved holds the two equal.
func labelKey(user, project string) desired.SessionKey {
	if !validName(user, 32) || (project != "" && !validName(project, 64)) {
		return desired.Unattributed
	}
	return desired.SessionKey{User: user, Project: project}
}

// validName matches ^[a-z][a-z0-9_-]{0,max-1}$.
func validName(s string, maxLen int) bool {
	if len(s) == 0 || len(s) > maxLen || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		if b := s[i]; (b < 'a' || b > 'z') && (b < '0' || b > '9') && b != '_' && b != '-' {
			return false
		}
	}
	return true
}

type keyCtx struct {
	key  desired.SessionKey
	d    desired.State
	sess *desired.Session
	// removable are the key's objects podspawn may remove, in teardown
	// order; present adds the protected ones, which exist for every
	// decision but are never removed.
	removable []item
	present   []item
	alive     map[observed.ProcessRef]bool
	now       time.Time
	opt       Options
	plan      *Plan

	actions []Action
	phase   int
	wake    time.Time

	// Buffers reused across keys.
	objects []item
	kept    []item
	dead    []desired.Lease
}

func (c *keyCtx) reset(g *keyGroup, items []item, perm []int32) {
	c.key, c.sess = g.key, g.sess
	c.actions, c.phase, c.wake = c.actions[:0], 0, time.Time{}
	c.objects = c.objects[:0]
	for _, i := range perm[g.lo:g.hi] {
		c.objects = append(c.objects, items[i])
	}
	c.removable, c.present = c.partition(c.objects)
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
	c.plan.Skipped = append(c.plan.Skipped, Skip{Key: c.key, ObjectKind: it.Kind, Target: it.Name, Reason: r, Detail: detail})
}

// partition sorts a key's items into teardown order and reports the ones
// podspawn must not touch: objects not managed by podspawn, those of
// another state database, and those an operator protected. It returns the
// items podspawn may remove and, as a longer view of the same array, those
// plus the protected ones. Sorting first makes the skips independent of
// Docker's listing order.
func (c *keyCtx) partition(items []item) (removable, present []item) {
	sortForRemoval(items)
	kept := c.kept[:0]
	n := 0
	for i := range items {
		it := items[i]
		switch it.class {
		case classUnmanaged:
			c.skip(&it, ReasonUnmanaged, "not labelled "+observed.LabelManagedBy+"="+observed.ManagedByValue)
		case classForeign:
			c.skip(&it, ReasonForeignInstance, fmt.Sprintf("created by another podspawn state database (instance %s)", it.Instance()))
		case classProtected:
			c.skip(&it, ReasonProtected, "labelled "+observed.LabelKeep+"=true")
			kept = append(kept, it)
		default:
			items[n] = it // n never passes i
			n++
		}
	}
	m := n + copy(items[n:], kept)
	c.kept = kept[:0]
	return items[:n], items[:m]
}

// sortForRemoval orders items in place in teardown order: session
// containers, service containers, networks (Docker refuses to remove a
// network with endpoints), then volumes (refused while a container uses them).
func sortForRemoval(items []item) {
	if len(items) < 2 {
		return
	}
	slices.SortStableFunc(items, func(a, b item) int {
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
	c.add(Action{Kind: removeKind(it.Kind), Target: it.Name, TargetID: it.ID, SessionID: it.session, Reason: r, Detail: detail}, phase)
}

// orphans removes objects with no session row once they are old enough.
func (c *keyCtx) orphans(items []item, r Reason) {
	for i := range items {
		c.orphan(&items[i], r)
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
		if it := &c.present[i]; it.Kind == k && it.Name == name && c.current(it) {
			return it
		}
	}
	return nil
}

func (c *keyCtx) session() {
	s := c.sess
	dead := c.dead[:0]
	for _, l := range s.Leases {
		if alive, checked := c.alive[observed.ProcessRef{PID: l.PID, Start: l.PIDStart}]; checked && !alive {
			dead = append(dead, l)
		}
	}
	c.dead = dead[:0]
	live := len(s.Leases) - len(dead)

	sessCtr := c.findCurrent(observed.KindContainer, s.Spec.ContainerName)
	persistent := s.Mode == desired.ModePersistent

	reason, detail, phase := c.teardownReason(live, sessCtr, persistent)
	if reason != "" {
		if s.Status != desired.StatusTerminating {
			c.add(Action{Kind: KindMarkTerminating, Target: "session " + c.key.String(), SessionID: s.ID, Reason: reason, Detail: detail}, phase)
		}
		// Every generation's objects and unowned leftovers of the key go;
		// protected ones stay (the plan lists them as skipped).
		for i := range c.removable {
			c.remove(&c.removable[i], reason, detail, phase)
		}
		c.add(Action{Kind: KindDeleteSession, Target: "session " + c.key.String(), SessionID: s.ID, Reason: reason, Detail: detail}, phase)
		return
	}

	for _, l := range dead {
		c.add(Action{Kind: KindReleaseLease, Target: "session " + c.key.String(), SessionID: s.ID, LeaseID: l.ID, Reason: ReasonLeaseDead,
			Detail: fmt.Sprintf("connection process %d is gone", l.PID)}, phaseMaintain)
	}
	for i := range c.removable {
		if c.staleGeneration(&c.removable[i]) {
			c.remove(&c.removable[i], ReasonStaleGeneration, "left by an earlier generation of this session", phaseOrphan)
		}
	}
	for i := range c.removable {
		if it := &c.removable[i]; !c.current(it) && !c.staleGeneration(it) {
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

// duplicates removes all but the oldest of same-named objects of the
// current generation: dockerd 20.10 can create a second network of the
// same name when a create is retried while an abandoned one is still in
// flight, and containers then fail with "network is ambiguous".
func (c *keyCtx) duplicates() {
	for i := range c.removable {
		it := &c.removable[i]
		if it.Kind != observed.KindNetwork || !c.current(it) {
			continue
		}
		for j := range c.removable {
			o := &c.removable[j]
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
	case s.Status != desired.StatusCreating && live == 0 && sessCtr == nil:
		// A stopped container is started again (see ensure): its files are
		// the user's work. A missing one has nothing left to keep.
		return ReasonContainerGone, fmt.Sprintf("container %s is missing", s.Spec.ContainerName), phaseTeardown
	case s.Status == desired.StatusRunning && live == 0 && (s.Mode == desired.ModeDestroyOnDisconnect || (s.Mode == desired.ModeGracePeriod && s.GracePeriod <= 0)):
		return ReasonDisconnected, fmt.Sprintf("last connection ended (mode %s, grace period %s)", s.Mode, human(s.GracePeriod)), phaseTeardown
	}
	return "", "", 0
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
	// init) is started again rather than replaced, keeping the user's files.
	restart := !creating && sessCtr != nil && !sessCtr.Running
	// Whatever is created or started joins the network, so it must exist first.
	needNet := creating || restart
	for _, svc := range s.Spec.Services {
		if ctr := c.findCurrent(observed.KindContainer, s.Spec.ServiceContainerName(svc.Name)); ctr == nil || !ctr.Running {
			needNet = true
		}
	}
	if needNet && c.findCurrent(observed.KindNetwork, s.Spec.NetworkName) == nil {
		c.add(Action{Kind: KindCreateNetwork, Target: s.Spec.NetworkName, SessionID: s.ID, Reason: r,
			Detail: "session network", Labels: c.labels(observed.RoleSession, "")}, phaseMaintain)
	}
	for _, svc := range s.Spec.Services {
		for _, v := range svc.Volumes {
			name := s.Spec.VolumeName(svc.Name, v.Name)
			if c.findCurrent(observed.KindVolume, name) == nil {
				c.add(Action{Kind: KindCreateVolume, Target: name, SessionID: s.ID, Reason: r,
					Detail: fmt.Sprintf("volume %s of service %s", v.Name, svc.Name), Labels: c.labels(observed.RoleService, svc.Name)}, phaseMaintain)
			}
		}
	}
	for _, svc := range s.Spec.Services {
		name := s.Spec.ServiceContainerName(svc.Name)
		if ctr := c.findCurrent(observed.KindContainer, name); ctr == nil || !ctr.Running {
			c.add(Action{Kind: KindCreateContainer, Target: name, SessionID: s.ID, Reason: r, Detail: "service " + svc.Name,
				Labels: c.labels(observed.RoleService, svc.Name), Container: c.serviceSpec(svc)}, phaseMaintain)
		}
	}
	switch {
	case creating && (sessCtr == nil || !sessCtr.Running):
		c.add(Action{Kind: KindCreateContainer, Target: s.Spec.ContainerName, SessionID: s.ID, Reason: r, Detail: "session container",
			Labels: c.labels(observed.RoleSession, ""), Container: c.sessionSpec()}, phaseMaintain)
	case restart:
		c.add(Action{Kind: KindCreateContainer, Target: s.Spec.ContainerName, SessionID: s.ID, Reason: ReasonContainerStopped,
			Detail: fmt.Sprintf("container is %s; starting it again", sessCtr.State), Labels: c.labels(observed.RoleSession, ""), Container: c.sessionSpec()}, phaseMaintain)
	case sessCtr == nil && live > 0:
		c.plan.Skipped = append(c.plan.Skipped, Skip{Key: c.key, ObjectKind: observed.KindContainer, Target: s.Spec.ContainerName,
			Reason: ReasonContainerDownBusy, Detail: fmt.Sprintf("container is missing with %d live connection(s); the next connection replaces it", live)})
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
		CPUs: sp.CPUs, MemoryBytes: sp.MemoryBytes, Security: cloneSecurity(sp.Security), Mounts: append([]desired.Mount(nil), sp.Mounts...),
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
		Security: cloneSecurity(sp.Security), Volumes: vols,
	}
}

// cloneSecurity copies the slices and map so that a plan shares nothing
// with the desired state it was computed from.
func cloneSecurity(s desired.Security) desired.Security {
	s.CapDrop, s.CapAdd, s.Tmpfs = slices.Clone(s.CapDrop), slices.Clone(s.CapAdd), maps.Clone(s.Tmpfs)
	return s
}

// human renders a duration to the second for reasons ("2m10s").
func human(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	return d.Truncate(time.Second).String()
}
