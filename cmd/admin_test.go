package main

// Shared fixtures of the admin command golden tests (list, stop, status,
// list-users, remove-user): a temporary installation, a fixed clock, and a
// fake Docker daemon on a unix socket so that container counts and
// teardowns are exact and never touch the shared dockerd.

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/google/go-cmp/cmp"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/sqlstore"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/observed/proc"
)

// Another test file of this package may define -update too; register it
// only once (package-level vars of every file are initialised before init).
func init() {
	if flag.Lookup("update") == nil {
		flag.Bool("update", false, "rewrite golden files under testdata/")
	}
}

func updateGolden() bool {
	f := flag.Lookup("update")
	return f != nil && f.Value.String() == "true"
}

// t0 is "now" in every golden test.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// adminEnv is a temporary podspawn installation driven in-process.
type adminEnv struct {
	t        *testing.T
	root     string
	cfgPath  string
	keyDir   string
	dbPath   string
	lockDir  string
	homesDir string
	clock    *clocktesting.FakeClock
	docker   *fakeDocker
	st       *sqlstore.Store
	self     observed.ProcessRef
}

func newAdminEnv(t *testing.T) *adminEnv {
	t.Helper()
	root := t.TempDir()
	e := &adminEnv{t: t, root: root, cfgPath: filepath.Join(root, "config.yaml"), keyDir: filepath.Join(root, "keys"),
		dbPath: filepath.Join(root, "state", "state.db"), lockDir: filepath.Join(root, "state", "locks"),
		homesDir: filepath.Join(root, "state", "homes"), clock: clocktesting.NewFakeClock(t0)}
	if err := os.MkdirAll(e.keyDir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf("auth:\n  key_dir: %s\nstate:\n  db_path: %s\n  lock_dir: %s\n  homes_dir: %s\n", e.keyDir, e.dbPath, e.lockDir, e.homesDir)
	if err := os.WriteFile(e.cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	old := newClock
	newClock = func() clock.WithTicker { return e.clock }
	t.Cleanup(func() { newClock = old })
	e.docker = startFakeDocker(t)
	self, err := proc.Self()
	if err != nil {
		t.Fatal(err)
	}
	e.self = self
	return e
}

// store opens the env's database (creating it) for seeding and checks.
func (e *adminEnv) store() *sqlstore.Store {
	e.t.Helper()
	if e.st == nil {
		st, err := sqlstore.Open(context.Background(), e.dbPath)
		if err != nil {
			e.t.Fatal(err)
		}
		e.st = st
		e.t.Cleanup(func() { st.Close() })
	}
	return e.st
}

// session builds a session row with deterministic names and id.
func session(user, project string, status desired.Status, age, lifetime time.Duration) *desired.Session {
	k := desired.SessionKey{User: user, Project: project}
	return &desired.Session{
		Key: k, ID: "sess-" + strings.ReplaceAll(k.String(), "@", "-"), Mode: desired.ModeGracePeriod, Status: status,
		CreatedAt: t0.Add(-age), MaxLifetimeAt: t0.Add(-age + lifetime), GracePeriod: time.Minute,
		Spec: desired.Spec{Image: "busybox", Shell: "/bin/sh", ContainerName: desired.ContainerName(k), NetworkName: desired.NetworkName(k)},
	}
}

// seed inserts sessions; live and dead give the leases of each, by key.
func (e *adminEnv) seed(sessions ...*desired.Session) {
	e.t.Helper()
	for _, s := range sessions {
		if err := e.store().Create(context.Background(), s, t0); err != nil {
			e.t.Fatal(err)
		}
	}
}

// lease adds a live (this test process) or dead (same pid, other start
// time) connection to a session.
func (e *adminEnv) lease(s *desired.Session, live bool) {
	e.t.Helper()
	start := e.self.Start
	if !live {
		start++
	}
	if _, err := e.store().AddLease(context.Background(), s.ID, e.self.PID, start, t0); err != nil {
		e.t.Fatal(err)
	}
}

// keyFile writes a user's key file.
func (e *adminEnv) keyFile(user, content string) {
	e.t.Helper()
	if err := os.WriteFile(filepath.Join(e.keyDir, user), []byte(content), 0o600); err != nil {
		e.t.Fatal(err)
	}
}

var logTimestamp = regexp.MustCompile(`(?m)^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:?\d\d)\t`)

// run drives the command in-process and returns a transcript of its
// stdout, stderr and exit code, with the temporary root replaced by $ROOT
// and log timestamps by <TS>.
func (e *adminEnv) run(args ...string) string {
	e.t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(append([]string{"--config", e.cfgPath}, args...), &stdout, &stderr)
	norm := func(s string) string {
		s = strings.ReplaceAll(s, e.root, "$ROOT")
		return logTimestamp.ReplaceAllString(s, "<TS>\t")
	}
	return fmt.Sprintf("$ podspawn %s\n--- stdout\n%s--- stderr\n%s--- exit %d\n", norm(strings.Join(args, " ")), norm(stdout.String()), norm(stderr.String()), code)
}

// golden compares got with testdata/<name>.golden, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if updateGolden() {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./cmd -run %s -update to create it)", err, t.Name())
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", path, diff)
	}
}

// fakeDocker serves the few Engine API calls that observation and removal
// make, over a unix socket named by DOCKER_HOST.
type fakeDocker struct {
	mu         sync.Mutex
	containers []container.Summary
	networks   []network.Summary
	volumes    []*volume.Volume
	// fail maps "<kind> <id or name>" to the message a removal fails with.
	fail  map[string]string
	calls []string
}

var apiVersionPrefix = regexp.MustCompile(`^/v[0-9.]+`)

func startFakeDocker(t *testing.T) *fakeDocker {
	t.Helper()
	f := &fakeDocker{fail: map[string]string{}}
	// Unix socket paths are limited to 108 bytes; t.TempDir() of a long
	// subtest name can exceed that.
	dir, err := os.MkdirTemp("", "adfake")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "docker.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	t.Setenv("DOCKER_HOST", "unix://"+sock)
	return f
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func apiError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"message": msg})
}

func labelsMatch(labels map[string]string, f filters.Args) bool {
	for _, want := range f.Get("label") {
		k, v, hasValue := strings.Cut(want, "=")
		got, ok := labels[k]
		if !ok || (hasValue && got != v) {
			return false
		}
	}
	return true
}

func (f *fakeDocker) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	path := apiVersionPrefix.ReplaceAllString(r.URL.Path, "")
	if path == "/_ping" {
		w.Header().Set("API-Version", "1.47")
		w.Write([]byte("OK"))
		return
	}
	f.calls = append(f.calls, r.Method+" "+path)
	args, err := filters.FromJSON(r.URL.Query().Get("filters"))
	if err != nil {
		apiError(w, http.StatusBadRequest, err.Error())
		return
	}
	switch {
	case r.Method == http.MethodGet && path == "/containers/json":
		out := []container.Summary{}
		for _, c := range f.containers {
			if labelsMatch(c.Labels, args) {
				out = append(out, c)
			}
		}
		writeJSON(w, http.StatusOK, out)
	case r.Method == http.MethodGet && path == "/networks":
		out := []network.Summary{}
		for _, n := range f.networks {
			if labelsMatch(n.Labels, args) {
				out = append(out, n)
			}
		}
		writeJSON(w, http.StatusOK, out)
	case r.Method == http.MethodGet && path == "/volumes":
		out := volume.ListResponse{Volumes: []*volume.Volume{}}
		for _, v := range f.volumes {
			if labelsMatch(v.Labels, args) {
				out.Volumes = append(out.Volumes, v)
			}
		}
		writeJSON(w, http.StatusOK, out)
	case r.Method == http.MethodGet && strings.HasPrefix(path, "/containers/") && strings.HasSuffix(path, "/json"):
		// Inspect: a pass reads the state of a key's containers from the
		// container itself (see dockerobs.Inspector).
		id := strings.TrimSuffix(strings.TrimPrefix(path, "/containers/"), "/json")
		for _, c := range f.containers {
			if c.ID == id || (len(c.Names) > 0 && c.Names[0] == "/"+id) {
				writeJSON(w, http.StatusOK, container.InspectResponse{
					ContainerJSONBase: &container.ContainerJSONBase{ID: c.ID, Name: c.Names[0],
						State: &container.State{Status: c.State, Running: c.State == container.StateRunning}},
					Config: &container.Config{Labels: c.Labels},
				})
				return
			}
		}
		apiError(w, http.StatusNotFound, "No such container: "+id)
	case r.Method == http.MethodDelete && strings.HasPrefix(path, "/containers/"):
		id := strings.TrimPrefix(path, "/containers/")
		if msg, ok := f.fail["container "+id]; ok {
			apiError(w, http.StatusInternalServerError, msg)
			return
		}
		for i, c := range f.containers {
			if c.ID == id || (len(c.Names) > 0 && c.Names[0] == "/"+id) {
				f.containers = append(f.containers[:i], f.containers[i+1:]...)
				w.WriteHeader(http.StatusNoContent)
				return
			}
		}
		apiError(w, http.StatusNotFound, "No such container: "+id)
	case r.Method == http.MethodDelete && strings.HasPrefix(path, "/networks/"):
		id := strings.TrimPrefix(path, "/networks/")
		if msg, ok := f.fail["network "+id]; ok {
			apiError(w, http.StatusForbidden, msg)
			return
		}
		for i, n := range f.networks {
			if n.ID == id || n.Name == id {
				f.networks = append(f.networks[:i], f.networks[i+1:]...)
				w.WriteHeader(http.StatusNoContent)
				return
			}
		}
		apiError(w, http.StatusNotFound, "network "+id+" not found")
	case r.Method == http.MethodDelete && strings.HasPrefix(path, "/volumes/"):
		name := strings.TrimPrefix(path, "/volumes/")
		if msg, ok := f.fail["volume "+name]; ok {
			apiError(w, http.StatusConflict, msg)
			return
		}
		for i, v := range f.volumes {
			if v.Name == name {
				f.volumes = append(f.volumes[:i], f.volumes[i+1:]...)
				w.WriteHeader(http.StatusNoContent)
				return
			}
		}
		apiError(w, http.StatusNotFound, "get "+name+": no such volume")
	default:
		apiError(w, http.StatusNotImplemented, "fake docker: unexpected "+r.Method+" "+path)
	}
}

// objectLabels are the labels podspawn puts on a session's objects.
func objectLabels(instance string, s *desired.Session, role, service string) map[string]string {
	l := map[string]string{
		observed.LabelManagedBy: observed.ManagedByValue, observed.LabelUser: s.Key.User, observed.LabelProject: s.Key.Project,
		observed.LabelSession: s.ID, observed.LabelInstance: instance, observed.LabelRole: role,
	}
	if service != "" {
		l[observed.LabelService] = service
	}
	return l
}

// addSessionObjects gives s a running session container, a network and,
// for each service, a container and one volume, as a real pass would.
func (f *fakeDocker) addSessionObjects(instance string, s *desired.Session, services ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	created := t0.Add(-time.Hour).Unix()
	f.containers = append(f.containers, container.Summary{ID: "id-" + s.Spec.ContainerName, Names: []string{"/" + s.Spec.ContainerName},
		State: container.StateRunning, Created: created, Labels: objectLabels(instance, s, observed.RoleSession, "")})
	f.networks = append(f.networks, network.Summary{ID: "id-" + s.Spec.NetworkName, Name: s.Spec.NetworkName, Created: t0.Add(-time.Hour),
		Labels: objectLabels(instance, s, observed.RoleSession, "")})
	for _, svc := range services {
		name := s.Spec.ServiceContainerName(svc)
		f.containers = append(f.containers, container.Summary{ID: "id-" + name, Names: []string{"/" + name},
			State: container.StateRunning, Created: created, Labels: objectLabels(instance, s, observed.RoleService, svc)})
		vol := s.Spec.VolumeName(svc, "data")
		f.volumes = append(f.volumes, &volume.Volume{Name: vol, CreatedAt: t0.Add(-time.Hour).Format(time.RFC3339),
			Labels: objectLabels(instance, s, observed.RoleService, svc)})
	}
}

// names lists what the fake still holds, for assertions.
func (f *fakeDocker) names() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.containers {
		out = append(out, "container "+strings.TrimPrefix(c.Names[0], "/"))
	}
	for _, n := range f.networks {
		out = append(out, "network "+n.Name)
	}
	for _, v := range f.volumes {
		out = append(out, "volume "+v.Name)
	}
	sort.Strings(out)
	return out
}

// mutations lists the calls that would change Docker.
func (f *fakeDocker) mutations() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.calls {
		if !strings.HasPrefix(c, "GET ") {
			out = append(out, c)
		}
	}
	return out
}
