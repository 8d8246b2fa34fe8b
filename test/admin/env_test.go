// Package admin_test runs the admin commands (stop, remove-user, status)
// as a built binary against the real Docker daemon and a real state
// database.
//
// The daemon is shared with other engineers' tests, so nothing here runs
// an unscoped cleanup pass: sessions are created with a per-key reconcile
// of the test's own keys (the same controller and executor a pass uses),
// and every user name carries a random suffix.
package admin_test

import (
	"context"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/podspawn/podspawn/actions/dockeract"
	"github.com/podspawn/podspawn/observed/dockerobs"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/go-logr/logr"
	"k8s.io/utils/clock"

	"github.com/podspawn/podspawn/controller"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/reconcile"
	"github.com/podspawn/podspawn/test/harness"
)

type adminEnv struct {
	*harness.Env
	t        *testing.T
	Docker   *client.Client
	Instance string
}

func newAdminEnv(t *testing.T) *adminEnv {
	t.Helper()
	dc := harness.Docker(t)
	e := &adminEnv{Env: harness.NewEnv(t, harness.Options{}), t: t, Docker: dc}
	st := e.OpenStore() // creates the database and its instance id
	e.Instance = st.InstanceID()
	st.Close()
	return e
}

// cacheService is a companion container with a named volume.
func cacheService() desired.Service {
	return desired.Service{Name: "cache", Image: harness.Image, Command: []string{"sleep", "infinity"},
		Volumes: []desired.VolumeMount{{Name: "data", Target: "/data"}}}
}

// startSession records a creating session with a live connection (this
// test process), as spawn does before creating anything, then reconciles
// that one key so the real executor creates its objects.
func (e *adminEnv) startSession(key desired.SessionKey, services ...desired.Service) {
	e.t.Helper()
	e.SeedCreating(key, harness.SeedOptions{Services: services})
	st := e.OpenStore()
	defer st.Close()
	ctx := context.Background()
	ctrl := &controller.Controller{
		Store: st, KeyDir: e.KeyDir, LockDir: filepath.Join(e.StateDir, "locks"), Observer: dockerobs.Lister{API: e.Docker},
		Executor: &dockeract.Executor{API: e.Docker, Store: st, Now: time.Now},
		Options:  reconcile.Options{OrphanMinAge: 30 * time.Second, PendingTimeout: 2 * time.Minute},
		Clock:    clock.RealClock{}, Log: logr.Discard(), ReconcileTimeout: 2 * time.Minute, LockTimeout: 30 * time.Second,
	}
	if rep := ctrl.ReconcileKey(ctx, key); rep.Err != nil {
		e.t.Fatalf("creating session %s: %v", key, rep.Err)
	}
	if got := e.Row(key); got == nil || got.Status != desired.StatusRunning {
		e.t.Fatalf("session %s after its creating reconcile: %+v, want status running", key, got)
	}
}

// objects lists, straight from the daemon, the objects of this env's
// instance as "kind name state", sorted.
func (e *adminEnv) objects() []string {
	e.t.Helper()
	out := []string{}
	for _, o := range harness.ListObjects(e.t, e.Docker, e.Instance) {
		switch o.Kind {
		case "container":
			out = append(out, o.String()+" "+o.State+" "+o.ID)
		case "network":
			out = append(out, o.String()+" "+o.ID)
		default:
			out = append(out, o.String())
		}
	}
	sort.Strings(out)
	return out
}

// objectNames is objects without states and ids.
func (e *adminEnv) objectNames() []string {
	out := []string{}
	for _, o := range e.objects() {
		f := strings.Fields(o)
		out = append(out, f[0]+" "+f[1])
	}
	return out
}

// foreignContainer starts a container that podspawn does not manage (no
// managed-by label) on net, so that Docker refuses to remove the network.
// It carries the env's instance label only so the harness removes it.
func (e *adminEnv) foreignContainer(name, net string) string {
	e.t.Helper()
	ctx := context.Background()
	c, err := e.Docker.ContainerCreate(ctx,
		&container.Config{Image: harness.Image, Cmd: []string{"sleep", "infinity"}, Labels: map[string]string{observed.LabelInstance: e.Instance}},
		&container.HostConfig{NetworkMode: container.NetworkMode(net)},
		&network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{net: {}}}, nil, name)
	if err != nil {
		e.t.Fatalf("creating container %s: %v", name, err)
	}
	e.t.Cleanup(func() { e.Docker.ContainerRemove(context.Background(), c.ID, container.RemoveOptions{Force: true}) })
	if err := e.Docker.ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
		e.t.Fatalf("starting container %s: %v", name, err)
	}
	return c.ID
}
