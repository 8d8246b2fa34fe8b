package dockerobs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/go-logr/logr"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/observed"
)

// EventsAPI is the part of the Docker client the watcher needs.
type EventsAPI interface {
	Events(ctx context.Context, options events.ListOptions) (<-chan events.Message, <-chan error)
	NetworkInspect(ctx context.Context, networkID string, options network.InspectOptions) (network.Inspect, error)
	VolumeInspect(ctx context.Context, volumeID string) (volume.Volume, error)
}

// DefaultInspectTimeout bounds the inspection of a new network or volume.
const DefaultInspectTimeout = time.Minute

// Watcher turns Docker events into the session keys they concern.
type Watcher struct {
	api      EventsAPI
	instance string
	log      logr.Logger
	// InspectTimeout bounds the inspection of a new network or volume.
	InspectTimeout time.Duration

	index objectIndex
}

// NewWatcher watches api for the sessions of the state database instance.
func NewWatcher(api EventsAPI, instance string, log logr.Logger) *Watcher {
	return &Watcher{api: api, instance: instance, log: log, InspectTimeout: DefaultInspectTimeout}
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

// Watch opens two Docker event streams from since, so that nothing that
// happened between since and now is lost. Docker puts labels in the
// attributes of container events only, so a label filter alone never sees
// networks or volumes: a second stream takes every network and volume
// event and the watcher keeps the ones it can attribute.
func (w *Watcher) Watch(ctx context.Context, since time.Time) (<-chan observed.Change, <-chan error) {
	lf := filters.NewArgs(filters.Arg("label", observed.ManagedSelector))
	for _, a := range containerActions {
		lf.Add("event", string(a))
	}
	of := filters.NewArgs(filters.Arg("type", string(events.NetworkEventType)), filters.Arg("type", string(events.VolumeEventType)))
	for _, a := range objectActions {
		of.Add("event", string(a))
	}
	st := dockerTime(since)
	labelled, labelledErr := w.api.Events(ctx, events.ListOptions{Since: st, Filters: lf})
	objects, objectsErr := w.api.Events(ctx, events.ListOptions{Since: st, Filters: of})
	out := make(chan observed.Change)
	errc := make(chan error, 1)
	go func() {
		for {
			var m events.Message
			select {
			case <-ctx.Done():
				return
			case m = <-labelled:
			case m = <-objects:
			case err := <-labelledErr:
				errc <- streamErr(err)
				return
			case err := <-objectsErr:
				errc <- streamErr(err)
				return
			}
			k, ok := w.eventKey(ctx, m)
			if !ok {
				continue
			}
			select {
			case out <- observed.Change{Key: k, Kind: string(m.Type), Action: string(m.Action)}:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, errc
}

func streamErr(err error) error {
	if err == nil {
		// The client closes the channel after the error it sent.
		return errors.New("docker event stream closed")
	}
	return fmt.Errorf("docker event stream: %w", err)
}

// Seen rebuilds the index of networks and volumes from a full list.
func (w *Watcher) Seen(objs []observed.Object, instance string) {
	w.index.reset(objs, instance)
}

// objectIndex maps network and volume names and IDs to session keys, since
// their events carry no labels. Full resyncs rebuild it; create events
// extend it. Events are mapped while a resync lists, so a reset keeps what
// create events added since the previous reset: the list it is built from
// may predate them.
type objectIndex struct {
	mu    sync.Mutex
	keys  map[string]desired.SessionKey
	added map[string]desired.SessionKey
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
	for r, k := range x.added {
		if _, ok := m[r]; !ok {
			m[r] = k
		}
	}
	x.keys, x.added = m, nil
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
	if x.added == nil {
		x.added = map[string]desired.SessionKey{}
	}
	for _, r := range refs {
		if r != "" {
			x.keys[r] = k
			x.added[r] = k
		}
	}
}

func (x *objectIndex) forget(refs ...string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, r := range refs {
		delete(x.keys, r)
		delete(x.added, r)
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
func (w *Watcher) eventKey(ctx context.Context, m events.Message) (desired.SessionKey, bool) {
	switch m.Type {
	case events.ContainerEventType:
		attrs := m.Actor.Attributes
		if attrs[observed.LabelManagedBy] != observed.ManagedByValue || foreign(attrs, w.instance) {
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
		if k, ok := w.index.lookup(id, name); ok {
			if m.Action == events.ActionDestroy {
				w.index.forget(id, name)
			}
			return k, true
		}
		if m.Action != events.ActionCreate || !strings.HasPrefix(name, namePrefix) {
			return desired.SessionKey{}, false
		}
		labels, err := w.inspectLabels(ctx, m.Type, id)
		if err != nil {
			// Gone already, or Docker is busy: the next resync sees it.
			w.log.V(2).Info("Ignoring event of an object that cannot be inspected", "object", name, "err", err.Error())
			return desired.SessionKey{}, false
		}
		if labels[observed.LabelManagedBy] != observed.ManagedByValue || foreign(labels, w.instance) {
			return desired.SessionKey{}, false
		}
		k, _ := observed.Object{Labels: labels}.Key()
		w.index.put(k, id, name)
		return k, true
	}
	return desired.SessionKey{}, false
}

func (w *Watcher) inspectLabels(ctx context.Context, t events.Type, id string) (map[string]string, error) {
	timeout := w.InspectTimeout
	if timeout <= 0 {
		timeout = DefaultInspectTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if t == events.NetworkEventType {
		n, err := w.api.NetworkInspect(ctx, id, network.InspectOptions{})
		return n.Labels, err
	}
	v, err := w.api.VolumeInspect(ctx, id)
	return v.Labels, err
}

// dockerTime formats t for the events API's since parameter.
func dockerTime(t time.Time) string {
	return fmt.Sprintf("%d.%09d", t.Unix(), t.Nanosecond())
}
