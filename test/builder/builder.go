// Package builder makes desired and observed fixtures for tests, in the
// style of Cluster API's test builders and Nomad's mock package: every
// builder starts from a valid, fully labelled default, and a test states
// only what is special about its case:
//
//	s := builder.Session("alice", "web").Grace(now.Add(-time.Second)).Build()
//	c := builder.Container("alice", "web").Stopped().Build()
//
// Defaults line up across builders: an object built for (user, project)
// carries the label of the session generation that Session(user, project)
// builds, and the instance id Instance, so a session plus ObjectsFor(session)
// is a healthy world. Build always returns fresh copies, so one builder can
// produce several independent values.
package builder

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/observed"
)

// Instance is the state-database id of the default desired state and of
// every object built here unless overridden.
const Instance = "inst-test"

// Epoch is a fixed instant that fixtures are placed around, so expected
// plans can be written with literal times.
var Epoch = time.Date(2030, time.January, 2, 3, 4, 5, 0, time.UTC)

// Default session values.
const (
	DefaultImage       = "podspawn-test:busybox"
	DefaultShell       = "/bin/sh"
	DefaultGracePeriod = time.Minute
	DefaultMaxLifetime = 8 * time.Hour
	// DefaultAge is how long before Epoch default sessions and objects were created.
	DefaultAge = time.Hour
)

// SessionID is the generation id a default session of (user, project) gets.
func SessionID(user, project string) string {
	if project == "" {
		return "sess-" + user
	}
	return "sess-" + user + "-" + project
}

// SessionBuilder builds a *desired.Session.
type SessionBuilder struct{ s desired.Session }

// Session starts a running grace-period session created DefaultAge before
// Epoch, with the default image and shell and no leases.
func Session(user, project string) *SessionBuilder {
	k := desired.SessionKey{User: user, Project: project}
	created := Epoch.Add(-DefaultAge)
	return &SessionBuilder{s: desired.Session{
		Key:           k,
		ID:            SessionID(user, project),
		Mode:          desired.ModeGracePeriod,
		Status:        desired.StatusRunning,
		CreatedAt:     created,
		MaxLifetimeAt: created.Add(DefaultMaxLifetime),
		GracePeriod:   DefaultGracePeriod,
		Spec: desired.Spec{
			Image:         DefaultImage,
			Shell:         DefaultShell,
			ContainerName: desired.ContainerName(k),
			NetworkName:   desired.NetworkName(k),
		},
	}}
}

// ID sets the generation id.
func (b *SessionBuilder) ID(id string) *SessionBuilder { b.s.ID = id; return b }

// Mode sets the teardown mode.
func (b *SessionBuilder) Mode(m desired.Mode) *SessionBuilder { b.s.Mode = m; return b }

// Status sets the status without touching any deadline.
func (b *SessionBuilder) Status(st desired.Status) *SessionBuilder { b.s.Status = st; return b }

// Creating puts the session in status creating.
func (b *SessionBuilder) Creating() *SessionBuilder { b.s.Status = desired.StatusCreating; return b }

// Grace puts the session in its grace period, ending at expiry.
func (b *SessionBuilder) Grace(expiry time.Time) *SessionBuilder {
	b.s.Status = desired.StatusGrace
	b.s.GraceExpiry = expiry
	return b
}

// Terminating marks the session terminating with reason ("" = none recorded).
func (b *SessionBuilder) Terminating(reason string) *SessionBuilder {
	b.s.Status = desired.StatusTerminating
	b.s.TerminateReason = reason
	return b
}

// CreatedAt sets the creation time.
func (b *SessionBuilder) CreatedAt(t time.Time) *SessionBuilder { b.s.CreatedAt = t; return b }

// MaxLifetimeAt sets the max lifetime deadline.
func (b *SessionBuilder) MaxLifetimeAt(t time.Time) *SessionBuilder { b.s.MaxLifetimeAt = t; return b }

// GracePeriod sets the grace period fixed at creation.
func (b *SessionBuilder) GracePeriod(d time.Duration) *SessionBuilder { b.s.GracePeriod = d; return b }

// GraceExpiry sets the grace expiry without changing the status.
func (b *SessionBuilder) GraceExpiry(t time.Time) *SessionBuilder { b.s.GraceExpiry = t; return b }

// Image sets the session image.
func (b *SessionBuilder) Image(img string) *SessionBuilder { b.s.Spec.Image = img; return b }

// Service adds a companion service with the given named volumes (name, target).
func (b *SessionBuilder) Service(name, image string, volumes ...desired.VolumeMount) *SessionBuilder {
	b.s.Spec.Services = append(b.s.Spec.Services, desired.Service{Name: name, Image: image, Volumes: volumes})
	return b
}

// ExtraLabels sets labels added to every created object.
func (b *SessionBuilder) ExtraLabels(l map[string]string) *SessionBuilder {
	b.s.Spec.ExtraLabels = maps.Clone(l)
	return b
}

// Spec lets a test edit the spec directly.
func (b *SessionBuilder) Spec(edit func(*desired.Spec)) *SessionBuilder { edit(&b.s.Spec); return b }

// Restarts sets the crash-loop record: count restarts, the last at last,
// the next not allowed before next (zero times stay unset).
func (b *SessionBuilder) Restarts(count int, last, next time.Time) *SessionBuilder {
	b.s.RestartCount, b.s.LastRestartAt, b.s.NextRestartAt = count, last, next
	return b
}

// Warned sets the shortest lead time already warned at.
func (b *SessionBuilder) Warned(d time.Duration) *SessionBuilder { b.s.WarnedBefore = d; return b }

// Leases sets the live-connection leases; a lease without a session id
// gets this session's id at Build.
func (b *SessionBuilder) Leases(ls ...desired.Lease) *SessionBuilder {
	b.s.Leases = slices.Clone(ls)
	return b
}

// Build returns a new session.
func (b *SessionBuilder) Build() *desired.Session {
	s := CloneSession(&b.s)
	for i := range s.Leases {
		if s.Leases[i].SessionID == "" {
			s.Leases[i].SessionID = s.ID
		}
	}
	return s
}

// Lease returns lease id served by process pid. The process start time is
// derived from the pid, so Ref(Lease(id, pid)) is stable.
func Lease(id int64, pid int) desired.Lease {
	return desired.Lease{ID: id, PID: pid, PIDStart: PIDStart(pid), StartedAt: Epoch.Add(-30 * time.Minute)}
}

// PIDStart is the process start time Lease records for pid.
func PIDStart(pid int) uint64 { return 100000 + uint64(pid) }

// Ref is the process identity of a lease.
func Ref(l desired.Lease) observed.ProcessRef {
	return observed.ProcessRef{PID: l.PID, Start: l.PIDStart}
}

// ObjectBuilder builds an observed.Object.
type ObjectBuilder struct {
	o     observed.Object
	idSet bool
}

func newObject(kind observed.Kind, user, project, name, role string) *ObjectBuilder {
	o := observed.Object{
		Kind:    kind,
		Name:    name,
		Created: Epoch.Add(-DefaultAge),
		Labels: map[string]string{
			observed.LabelManagedBy: observed.ManagedByValue,
			observed.LabelUser:      user,
			observed.LabelProject:   project,
			observed.LabelSession:   SessionID(user, project),
			observed.LabelInstance:  Instance,
			observed.LabelRole:      role,
		},
	}
	if kind == observed.KindContainer {
		o.Running, o.State = true, "running"
	}
	return &ObjectBuilder{o: o}
}

// Container starts the running session container of the default generation.
func Container(user, project string) *ObjectBuilder {
	k := desired.SessionKey{User: user, Project: project}
	return newObject(observed.KindContainer, user, project, desired.ContainerName(k), observed.RoleSession)
}

// ServiceContainer starts the running container of service svc.
func ServiceContainer(user, project, svc string) *ObjectBuilder {
	k := desired.SessionKey{User: user, Project: project}
	b := newObject(observed.KindContainer, user, project, desired.ContainerName(k)+"-"+svc, observed.RoleService)
	b.o.Labels[observed.LabelService] = svc
	return b
}

// Network starts the session network.
func Network(user, project string) *ObjectBuilder {
	k := desired.SessionKey{User: user, Project: project}
	return newObject(observed.KindNetwork, user, project, desired.NetworkName(k), observed.RoleSession)
}

// Volume starts the named volume vol of service svc.
func Volume(user, project, svc, vol string) *ObjectBuilder {
	k := desired.SessionKey{User: user, Project: project}
	b := newObject(observed.KindVolume, user, project, desired.ContainerName(k)+"-"+svc+"-"+vol, observed.RoleService)
	b.o.Labels[observed.LabelService] = svc
	return b
}

// Name sets the object name.
func (b *ObjectBuilder) Name(n string) *ObjectBuilder { b.o.Name = n; return b }

// ID sets the Docker id (by default derived from kind, name and generation).
func (b *ObjectBuilder) ID(id string) *ObjectBuilder { b.o.ID, b.idSet = id, true; return b }

// Session sets the generation label ("" removes it).
func (b *ObjectBuilder) Session(id string) *ObjectBuilder { return b.Label(observed.LabelSession, id) }

// Instance sets the instance label ("" removes it).
func (b *ObjectBuilder) Instance(id string) *ObjectBuilder {
	return b.Label(observed.LabelInstance, id)
}

// Running marks a container running.
func (b *ObjectBuilder) Running() *ObjectBuilder { b.o.Running, b.o.State = true, "running"; return b }

// Stopped marks a container exited.
func (b *ObjectBuilder) Stopped() *ObjectBuilder { b.o.Running, b.o.State = false, "exited"; return b }

// Exited marks a container exited with code, as inspect reports it: its
// last run started at started and finished at finished.
func (b *ObjectBuilder) Exited(code int, started, finished time.Time) *ObjectBuilder {
	b.o.Running, b.o.State = false, "exited"
	b.o.ExitCode, b.o.StartedAt, b.o.FinishedAt = code, started, finished
	return b
}

// State marks a container not running, in the given Docker state.
func (b *ObjectBuilder) State(st string) *ObjectBuilder {
	b.o.Running, b.o.State = st == "running", st
	return b
}

// Created sets the creation time.
func (b *ObjectBuilder) Created(t time.Time) *ObjectBuilder { b.o.Created = t; return b }

// Keep sets the operator's protection label.
func (b *ObjectBuilder) Keep() *ObjectBuilder { return b.Label(observed.LabelKeep, "true") }

// Label sets one label; an empty value removes it.
func (b *ObjectBuilder) Label(k, v string) *ObjectBuilder {
	if v == "" {
		delete(b.o.Labels, k)
	} else {
		b.o.Labels[k] = v
	}
	return b
}

// Labels replaces every label.
func (b *ObjectBuilder) Labels(l map[string]string) *ObjectBuilder {
	b.o.Labels = maps.Clone(l)
	if b.o.Labels == nil {
		b.o.Labels = map[string]string{}
	}
	return b
}

// Build returns a new object.
func (b *ObjectBuilder) Build() observed.Object {
	o := CloneObject(b.o)
	if !b.idSet {
		o.ID = DefaultID(o)
	}
	return o
}

// DefaultID is the id Build gives an object without an explicit one:
// volumes are identified by name (as Docker does), other objects by kind,
// name and generation, so two generations' same-named objects differ.
func DefaultID(o observed.Object) string {
	if o.Kind == observed.KindVolume {
		return o.Name
	}
	return fmt.Sprintf("%s:%s:%s", o.Kind, o.Name, o.SessionID())
}

// ObjectsFor returns every Docker object of a healthy session: its network,
// service volumes, running service containers and running session
// container, labelled as Compute labels what it creates.
func ObjectsFor(s *desired.Session, instance string) []observed.Object {
	labels := func(role, svc string) map[string]string {
		l := map[string]string{
			observed.LabelManagedBy: observed.ManagedByValue,
			observed.LabelUser:      s.Key.User,
			observed.LabelProject:   s.Key.Project,
			observed.LabelSession:   s.ID,
			observed.LabelInstance:  instance,
			observed.LabelRole:      role,
		}
		if svc != "" {
			l[observed.LabelService] = svc
		}
		for k, v := range s.Spec.ExtraLabels {
			if _, reserved := l[k]; !reserved {
				l[k] = v
			}
		}
		return l
	}
	mk := func(kind observed.Kind, name, role, svc string) observed.Object {
		o := observed.Object{Kind: kind, Name: name, Created: s.CreatedAt, Labels: labels(role, svc)}
		if kind == observed.KindContainer {
			o.Running, o.State = true, "running"
		}
		o.ID = DefaultID(o)
		return o
	}
	objs := []observed.Object{mk(observed.KindNetwork, s.Spec.NetworkName, observed.RoleSession, "")}
	for _, svc := range s.Spec.Services {
		for _, v := range svc.Volumes {
			objs = append(objs, mk(observed.KindVolume, s.Spec.VolumeName(svc.Name, v.Name), observed.RoleService, svc.Name))
		}
	}
	for _, svc := range s.Spec.Services {
		objs = append(objs, mk(observed.KindContainer, s.Spec.ServiceContainerName(svc.Name), observed.RoleService, svc.Name))
	}
	return append(objs, mk(observed.KindContainer, s.Spec.ContainerName, observed.RoleSession, ""))
}

// DesiredBuilder builds a desired.State.
type DesiredBuilder struct {
	d        desired.State
	usersSet bool
}

// Desired starts a state of instance Instance holding sessions; unless
// Users is called, every session's user has a key file.
func Desired(sessions ...*desired.Session) *DesiredBuilder {
	b := &DesiredBuilder{d: desired.State{InstanceID: Instance}}
	return b.Sessions(sessions...)
}

// Sessions adds sessions (a later one replaces an earlier one of the same key).
func (b *DesiredBuilder) Sessions(sessions ...*desired.Session) *DesiredBuilder {
	for _, s := range sessions {
		b.d.PutSession(CloneSession(s))
	}
	return b
}

// Instance sets the state-database id.
func (b *DesiredBuilder) Instance(id string) *DesiredBuilder { b.d.InstanceID = id; return b }

// DatabaseCreatedAt sets when the state database was created.
func (b *DesiredBuilder) DatabaseCreatedAt(t time.Time) *DesiredBuilder {
	b.d.DatabaseCreatedAt = t
	return b
}

// Users sets exactly which users have a key file.
func (b *DesiredBuilder) Users(names ...string) *DesiredBuilder {
	b.usersSet = true
	b.d.Users = desired.NewState("", nil, names).Users
	return b
}

// Build returns a new state.
func (b *DesiredBuilder) Build() desired.State {
	d := CloneDesired(b.d)
	if !b.usersSet {
		var users []string
		for _, s := range d.Sessions {
			users = append(users, s.Key.User)
		}
		d.Users = desired.NewState("", nil, users).Users
	}
	return d
}

// ObservedBuilder builds an observed.State.
type ObservedBuilder struct{ o observed.State }

// Observed starts an observation holding objs, with no lease checked.
func Observed(objs ...observed.Object) *ObservedBuilder {
	return (&ObservedBuilder{o: observed.State{Exited: map[observed.ProcessRef]struct{}{}}}).Objects(objs...)
}

// Objects adds objects.
func (b *ObservedBuilder) Objects(objs ...observed.Object) *ObservedBuilder {
	for _, o := range objs {
		b.o.Objects = append(b.o.Objects, CloneObject(o))
	}
	return b
}

// Alive records the processes of leases as running, which is what every
// lease not marked Dead is; it says so in a test and undoes Dead.
func (b *ObservedBuilder) Alive(ls ...desired.Lease) *ObservedBuilder {
	for _, l := range ls {
		delete(b.o.Exited, Ref(l))
	}
	return b
}

// Dead records the processes of leases as gone.
func (b *ObservedBuilder) Dead(ls ...desired.Lease) *ObservedBuilder {
	for _, l := range ls {
		b.o.Exited[Ref(l)] = struct{}{}
	}
	return b
}

// Build returns a new observation.
func (b *ObservedBuilder) Build() observed.State { return CloneObserved(b.o) }

// CloneSession deep-copies a session.
func CloneSession(s *desired.Session) *desired.Session {
	if s == nil {
		return nil
	}
	c := *s
	c.Leases = slices.Clone(s.Leases)
	c.Spec = cloneSpec(s.Spec)
	return &c
}

func cloneSpec(sp desired.Spec) desired.Spec {
	c := sp
	c.Env = slices.Clone(sp.Env)
	c.Security = cloneSecurity(sp.Security)
	c.Mounts = slices.Clone(sp.Mounts)
	c.ExtraLabels = maps.Clone(sp.ExtraLabels)
	c.Services = slices.Clone(sp.Services)
	for i, svc := range c.Services {
		c.Services[i].Env = slices.Clone(svc.Env)
		c.Services[i].Command = slices.Clone(svc.Command)
		c.Services[i].Volumes = slices.Clone(svc.Volumes)
	}
	return c
}

func cloneSecurity(s desired.Security) desired.Security {
	c := s
	c.CapDrop = slices.Clone(s.CapDrop)
	c.CapAdd = slices.Clone(s.CapAdd)
	c.Tmpfs = maps.Clone(s.Tmpfs)
	return c
}

// CloneDesired deep-copies a desired state.
func CloneDesired(d desired.State) desired.State {
	c := desired.State{InstanceID: d.InstanceID, Users: slices.Clone(d.Users), DatabaseCreatedAt: d.DatabaseCreatedAt}
	if d.Sessions != nil {
		c.Sessions = make([]*desired.Session, len(d.Sessions))
		for i, s := range d.Sessions {
			c.Sessions[i] = CloneSession(s)
		}
	}
	return c
}

// CloneObject deep-copies an object.
func CloneObject(o observed.Object) observed.Object {
	o.Labels = maps.Clone(o.Labels)
	return o
}

// CloneObserved deep-copies an observation.
func CloneObserved(o observed.State) observed.State {
	c := observed.State{Exited: maps.Clone(o.Exited)}
	if o.Objects != nil {
		c.Objects = make([]observed.Object, len(o.Objects))
		for i, obj := range o.Objects {
			c.Objects[i] = CloneObject(obj)
		}
	}
	return c
}
