package controller

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/sqlstore"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/observed/proc"
)

// The daemon's change sources live here: Docker events, database commits
// and the exit of connection processes. Each only enqueues session keys;
// the per-key reconcile decides and acts.

// EventsAPI is the part of the Docker client the daemon watches with.
type EventsAPI interface {
	Events(ctx context.Context, options events.ListOptions) (<-chan events.Message, <-chan error)
	NetworkInspect(ctx context.Context, networkID string, options network.InspectOptions) (network.Inspect, error)
	VolumeInspect(ctx context.Context, volumeID string) (volume.Volume, error)
}

// Container actions that can change what a reconcile decides. exec_*,
// attach and resize fire on every SSH command and are left out.
var containerActions = []events.Action{
	events.ActionCreate, events.ActionStart, events.ActionRestart, events.ActionDie, events.ActionDestroy,
	events.ActionPause, events.ActionUnPause, events.ActionRename, events.ActionUpdate,
}

// Network and volume actions worth a look. A disconnect can unblock a
// network removal that failed on a stray endpoint.
var objectActions = []events.Action{
	events.ActionCreate, events.ActionDestroy, events.ActionConnect, events.ActionDisconnect,
}

// subscription is the pair of Docker event streams the daemon reads.
// Docker puts labels in the attributes of container events only, so a
// label filter alone never sees networks or volumes: a second stream takes
// every network and volume event and the daemon keeps the ones it can
// attribute.
type subscription struct {
	labelled, objects       <-chan events.Message
	labelledErr, objectsErr <-chan error
	cancel                  context.CancelFunc
}

// subscribe opens both streams from since, so that nothing that happened
// between since and now is lost.
func subscribe(ctx context.Context, api EventsAPI, since string) *subscription {
	ctx, cancel := context.WithCancel(ctx)
	lf := filters.NewArgs(filters.Arg("label", observed.ManagedSelector))
	for _, a := range containerActions {
		lf.Add("event", string(a))
	}
	of := filters.NewArgs(filters.Arg("type", string(events.NetworkEventType)), filters.Arg("type", string(events.VolumeEventType)))
	for _, a := range objectActions {
		of.Add("event", string(a))
	}
	s := &subscription{cancel: cancel}
	s.labelled, s.labelledErr = api.Events(ctx, events.ListOptions{Since: since, Filters: lf})
	s.objects, s.objectsErr = api.Events(ctx, events.ListOptions{Since: since, Filters: of})
	return s
}

// failed returns a stream error that is already there, without waiting.
func (s *subscription) failed() error {
	select {
	case err := <-s.labelledErr:
		return streamErr(err)
	case err := <-s.objectsErr:
		return streamErr(err)
	default:
		return nil
	}
}

func streamErr(err error) error {
	if err == nil {
		// The client closes the channel after the error it sent.
		return errors.New("docker event stream closed")
	}
	return fmt.Errorf("docker event stream: %w", err)
}

// objectIndex maps network and volume names and IDs to session keys, since
// their events carry no labels. Full resyncs rebuild it; create events
// extend it.
type objectIndex struct {
	mu   sync.Mutex
	keys map[string]desired.SessionKey
}

func (x *objectIndex) reset(objs []observed.Object, instance string) {
	m := map[string]desired.SessionKey{}
	for _, o := range objs {
		if o.Kind == observed.KindContainer || foreign(o.Labels, instance) {
			continue
		}
		k, _ := o.Key()
		m[o.Name] = k
		m[o.ID] = k
	}
	x.mu.Lock()
	x.keys = m
	x.mu.Unlock()
}

func (x *objectIndex) lookup(refs ...string) (desired.SessionKey, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, r := range refs {
		if k, ok := x.keys[r]; ok && r != "" {
			return k, true
		}
	}
	return desired.SessionKey{}, false
}

func (x *objectIndex) put(k desired.SessionKey, refs ...string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.keys == nil {
		x.keys = map[string]desired.SessionKey{}
	}
	for _, r := range refs {
		if r != "" {
			x.keys[r] = k
		}
	}
}

func (x *objectIndex) forget(refs ...string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, r := range refs {
		delete(x.keys, r)
	}
}

// foreign reports whether labels name another state database's instance.
func foreign(labels map[string]string, instance string) bool {
	id := labels[observed.LabelInstance]
	return id != "" && id != instance
}

// namePrefix starts the name of every object podspawn creates.
const namePrefix = "podspawn-"

// eventKey maps a Docker event to the session key it concerns; ok is false
// for events that concern no session of this instance.
func (d *Daemon) eventKey(ctx context.Context, m events.Message) (desired.SessionKey, bool) {
	instance := d.C.Store.InstanceID()
	switch m.Type {
	case events.ContainerEventType:
		attrs := m.Actor.Attributes
		if attrs[observed.LabelManagedBy] != observed.ManagedByValue || foreign(attrs, instance) {
			return desired.SessionKey{}, false
		}
		// A container's event attributes are its labels (plus name, image).
		k, _ := observed.Object{Labels: attrs}.Key()
		return k, true
	case events.NetworkEventType, events.VolumeEventType:
		id, name := m.Actor.ID, m.Actor.Attributes["name"]
		if m.Type == events.VolumeEventType {
			name = id
		}
		if k, ok := d.index.lookup(id, name); ok {
			if m.Action == events.ActionDestroy {
				d.index.forget(id, name)
			}
			return k, true
		}
		if m.Action != events.ActionCreate || !strings.HasPrefix(name, namePrefix) {
			return desired.SessionKey{}, false
		}
		labels, err := d.inspectLabels(ctx, m.Type, id)
		if err != nil {
			// Gone already, or Docker is busy: the next resync sees it.
			d.C.Log.V(2).Info("Ignoring event of an object that cannot be inspected", "object", name, "err", err.Error())
			return desired.SessionKey{}, false
		}
		if labels[observed.LabelManagedBy] != observed.ManagedByValue || foreign(labels, instance) {
			return desired.SessionKey{}, false
		}
		k, _ := observed.Object{Labels: labels}.Key()
		d.index.put(k, id, name)
		return k, true
	}
	return desired.SessionKey{}, false
}

func (d *Daemon) inspectLabels(ctx context.Context, t events.Type, id string) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, d.resyncTimeout())
	defer cancel()
	if t == events.NetworkEventType {
		n, err := d.Events.NetworkInspect(ctx, id, network.InspectOptions{})
		return n.Labels, err
	}
	v, err := d.Events.VolumeInspect(ctx, id)
	return v.Labels, err
}

// handleEvent enqueues the key an event concerns.
func (d *Daemon) handleEvent(ctx context.Context, q Queue, m events.Message) {
	k, ok := d.eventKey(ctx, m)
	if !ok {
		return
	}
	d.C.Log.V(2).Info("Docker event", "user", k.User, "project", k.Project, "type", string(m.Type), "event", string(m.Action))
	q.Add(k)
}

// dbWatcher polls the database's data_version and, when another connection
// committed, diffs the session stamps and enqueues the keys that changed.
// It also hands the current leases to the process watcher.
type dbWatcher struct {
	w      *sqlstore.Watcher
	log    logr.Logger
	procs  *procWatcher
	notify func(desired.SessionKey)

	version int64
	prev    map[desired.SessionKey]sqlstore.SessionStamp
	primed  bool
	failing bool
}

// poll checks for a change once.
func (w *dbWatcher) poll(ctx context.Context) {
	err := w.check(ctx)
	switch {
	case err != nil && !w.failing:
		w.failing = true
		w.log.Error(err, "Watching the state database failed; relying on deadlines and resyncs until it recovers")
	case err != nil:
		w.log.V(1).Info("Watching the state database still fails", "err", err.Error())
	case w.failing:
		w.failing = false
		w.log.Info("Watching the state database again")
	}
	w.procs.check()
}

func (w *dbWatcher) check(ctx context.Context) error {
	v, err := w.w.DataVersion(ctx)
	if err != nil {
		return err
	}
	if w.primed && v == w.version {
		return nil
	}
	snap, err := w.w.Snapshot(ctx)
	if err != nil {
		return err
	}
	if w.primed {
		for k, st := range snap.Sessions {
			if old, ok := w.prev[k]; !ok || old != st {
				w.notify(k)
			}
		}
		for k := range w.prev {
			if _, ok := snap.Sessions[k]; !ok {
				w.notify(k)
			}
		}
	}
	w.version, w.prev, w.primed = v, snap.Sessions, true
	w.procs.sync(snap.Leases)
	return nil
}

// procWatcher notices when the process behind a lease exits, so a crashed
// or killed connection gets its grace period within moments instead of at
// the next resync. It waits on a pidfd per lease in Go's poller (a parked
// goroutine, no thread, no polling); where pidfds are unavailable it falls
// back to checking /proc on every database poll.
type procWatcher struct {
	log    logr.Logger
	notify func(desired.SessionKey)

	mu      sync.Mutex
	watched map[int64]*os.File
	polled  map[int64]sqlstore.LeaseRef
	dead    map[int64]bool
	closed  bool
	warned  bool
}

func newProcWatcher(log logr.Logger, notify func(desired.SessionKey)) *procWatcher {
	return &procWatcher{log: log, notify: notify, watched: map[int64]*os.File{}, polled: map[int64]sqlstore.LeaseRef{}, dead: map[int64]bool{}}
}

// sync makes the watched set equal to leases.
func (p *procWatcher) sync(leases []sqlstore.LeaseRef) {
	want := make(map[int64]sqlstore.LeaseRef, len(leases))
	for _, l := range leases {
		want[l.ID] = l
	}
	var exited []desired.SessionKey
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	for id, f := range p.watched {
		if _, ok := want[id]; !ok {
			f.Close() // wakes the waiter, which then exits quietly
			delete(p.watched, id)
		}
	}
	for id := range p.polled {
		if _, ok := want[id]; !ok {
			delete(p.polled, id)
		}
	}
	for id := range p.dead {
		if _, ok := want[id]; !ok {
			delete(p.dead, id)
		}
	}
	for id, l := range want {
		if p.watched[id] != nil || p.dead[id] {
			continue
		}
		if _, ok := p.polled[id]; ok {
			continue
		}
		f, err := openPidfd(l.PID)
		switch {
		case errors.Is(err, unix.ESRCH):
			p.dead[id] = true
			exited = append(exited, l.Key)
		case err != nil:
			if !p.warned {
				p.warned = true
				p.log.Info("Cannot watch connection processes with pidfds; checking /proc every poll instead", "err", err.Error())
			}
			p.polled[id] = l
		default:
			// The pidfd is for whoever has the pid now; it is the lease's
			// process only if the start time still matches.
			if alive := proc.Alive([]observed.ProcessRef{{PID: l.PID, Start: l.PIDStart}}); !alive[observed.ProcessRef{PID: l.PID, Start: l.PIDStart}] {
				f.Close()
				p.dead[id] = true
				exited = append(exited, l.Key)
				continue
			}
			p.watched[id] = f
			go p.wait(l, f)
		}
	}
	p.mu.Unlock()
	for _, k := range exited {
		p.notify(k)
	}
}

// check looks at the leases that have no pidfd.
func (p *procWatcher) check() {
	p.mu.Lock()
	var exited []desired.SessionKey
	for id, l := range p.polled {
		ref := observed.ProcessRef{PID: l.PID, Start: l.PIDStart}
		if !proc.Alive([]observed.ProcessRef{ref})[ref] {
			delete(p.polled, id)
			p.dead[id] = true
			exited = append(exited, l.Key)
		}
	}
	p.mu.Unlock()
	for _, k := range exited {
		p.notify(k)
	}
}

// wait blocks until the process exits or f is closed.
func (p *procWatcher) wait(l sqlstore.LeaseRef, f *os.File) {
	rc, err := f.SyscallConn()
	if err == nil {
		err = rc.Read(func(fd uintptr) bool { return pidfdReady(int(fd)) })
	}
	p.mu.Lock()
	if p.watched[l.ID] != f {
		// Closed by sync or close: the lease is gone, nothing to report.
		p.mu.Unlock()
		return
	}
	delete(p.watched, l.ID)
	f.Close()
	if err != nil {
		// Not pollable after all: fall back to checking /proc.
		p.polled[l.ID] = l
		p.mu.Unlock()
		return
	}
	p.dead[l.ID] = true
	p.mu.Unlock()
	p.notify(l.Key)
}

func (p *procWatcher) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for id, f := range p.watched {
		f.Close()
		delete(p.watched, id)
	}
}

// openPidfd returns a pollable pidfd for pid.
func openPidfd(pid int) (*os.File, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, err
	}
	// Non-blocking, so that os.NewFile registers it with the runtime poller.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), fmt.Sprintf("pidfd:%d", pid)), nil
}

// pidfdReady reports whether the process of a pidfd has exited (the fd
// polls readable). It must check for real: the runtime poller only reports
// edges that come after the wait started.
func pidfdReady(fd int) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 0)
		if err == unix.EINTR {
			continue
		}
		return err == nil && n > 0 && fds[0].Revents != 0
	}
}
