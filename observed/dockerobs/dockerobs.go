// Package dockerobs reads observed state from Docker: the containers (in
// every state), networks and volumes labelled managed-by=podspawn, with one
// server-side filtered list call per kind.
package dockerobs

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

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
	f := filters.NewArgs(filters.Arg("label", observed.LabelManagedBy+"="+observed.ManagedByValue))
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
		created, _ := time.Parse(time.RFC3339, v.CreatedAt)
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
	f := filters.NewArgs(filters.Arg("label", observed.LabelManagedBy+"="+observed.ManagedByValue))
	cs, err := api.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		return 0, err // callers say what failed ("Docker unreachable: ...")
	}
	return len(cs), nil
}
