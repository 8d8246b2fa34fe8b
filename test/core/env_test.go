// Package core_test runs the reconciling core (the cleanup command and the
// controller) against the real Docker daemon and a real state database.
//
// Every test reaches Docker through a scopeProxy, so podspawn sees only the
// objects its own test created; see proxy_test.go for why.
package core_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"
	"github.com/jmoiron/sqlx"
	"golang.org/x/crypto/ssh"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/config"
	"github.com/podspawn/podspawn/desired/sqlstore"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/observed/proc"
	"github.com/podspawn/podspawn/test/harness"
)

// coreEnv is a harness env whose podspawn runs go through a scope proxy.
type coreEnv struct {
	*harness.Env
	t        testing.TB
	Proxy    *scopeProxy
	Docker   *client.Client
	Instance string
}

func newCoreEnv(t testing.TB, o harness.Options) *coreEnv {
	t.Helper()
	dc := harness.Docker(t)
	env := harness.NewEnv(t, o)
	e := &coreEnv{Env: env, t: t, Proxy: newScopeProxy(t), Docker: dc}
	st := e.openStore() // creates the database and its instance id
	e.Instance = st.InstanceID()
	st.Close()
	e.Proxy.AddInstance(e.Instance)
	return e
}

// uniq returns prefix plus a random suffix: user and object names are
// global on the daemon, and a crashed earlier run must not collide.
func uniq(prefix string) string {
	var b [3]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
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

func (e *coreEnv) openStore() *sqlstore.Store {
	e.t.Helper()
	st, err := sqlstore.Open(context.Background(), e.DBPath)
	if err != nil {
		e.t.Fatalf("opening state db: %v", err)
	}
	return st
}

// withDB runs fn on a fresh handle of the env's state database.
func (e *coreEnv) withDB(fn func(db *sqlx.DB)) {
	e.t.Helper()
	st := e.openStore()
	defer st.Close()
	fn(st.DB())
}

// exec runs one SQL statement (tests move deadlines this way).
func (e *coreEnv) exec(q string, args ...any) {
	e.t.Helper()
	e.withDB(func(db *sqlx.DB) {
		if _, err := db.Exec(q, args...); err != nil {
			e.t.Fatalf("%s: %v", q, err)
		}
	})
}

// addUser writes a key file so the user is not "removed".
func (e *coreEnv) addUser(user string) {
	e.t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		e.t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		e.t.Fatal(err)
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp))) + " " + user + "@test\n"
	if err := os.WriteFile(filepath.Join(e.KeyDir, user), []byte(line), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

type sessionOpts struct {
	Mode     desired.Mode
	Services []desired.Service
	// Lease is the process holding the connection; zero means this test process.
	Lease observed.ProcessRef
	// NoLease seeds the row without a connection.
	NoLease bool
}

// dbService is a companion container with a named volume.
func dbService() desired.Service {
	return desired.Service{Name: "db", Image: harness.Image, Command: []string{"sleep", "infinity"},
		Volumes: []desired.VolumeMount{{Name: "data", Target: "/data"}}}
}

func sessionSpec(key desired.SessionKey, services []desired.Service) desired.Spec {
	return desired.Spec{
		Image: harness.Image, Shell: "/bin/sh",
		ContainerName: desired.ContainerName(key), NetworkName: desired.NetworkName(key),
		Security: config.Defaults().SecuritySpec(), Services: services,
	}
}

// seedCreating inserts a row in status creating with a live lease, as a
// spawn would before creating anything, and returns the session id.
func (e *coreEnv) seedCreating(key desired.SessionKey, o sessionOpts) string {
	e.t.Helper()
	if o.Mode == "" {
		o.Mode = desired.ModeGracePeriod
	}
	now := time.Now()
	sess := &desired.Session{
		Key: key, ID: sqlstore.NewSessionID(), Mode: o.Mode, Status: desired.StatusCreating,
		CreatedAt: now, MaxLifetimeAt: now.Add(8 * time.Hour), GracePeriod: time.Minute,
		Spec: sessionSpec(key, o.Services),
	}
	st := e.openStore()
	defer st.Close()
	ctx := context.Background()
	if err := st.Create(ctx, sess, now); err != nil {
		e.t.Fatal(err)
	}
	if !o.NoLease {
		ref := o.Lease
		if ref.PID == 0 {
			var err error
			if ref, err = proc.Self(); err != nil {
				e.t.Fatal(err)
			}
		}
		if _, err := st.AddLease(ctx, sess.ID, ref.PID, ref.Start, now); err != nil {
			e.t.Fatal(err)
		}
	}
	return sess.ID
}

// startSession seeds a creating session and lets cleanup create its
// Docker objects the real way; it checks that the row ends up running.
func (e *coreEnv) startSession(key desired.SessionKey, o sessionOpts) string {
	e.t.Helper()
	id := e.seedCreating(key, o)
	e.mustCleanup()
	if got := e.row(key); got == nil || got.Status != desired.StatusRunning {
		e.t.Fatalf("session %s after the creating pass: %+v, want status running", key, got)
	}
	return id
}

// row loads one session (nil if absent).
func (e *coreEnv) row(key desired.SessionKey) *desired.Session {
	e.t.Helper()
	st := e.openStore()
	defer st.Close()
	s, err := st.LoadKey(context.Background(), key)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// releaseLeases drops every lease of the key, as a clean disconnect would.
func (e *coreEnv) releaseLeases(key desired.SessionKey) {
	e.t.Helper()
	e.exec(`DELETE FROM leases WHERE session_id = (SELECT id FROM sessions WHERE user = ? AND project = ?)`, key.User, key.Project)
}

// obj is a Docker object as the tests compare it.
type obj struct {
	Kind    string
	Name    string
	ID      string
	Running bool
	Labels  map[string]string
}

func (o obj) String() string { return o.Kind + " " + o.Name }

// objects lists, straight from the daemon, every object of this env's
// instance plus the given hand-made ids, sorted by kind and name.
func (e *coreEnv) objects(handMade ...string) []obj {
	e.t.Helper()
	ctx := context.Background()
	var out []obj
	seen := map[string]bool{}
	add := func(o obj) {
		if !seen[o.Kind+o.ID] {
			seen[o.Kind+o.ID] = true
			out = append(out, o)
		}
	}
	f := filters.NewArgs(filters.Arg("label", observed.LabelInstance+"="+e.Instance))
	cs, err := e.Docker.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		e.t.Fatal(err)
	}
	for _, c := range cs {
		name := ""
		if len(c.Names) > 0 {
			name = strings.TrimPrefix(c.Names[0], "/")
		}
		add(obj{Kind: "container", Name: name, ID: c.ID, Running: c.State == container.StateRunning, Labels: c.Labels})
	}
	ns, err := e.Docker.NetworkList(ctx, network.ListOptions{Filters: f})
	if err != nil {
		e.t.Fatal(err)
	}
	for _, n := range ns {
		add(obj{Kind: "network", Name: n.Name, ID: n.ID, Labels: n.Labels})
	}
	vs, err := e.Docker.VolumeList(ctx, volume.ListOptions{Filters: f})
	if err != nil {
		e.t.Fatal(err)
	}
	for _, v := range vs.Volumes {
		add(obj{Kind: "volume", Name: v.Name, ID: v.Name, Labels: v.Labels})
	}
	for _, ref := range handMade {
		if o, ok := e.inspect(ref); ok {
			add(o)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Kind != out[j].Kind {
			return out[i].Kind < out[j].Kind
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// inspect finds a container or network by id or name.
func (e *coreEnv) inspect(ref string) (obj, bool) {
	ctx := context.Background()
	if c, err := e.Docker.ContainerInspect(ctx, ref); err == nil {
		return obj{Kind: "container", Name: strings.TrimPrefix(c.Name, "/"), ID: c.ID, Running: c.State != nil && c.State.Running, Labels: c.Config.Labels}, true
	} else if !errdefs.IsNotFound(err) {
		e.t.Fatalf("inspecting container %s: %v", ref, err)
	}
	if n, err := e.Docker.NetworkInspect(ctx, ref, network.InspectOptions{}); err == nil {
		return obj{Kind: "network", Name: n.Name, ID: n.ID, Labels: n.Labels}, true
	} else if !errdefs.IsNotFound(err) {
		e.t.Fatalf("inspecting network %s: %v", ref, err)
	}
	return obj{}, false
}

func names(objs []obj) []string {
	out := []string{}
	for _, o := range objs {
		out = append(out, o.String())
	}
	return out
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

// dbDump returns every row of every table, for before/after comparisons.
func (e *coreEnv) dbDump() map[string][]map[string]any {
	e.t.Helper()
	out := map[string][]map[string]any{}
	e.withDB(func(db *sqlx.DB) {
		var tables []string
		if err := db.Select(&tables, `SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name`); err != nil {
			e.t.Fatal(err)
		}
		for _, tbl := range tables {
			rows, err := db.Queryx(`SELECT * FROM "` + tbl + `" ORDER BY rowid`)
			if err != nil {
				e.t.Fatal(err)
			}
			out[tbl] = []map[string]any{}
			for rows.Next() {
				m := map[string]any{}
				if err := rows.MapScan(m); err != nil {
					e.t.Fatal(err)
				}
				for k, v := range m {
					if b, ok := v.([]byte); ok {
						m[k] = string(b)
					}
				}
				out[tbl] = append(out[tbl], m)
			}
			if err := rows.Err(); err != nil {
				e.t.Fatal(err)
			}
			rows.Close()
		}
	})
	return out
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
