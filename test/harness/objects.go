package harness

import (
	"context"
	"sort"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"

	"github.com/podspawn/podspawn/observed"
)

// Object is a Docker object as the tests compare it.
type Object struct {
	Kind    string // container, network or volume
	Name    string
	ID      string // a volume's id is its name
	State   string // containers only: created, running, exited...
	Running bool
	Labels  map[string]string
}

func (o Object) String() string { return o.Kind + " " + o.Name }

// ObjectNames lists "kind name" of objs.
func ObjectNames(objs []Object) []string {
	out := []string{}
	for _, o := range objs {
		out = append(out, o.String())
	}
	return out
}

// ListObjects lists, straight from the daemon (not through any proxy),
// the containers (running or not), networks and volumes labelled with
// instance and every extra label filter, sorted by kind and name.
func ListObjects(t testing.TB, dc *client.Client, instance string, labels ...string) []Object {
	t.Helper()
	ctx := context.Background()
	f := filters.NewArgs(filters.Arg("label", observed.LabelInstance+"="+instance))
	for _, l := range labels {
		f.Add("label", l)
	}
	var out []Object
	cs, err := dc.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		name := ""
		if len(c.Names) > 0 {
			name = strings.TrimPrefix(c.Names[0], "/")
		}
		out = append(out, Object{Kind: "container", Name: name, ID: c.ID, State: string(c.State), Running: c.State == container.StateRunning, Labels: c.Labels})
	}
	ns, err := dc.NetworkList(ctx, network.ListOptions{Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range ns {
		out = append(out, Object{Kind: "network", Name: n.Name, ID: n.ID, Labels: n.Labels})
	}
	vs, err := dc.VolumeList(ctx, volume.ListOptions{Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vs.Volumes {
		out = append(out, Object{Kind: "volume", Name: v.Name, ID: v.Name, Labels: v.Labels})
	}
	SortObjects(out)
	return out
}

// SortObjects sorts by kind, then name.
func SortObjects(objs []Object) {
	sort.Slice(objs, func(i, j int) bool {
		if objs[i].Kind != objs[j].Kind {
			return objs[i].Kind < objs[j].Kind
		}
		return objs[i].Name < objs[j].Name
	})
}
