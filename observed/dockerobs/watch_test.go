package dockerobs

import (
	"context"
	"fmt"
	"testing"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/observed"
)

// fakeEvents answers inspections from a map; its streams are never used.
type fakeEvents struct {
	inspect map[string]map[string]string // network/volume labels by id or name
}

func (f *fakeEvents) Events(context.Context, events.ListOptions) (<-chan events.Message, <-chan error) {
	return nil, nil
}

func (f *fakeEvents) NetworkInspect(_ context.Context, id string, _ network.InspectOptions) (network.Inspect, error) {
	if l, ok := f.inspect[id]; ok {
		return network.Inspect{ID: id, Labels: l}, nil
	}
	return network.Inspect{}, fmt.Errorf("network %s not found", id)
}

func (f *fakeEvents) VolumeInspect(_ context.Context, id string) (volume.Volume, error) {
	if l, ok := f.inspect[id]; ok {
		return volume.Volume{Name: id, Labels: l}, nil
	}
	return volume.Volume{}, fmt.Errorf("volume %s not found", id)
}

func TestEventKey(t *testing.T) {
	inst := "this-db"
	api := &fakeEvents{inspect: map[string]map[string]string{}}
	w := NewWatcher(api, inst, logr.Discard())
	w.Seen([]observed.Object{{
		Kind: observed.KindNetwork, ID: "net1", Name: "podspawn-dmknown-net",
		Labels: map[string]string{observed.LabelManagedBy: "podspawn", observed.LabelUser: "dmknown", observed.LabelInstance: inst},
	}}, inst)
	dmnew := map[string]string{observed.LabelManagedBy: "podspawn", observed.LabelUser: "dmnew", observed.LabelProject: "web", observed.LabelInstance: inst}
	api.inspect["net2"] = dmnew
	api.inspect["podspawn-dmnew-web-db-data"] = dmnew
	api.inspect["net3"] = map[string]string{observed.LabelManagedBy: "podspawn", observed.LabelUser: "dmother", observed.LabelInstance: "another-db"}
	ctr := func(action events.Action, labels map[string]string) events.Message {
		return events.Message{Type: events.ContainerEventType, Action: action, Actor: events.Actor{ID: "c1", Attributes: labels}}
	}
	netEv := func(action events.Action, id, name string) events.Message {
		return events.Message{Type: events.NetworkEventType, Action: action, Actor: events.Actor{ID: id, Attributes: map[string]string{"name": name, "type": "bridge"}}}
	}
	type result struct {
		Key desired.SessionKey
		OK  bool
	}
	tests := []struct {
		name string
		m    events.Message
		want result
	}{
		{"container of a session", ctr(events.ActionDestroy, map[string]string{"managed-by": "podspawn", "podspawn.user": "dmalice", "podspawn.project": "web", "podspawn.instance": inst, "name": "podspawn-dmalice-web"}),
			result{desired.SessionKey{User: "dmalice", Project: "web"}, true}},
		{"container without instance label", ctr(events.ActionDie, map[string]string{"managed-by": "podspawn", "podspawn.user": "dmalice"}),
			result{desired.SessionKey{User: "dmalice"}, true}},
		{"container of another instance", ctr(events.ActionDestroy, map[string]string{"managed-by": "podspawn", "podspawn.user": "dmalice", "podspawn.instance": "another-db"}),
			result{}},
		{"container not managed by podspawn", ctr(events.ActionDestroy, map[string]string{"podspawn.user": "dmalice"}), result{}},
		{"container with a bad user label", ctr(events.ActionDestroy, map[string]string{"managed-by": "podspawn", "podspawn.user": "../etc"}),
			result{desired.Unattributed, true}},
		{"known network removed", netEv(events.ActionDestroy, "net1", "podspawn-dmknown-net"), result{desired.SessionKey{User: "dmknown"}, true}},
		{"known network forgotten after its removal", netEv(events.ActionDestroy, "net1", "podspawn-dmknown-net"), result{}},
		{"new network of ours", netEv(events.ActionCreate, "net2", "podspawn-dmnew-web-net"), result{desired.SessionKey{User: "dmnew", Project: "web"}, true}},
		{"new network now indexed", netEv(events.ActionDisconnect, "net2", "podspawn-dmnew-web-net"), result{desired.SessionKey{User: "dmnew", Project: "web"}, true}},
		{"new network of another instance", netEv(events.ActionCreate, "net3", "podspawn-dmother-net"), result{}},
		{"network that is not ours", netEv(events.ActionCreate, "net4", "bridge-of-someone"), result{}},
		{"network gone before inspect", netEv(events.ActionCreate, "net5", "podspawn-dmgone-net"), result{}},
		{"volume of ours", events.Message{Type: events.VolumeEventType, Action: events.ActionCreate, Actor: events.Actor{ID: "podspawn-dmnew-web-db-data"}},
			result{desired.SessionKey{User: "dmnew", Project: "web"}, true}},
		{"image event", events.Message{Type: events.ImageEventType, Action: events.ActionPull, Actor: events.Actor{ID: "x"}}, result{}},
	}
	for _, tc := range tests {
		// Sequential: later cases depend on the index state earlier ones left.
		k, ok := w.eventKey(context.Background(), tc.m)
		if diff := cmp.Diff(tc.want, result{k, ok}); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
	}
}

// A network created while a resync lists is not in the list the index is
// rebuilt from; the reset keeps it until the next one.
func TestSeenKeepsObjectsCreatedDuringTheList(t *testing.T) {
	labels := map[string]string{observed.LabelManagedBy: "podspawn", observed.LabelUser: "dmnew", observed.LabelInstance: "this-db"}
	w := NewWatcher(&fakeEvents{inspect: map[string]map[string]string{"net9": labels}}, "this-db", logr.Discard())
	create := events.Message{Type: events.NetworkEventType, Action: events.ActionCreate, Actor: events.Actor{ID: "net9", Attributes: map[string]string{"name": "podspawn-dmnew-net"}}}
	if _, ok := w.eventKey(context.Background(), create); !ok {
		t.Fatal("create event not attributed")
	}
	w.Seen(nil, "this-db")
	gone := events.Message{Type: events.NetworkEventType, Action: events.ActionDestroy, Actor: events.Actor{ID: "net9", Attributes: map[string]string{"name": "podspawn-dmnew-net"}}}
	if k, ok := w.eventKey(context.Background(), gone); !ok || k.User != "dmnew" {
		t.Errorf("destroy after a resync: got %v %v, want dmnew", k, ok)
	}
	w.Seen(nil, "this-db")
	w.Seen(nil, "this-db")
	if _, ok := w.eventKey(context.Background(), gone); ok {
		t.Error("a forgotten network is still attributed")
	}
}
