// Package core_test runs the reconciling core (the cleanup command and the
// controller) against the real Docker daemon and a real state database.
//
// Every test reaches Docker through a harness.ScopeProxy, so podspawn sees
// only the objects its own test created; see test/harness/proxy.go for why.
package core_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/test/harness"
)

// coreEnv is a harness env whose podspawn runs go through a scope proxy.
type coreEnv struct {
	*harness.Env
	t        testing.TB
	Proxy    *harness.ScopeProxy
	Docker   *client.Client
	Instance string
}

func newCoreEnv(t testing.TB, o harness.Options) *coreEnv {
	t.Helper()
	dc := harness.Docker(t)
	env := harness.NewEnv(t, o)
	e := &coreEnv{Env: env, t: t, Proxy: harness.NewScopeProxy(t), Docker: dc}
	st := e.OpenStore() // creates the database and its instance id
	e.Instance = st.InstanceID()
	st.Close()
	e.Proxy.AddInstance(e.Instance)
	return e
}

// cleanup runs podspawn cleanup through the proxy.
func (e *coreEnv) cleanup(args ...string) harness.Result {
	e.t.Helper()
	return e.RunEnv([]string{"DOCKER_HOST=" + e.Proxy.Host()}, "", append([]string{"cleanup"}, args...)...)
}

// mustCleanup runs cleanup and fails the test on a non-zero exit.
func (e *coreEnv) mustCleanup(args ...string) harness.Result {
	e.t.Helper()
	r := e.cleanup(args...)
	if r.Code != 0 {
		e.t.Fatalf("podspawn cleanup %v: exit %d\nstdout:\n%s\nstderr:\n%s", args, r.Code, r.Stdout, r.Stderr)
	}
	return r
}

// dbService is a companion container with a named volume.
func dbService() desired.Service {
	return desired.Service{Name: "db", Image: harness.Image, Command: []string{"sleep", "infinity"},
		Volumes: []desired.VolumeMount{{Name: "data", Target: "/data"}}}
}

// startSession seeds a creating session and lets cleanup create its
// Docker objects the real way; it checks that the row ends up running.
func (e *coreEnv) startSession(key desired.SessionKey, o harness.SeedOptions) string {
	e.t.Helper()
	id := e.SeedCreating(key, o)
	e.mustCleanup()
	if got := e.Row(key); got == nil || got.Status != desired.StatusRunning {
		e.t.Fatalf("session %s after the creating pass: %+v, want status running", key, got)
	}
	return id
}

// objects lists, straight from the daemon, every object of this env's
// instance plus the given hand-made ids, sorted by kind and name.
func (e *coreEnv) objects(handMade ...string) []harness.Object {
	e.t.Helper()
	out := harness.ListObjects(e.t, e.Docker, e.Instance)
	seen := map[string]bool{}
	for _, o := range out {
		seen[o.Kind+o.ID] = true
	}
	for _, ref := range handMade {
		if o, ok := e.inspect(ref); ok && !seen[o.Kind+o.ID] {
			seen[o.Kind+o.ID] = true
			out = append(out, o)
		}
	}
	harness.SortObjects(out)
	return out
}

// inspect finds a container or network by id or name.
func (e *coreEnv) inspect(ref string) (harness.Object, bool) {
	ctx := context.Background()
	if c, err := e.Docker.ContainerInspect(ctx, ref); err == nil {
		o := harness.Object{Kind: "container", Name: strings.TrimPrefix(c.Name, "/"), ID: c.ID, Labels: c.Config.Labels}
		if c.State != nil {
			o.State, o.Running = string(c.State.Status), c.State.Running
		}
		return o, true
	} else if !errdefs.IsNotFound(err) {
		e.t.Fatalf("inspecting container %s: %v", ref, err)
	}
	if n, err := e.Docker.NetworkInspect(ctx, ref, network.InspectOptions{}); err == nil {
		return harness.Object{Kind: "network", Name: n.Name, ID: n.ID, Labels: n.Labels}, true
	} else if !errdefs.IsNotFound(err) {
		e.t.Fatalf("inspecting network %s: %v", ref, err)
	}
	return harness.Object{}, false
}

// handContainer creates and starts a busybox container by hand with
// exactly these labels, optionally attached to a network; it is visible
// to podspawn through the proxy and removed at test end.
func (e *coreEnv) handContainer(name string, labels map[string]string, netName string) string {
	e.t.Helper()
	ctx := context.Background()
	// No network means none, not the default bridge: the tests need no
	// connectivity and must not depend on docker0 being healthy.
	host := &container.HostConfig{NetworkMode: "none"}
	var nc *network.NetworkingConfig
	if netName != "" {
		host.NetworkMode = container.NetworkMode(netName)
		nc = &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{netName: {}}}
	}
	c, err := e.Docker.ContainerCreate(ctx, &container.Config{Image: harness.Image, Cmd: []string{"sleep", "infinity"}, Labels: labels}, host, nc, nil, name)
	if err != nil {
		e.t.Fatalf("creating container %s: %v", name, err)
	}
	e.t.Cleanup(func() { e.Docker.ContainerRemove(context.Background(), c.ID, container.RemoveOptions{Force: true}) })
	if err := e.Docker.ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
		e.t.Fatalf("starting container %s: %v", name, err)
	}
	e.Proxy.Allow(c.ID, name)
	return c.ID
}

// handNetwork creates a bridge network by hand with exactly these labels.
func (e *coreEnv) handNetwork(name string, labels map[string]string) string {
	e.t.Helper()
	n, err := e.Docker.NetworkCreate(context.Background(), name, network.CreateOptions{Driver: "bridge", Labels: labels})
	if err != nil {
		e.t.Fatalf("creating network %s: %v", name, err)
	}
	// t.Cleanup runs last-in first-out, so containers attached to this
	// network later in the test are removed before it.
	e.t.Cleanup(func() { e.Docker.NetworkRemove(context.Background(), n.ID) })
	e.Proxy.Allow(n.ID, name)
	return n.ID
}

// planJSON is the part of the dry-run JSON the tests read.
type planJSON struct {
	FormatVersion string `json:"format_version"`
	Actions       []struct {
		Kind   string             `json:"kind"`
		Key    desired.SessionKey `json:"key"`
		Target string             `json:"target"`
		Reason string             `json:"reason"`
	} `json:"actions"`
	Skipped []struct {
		Key        desired.SessionKey `json:"key"`
		ObjectKind string             `json:"object_kind"`
		Target     string             `json:"target"`
		Reason     string             `json:"reason"`
	} `json:"skipped"`
}

func parsePlan(t testing.TB, out string) planJSON {
	t.Helper()
	var p planJSON
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("dry-run JSON does not parse: %v\n%s", err, out)
	}
	if p.FormatVersion == "" {
		t.Fatalf("dry-run JSON has no format_version:\n%s", out)
	}
	return p
}

// step is an action reduced to what stays stable between runs.
type step struct{ Kind, Key, Target, Reason string }

func (p planJSON) steps() []step {
	out := []step{}
	for _, a := range p.Actions {
		out = append(out, step{a.Kind, a.Key.String(), a.Target, a.Reason})
	}
	return out
}

func (p planJSON) skips() []step {
	out := []step{}
	for _, s := range p.Skipped {
		out = append(out, step{s.ObjectKind, s.Key.String(), s.Target, s.Reason})
	}
	return out
}

func mustContain(t testing.TB, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%s does not contain %q:\n%s", what, sub, s)
		}
	}
}

func fmtResult(r harness.Result) string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.Code, r.Stdout, r.Stderr)
}
