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
	objs, err := list(ctx, api, user)
	if err != nil {
		return nil, err
	}
	// Stopped containers only: there are few, and a pass needs their exit
	// code and times to decide on a crash-looping container.
	return inspectContainers(ctx, api, objs, func(o observed.Object) bool { return !o.Running })
}

// list is List without inspecting any container.
func list(ctx context.Context, api API, user string) ([]observed.Object, error) {
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

// ListKey lists only the objects of key. Every container of the key that
// podspawn runs (it has a role label) is inspected, so the state a pass
// acts on is the container's own, never the list's lagging snapshot (see
// inspectContainers).
func ListKey(ctx context.Context, api API, key desired.SessionKey) ([]observed.Object, error) {
	all, err := list(ctx, api, key.User)
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, o := range all {
		if k, _ := o.Key(); k == key {
			out = append(out, o)
		}
	}
	return inspectContainers(ctx, api, out, func(observed.Object) bool { return true })
}

// inspectContainers replaces the state of each container with a role label
// for which pick holds by what inspect says (see Inspector), with its exit
// code and run times. A container gone meanwhile is dropped. An API that
// cannot inspect is observed through the list alone.
//
// Why not the list: dockerd (20.10, as on Debian 12) serves the container
// list from a snapshot that it updates only after it has sent the
// container's die event and its network's disconnect event. A pass those
// events trigger would see the container still running and plan nothing,
// and no later event comes: a killed session container stayed stopped
// until the next resync. Inspect waits for the container's lock, which
// dockerd holds until it has recorded the exit.
func inspectContainers(ctx context.Context, api API, objs []observed.Object, pick func(observed.Object) bool) ([]observed.Object, error) {
	in, ok := api.(InspectAPI)
	if !ok {
		return objs, nil
	}
	out := objs[:0]
	for _, o := range objs {
		if o.Kind != observed.KindContainer || o.Role() == "" || !pick(o) {
			out = append(out, o)
			continue
		}
		c, found, err := Inspector{API: in}.InspectContainer(ctx, o.ID)
		if err != nil {
			return nil, err
		}
		if !found {
			continue
		}
		o.State, o.Running = c.State, c.Running
		o.ExitCode, o.StartedAt, o.FinishedAt = c.ExitCode, c.StartedAt, c.FinishedAt
		out = append(out, o)
	}
	return out, nil
}

// parseTime reads inspect's RFC 3339 times; Docker writes the zero time
// (year 1) for "never", which stays zero.
func parseTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || t.Year() <= 1 {
		return time.Time{}
	}
	return t.UTC()
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
		o.ExitCode = info.State.ExitCode
		o.StartedAt, o.FinishedAt = parseTime(info.State.StartedAt), parseTime(info.State.FinishedAt)
	}
	if t, err := time.Parse(time.RFC3339Nano, info.Created); err == nil {
		o.Created = t.UTC()
	}
	return o, true, nil
}

// Lister is observed.Lister for Docker.
type Lister struct{ API API }

// List returns every labelled object (List).
func (l Lister) List(ctx context.Context) ([]observed.Object, error) {
	return List(ctx, l.API, "")
}

// ListKey returns the objects of one session key (ListKey).
func (l Lister) ListKey(ctx context.Context, k desired.SessionKey) ([]observed.Object, error) {
	return ListKey(ctx, l.API, k)
}

// CountContainers counts the labelled containers (CountContainers).
func (l Lister) CountContainers(ctx context.Context) (int, error) {
	return CountContainers(ctx, l.API)
}
