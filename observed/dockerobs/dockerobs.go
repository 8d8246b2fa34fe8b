// Package dockerobs reads observed state from Docker: the containers (in
// every state), networks and volumes labelled managed-by=podspawn, with one
// server-side filtered list call per kind.
package dockerobs

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/observed"
)

// API is the part of the Docker client that observation needs.
type API interface {
	ContainerList(ctx context.Context, options container.ListOptions) ([]container.Summary, error)
	NetworkList(ctx context.Context, options network.ListOptions) ([]network.Summary, error)
	VolumeList(ctx context.Context, options volume.ListOptions) (volume.ListResponse, error)
}

// NewClient returns a Docker client from the environment (DOCKER_HOST
// and friends) that negotiates the API version with the daemon.
func NewClient() (*client.Client, error) {
	c, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("connecting to docker: %w", err)
	}
	return c, nil
}

// List returns every labelled object. When user is non-empty only that
// user's objects are listed (the project is filtered by the caller),
// which keeps a per-key reconcile cheap.
func List(ctx context.Context, api API, user string) ([]observed.Object, error) {
	f := filters.NewArgs(filters.Arg("label", observed.ManagedSelector))
	if user != "" {
		f.Add("label", observed.LabelUser+"="+user)
	}
	var objs []observed.Object
	cs, err := api.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		return nil, fmt.Errorf("listing containers: %w", err)
	}
	for _, c := range cs {
		name := ""
		if len(c.Names) > 0 {
			name = strings.TrimPrefix(c.Names[0], "/")
		}
		objs = append(objs, observed.Object{
			Kind: observed.KindContainer, ID: c.ID, Name: name, Created: time.Unix(c.Created, 0).UTC(),
			Running: c.State == container.StateRunning, State: string(c.State), Labels: c.Labels,
		})
	}
	ns, err := api.NetworkList(ctx, network.ListOptions{Filters: f})
	if err != nil {
		return nil, fmt.Errorf("listing networks: %w", err)
	}
	for _, n := range ns {
		objs = append(objs, observed.Object{Kind: observed.KindNetwork, ID: n.ID, Name: n.Name, Created: n.Created.UTC(), Labels: n.Labels})
	}
	vs, err := api.VolumeList(ctx, volume.ListOptions{Filters: f})
	if err != nil {
		return nil, fmt.Errorf("listing volumes: %w", err)
	}
	for _, v := range vs.Volumes {
		created, err := time.Parse(time.RFC3339, v.CreatedAt)
		if err != nil {
			created = firstSeen(v)
		}
		objs = append(objs, observed.Object{Kind: observed.KindVolume, ID: v.Name, Name: v.Name, Created: created.UTC(), Labels: v.Labels})
	}
	sort.Slice(objs, func(i, j int) bool {
		if objs[i].Kind != objs[j].Kind {
			return objs[i].Kind < objs[j].Kind
		}
		return objs[i].Name < objs[j].Name
	})
	return objs, nil
}

// now is the clock for firstSeen; tests replace it.
var now = time.Now

// unknownCreated remembers when this process first saw each volume whose
// creation time Docker did not give in a form we read (some volume
// drivers leave it empty).
var unknownCreated = struct {
	sync.Mutex
	seen map[string]time.Time
}{seen: map[string]time.Time{}}

// firstSeen stands in for a volume's unknown creation time. A zero time
// would make it look ancient, so an orphan volume (possibly holding a
// user's data) would be removed at once, without cleanup.orphan_min_age.
// The time this process first saw it makes it young instead: a daemon
// waits one min-age from then, and a one-shot cleanup, which sees it for
// the first time, leaves it alone. The session label is in the key, so a
// new generation's volume of the same name starts young again.
func firstSeen(v *volume.Volume) time.Time {
	k := v.Name + "\x00" + v.Labels[observed.LabelSession]
	unknownCreated.Lock()
	defer unknownCreated.Unlock()
	t, ok := unknownCreated.seen[k]
	if !ok {
		t = now()
		unknownCreated.seen[k] = t
	}
	return t
}

// ListKey lists only the objects of key.
func ListKey(ctx context.Context, api API, key desired.SessionKey) ([]observed.Object, error) {
	all, err := List(ctx, api, key.User)
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, o := range all {
		if k, _ := o.Key(); k == key {
			out = append(out, o)
		}
	}
	return out, nil
}

// CountContainers counts the labelled containers in every state (session,
// service, orphan, stopped) with one filtered list call.
func CountContainers(ctx context.Context, api API) (int, error) {
	f := filters.NewArgs(filters.Arg("label", observed.ManagedSelector))
	cs, err := api.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		return 0, err // callers say what failed ("Docker unreachable: ...")
	}
	return len(cs), nil
}

// InspectAPI is the part of the Docker client Inspector uses.
type InspectAPI interface {
	ContainerInspect(ctx context.Context, containerID string) (container.InspectResponse, error)
}

// Inspector reads single containers for observed.ContainerInspector.
type Inspector struct{ API InspectAPI }

// InspectContainer reads one container. Running has the meaning List
// gives it: Docker's state is "running" (a paused or restarting container
// is not running).
func (i Inspector) InspectContainer(ctx context.Context, ref string) (observed.Object, bool, error) {
	info, err := i.API.ContainerInspect(ctx, ref)
	if errdefs.IsNotFound(err) {
		return observed.Object{}, false, nil
	}
	if err != nil {
		return observed.Object{}, false, fmt.Errorf("inspecting container %s: %w", ref, err)
	}
	o := observed.Object{Kind: observed.KindContainer, ID: info.ID, Name: strings.TrimPrefix(info.Name, "/")}
	if info.Config != nil {
		o.Labels = info.Config.Labels
	}
	if info.State != nil {
		o.State = string(info.State.Status)
		o.Running = info.State.Status == container.StateRunning
	}
	if t, err := time.Parse(time.RFC3339Nano, info.Created); err == nil {
		o.Created = t.UTC()
	}
	return o, true, nil
}
