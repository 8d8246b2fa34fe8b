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
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"
	"github.com/go-logr/logr"
	"github.com/jmoiron/sqlx"
	"golang.org/x/crypto/ssh"
	"k8s.io/utils/clock"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/controller"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/config"
	"github.com/podspawn/podspawn/desired/sqlstore"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/observed/proc"
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
	st := e.openStore() // creates the database and its instance id
	e.Instance = st.InstanceID()
	st.Close()
	return e
}

// uniq returns prefix plus a random suffix: names are global on the
// daemon, and leftovers of a crashed run must not collide.
func uniq(prefix string) string {
	var b [3]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

func (e *adminEnv) openStore() *sqlstore.Store {
	e.t.Helper()
	st, err := sqlstore.Open(context.Background(), e.DBPath)
	if err != nil {
		e.t.Fatalf("opening state db: %v", err)
	}
	return st
}

// addUser writes a key file so that the user may have sessions.
func (e *adminEnv) addUser(user string) {
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
	if err := os.WriteFile(filepath.Join(e.KeyDir, user), []byte(line), 0o600); err != nil {
		e.t.Fatal(err)
	}
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
	now := time.Now()
	sess := &desired.Session{
		Key: key, ID: sqlstore.NewSessionID(), Mode: desired.ModeGracePeriod, Status: desired.StatusCreating,
		CreatedAt: now, MaxLifetimeAt: now.Add(8 * time.Hour), GracePeriod: time.Minute,
		Spec: desired.Spec{Image: harness.Image, Shell: "/bin/sh", ContainerName: desired.ContainerName(key),
			NetworkName: desired.NetworkName(key), Security: config.Defaults().SecuritySpec(), Services: services},
	}
	self, err := proc.Self()
	if err != nil {
		e.t.Fatal(err)
	}
	st := e.openStore()
	defer st.Close()
	ctx := context.Background()
	if err := st.Create(ctx, sess, now); err != nil {
		e.t.Fatal(err)
	}
	if _, err := st.AddLease(ctx, sess.ID, self.PID, self.Start, now); err != nil {
		e.t.Fatal(err)
	}
	ctrl := &controller.Controller{
		Store: st, KeyDir: e.KeyDir, LockDir: filepath.Join(e.StateDir, "locks"), Observer: e.Docker,
		Executor: &actions.Docker{API: e.Docker, Store: st, Now: time.Now},
		Options:  reconcile.Options{OrphanMinAge: 30 * time.Second, PendingTimeout: 2 * time.Minute},
		Clock:    clock.RealClock{}, Log: logr.Discard(), ReconcileTimeout: 2 * time.Minute, LockTimeout: 30 * time.Second,
	}
	if rep := ctrl.ReconcileKey(ctx, key, false); rep.Err != nil {
		e.t.Fatalf("creating session %s: %v", key, rep.Err)
	}
	if got := e.row(key); got == nil || got.Status != desired.StatusRunning {
		e.t.Fatalf("session %s after its creating reconcile: %+v, want status running", key, got)
	}
}

// row loads one session (nil if absent).
func (e *adminEnv) row(key desired.SessionKey) *desired.Session {
	e.t.Helper()
	st := e.openStore()
	defer st.Close()
	s, err := st.LoadKey(context.Background(), key)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// objects lists, straight from the daemon, the objects of this env's
// instance as "kind name state", sorted.
func (e *adminEnv) objects() []string {
	e.t.Helper()
	ctx := context.Background()
	f := filters.NewArgs(filters.Arg("label", observed.LabelInstance+"="+e.Instance))
	out := []string{}
	cs, err := e.Docker.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		e.t.Fatal(err)
	}
	for _, c := range cs {
		out = append(out, "container "+strings.TrimPrefix(c.Names[0], "/")+" "+string(c.State)+" "+c.ID)
	}
	ns, err := e.Docker.NetworkList(ctx, network.ListOptions{Filters: f})
	if err != nil {
		e.t.Fatal(err)
	}
	for _, n := range ns {
		out = append(out, "network "+n.Name+" "+n.ID)
	}
	vs, err := e.Docker.VolumeList(ctx, volume.ListOptions{Filters: f})
	if err != nil {
		e.t.Fatal(err)
	}
	for _, v := range vs.Volumes {
		out = append(out, "volume "+v.Name)
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

// dbDump returns every row of every table, for before/after comparisons.
func (e *adminEnv) dbDump() map[string][]map[string]any {
	e.t.Helper()
	st := e.openStore()
	defer st.Close()
	db := st.DB()
	out := map[string][]map[string]any{}
	var tables []string
	if err := db.Select(&tables, `SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name`); err != nil {
		e.t.Fatal(err)
	}
	for _, tbl := range tables {
		out[tbl] = dumpTable(e.t, db, tbl)
	}
	return out
}

func dumpTable(t *testing.T, db *sqlx.DB, tbl string) []map[string]any {
	t.Helper()
	rows, err := db.Queryx(`SELECT * FROM "` + tbl + `" ORDER BY rowid`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := []map[string]any{}
	for rows.Next() {
		m := map[string]any{}
		if err := rows.MapScan(m); err != nil {
			t.Fatal(err)
		}
		for k, v := range m {
			if b, ok := v.([]byte); ok {
				m[k] = string(b)
			}
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
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
