package dockeract_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podspawn/podspawn/desired/spec"

	"github.com/podspawn/podspawn/actions/dockeract"

	"github.com/containerd/errdefs"
	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/google/go-cmp/cmp"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/sqlstore"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/reconcile"
)

var now = time.Date(2026, 11, 29, 7, 0, 0, 0, time.UTC)

// object is one Docker object of the fake world.
type object struct {
	ID      string
	Name    string
	Labels  map[string]string
	Image   string `json:",omitempty"`
	Running bool
	Paused  bool `json:",omitempty"`
	Network string
	Mounts  []string
	// StorageOpt is the container's storage driver options.
	StorageOpt map[string]string `json:",omitempty"`
}

// world is the whole fake Docker state, compared with cmp.Diff.
type world struct {
	Containers []object
	Networks   []object
	Volumes    []object
	Images     []string
}

type execRun struct {
	Container string
	User      string
	Cmd       []string
}

// fakeDocker implements dockeract.API over an in-memory world with
// the daemon's semantics that matter here (name conflicts, NotFound, the
// volume create that returns an existing volume). Hook, when set, runs
// first on every call and can fail it.
type fakeDocker struct {
	mu         sync.Mutex
	seq        int
	containers map[string]*object // by ID
	networks   map[string]*object // by ID
	volumes    map[string]*object // by name
	images     map[string]bool
	registry   map[string]bool // images a pull can fetch
	execExit   int
	execOutput string
	execs      map[string]execRun
	execPeers  chan net.Conn // when set, an attach hands the daemon's end here and streams from it
	ran        []execRun
	calls      []string
	hook       func(method, ref string) error
	// started holds the containers that were ever started (by ID);
	// dieOnStart makes a start leave the container exited at once, as a
	// crash-looping command does; logs is each container's output.
	started    map[string]bool
	dieOnStart bool
	logs       map[string]string
	// noStorageOpt makes a create with storage options fail as overlay2
	// on ext4 does.
	noStorageOpt bool
	// imageConfigs are the images' configurations (none: an empty one);
	// cmds each container's command, exits its exit code, attached the
	// output stream of each container attached to (entrysetup_test.go).
	imageConfigs map[string]*dockerspec.DockerOCIImageConfig
	cmds         map[string][]string
	exits        map[string]int
	attached     map[string]*io.PipeWriter
}

func newFakeDocker() *fakeDocker {
	return &fakeDocker{
		containers: map[string]*object{}, networks: map[string]*object{}, volumes: map[string]*object{},
		images: map[string]bool{"podspawn-test:busybox": true}, registry: map[string]bool{}, execs: map[string]execRun{},
		started: map[string]bool{}, logs: map[string]string{},
		imageConfigs: map[string]*dockerspec.DockerOCIImageConfig{}, cmds: map[string][]string{}, exits: map[string]int{}, attached: map[string]*io.PipeWriter{},
	}
}

func notFound(what, ref string) error {
	return fmt.Errorf("Error response from daemon: No such %s: %s: %w", what, ref, errdefs.ErrNotFound)
}

func conflict(msg string) error {
	return fmt.Errorf("Error response from daemon: %s: %w", msg, errdefs.ErrConflict)
}

// enter records the call and runs the hook. Callers hold f.mu.
func (f *fakeDocker) enter(method, ref string) error {
	f.calls = append(f.calls, method+" "+ref)
	if f.hook != nil {
		return f.hook(method, ref)
	}
	return nil
}

func (f *fakeDocker) newID(prefix string) string {
	f.seq++
	return fmt.Sprintf("%s%060d", prefix, f.seq)
}

func find(m map[string]*object, ref string) *object {
	if o, ok := m[ref]; ok {
		return o
	}
	for _, o := range m {
		if o.Name == ref {
			return o
		}
	}
	return nil
}

func copyLabels(l map[string]string) map[string]string {
	out := make(map[string]string, len(l))
	for k, v := range l {
		out[k] = v
	}
	return out
}

func (f *fakeDocker) ContainerCreate(_ context.Context, cfg *container.Config, host *container.HostConfig, _ *network.NetworkingConfig, _ *ocispec.Platform, name string) (container.CreateResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("ContainerCreate", name); err != nil {
		return container.CreateResponse{}, err
	}
	if o := find(f.containers, name); o != nil {
		return container.CreateResponse{}, conflict(fmt.Sprintf("Conflict. The container name %q is already in use by container %q", "/"+name, o.ID))
	}
	if !f.images[cfg.Image] {
		return container.CreateResponse{}, notFound("image", cfg.Image)
	}
	if f.noStorageOpt && host.StorageOpt != nil {
		return container.CreateResponse{}, fmt.Errorf("Error response from daemon: --storage-opt is supported only for overlay over xfs with 'pquota' mount option: %w", errdefs.ErrInvalidArgument)
	}
	o := &object{ID: f.newID("c"), Name: name, Labels: copyLabels(cfg.Labels), Image: cfg.Image, Network: string(host.NetworkMode), StorageOpt: host.StorageOpt}
	for _, m := range host.Mounts {
		o.Mounts = append(o.Mounts, fmt.Sprintf("%s:%s:%s", m.Type, m.Source, m.Target))
	}
	f.containers[o.ID] = o
	f.cmds[o.ID] = append([]string(nil), cfg.Cmd...)
	return container.CreateResponse{ID: o.ID}, nil
}

func (f *fakeDocker) ContainerStart(_ context.Context, id string, _ container.StartOptions) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("ContainerStart", id); err != nil {
		return err
	}
	o := find(f.containers, id)
	if o == nil {
		return notFound("container", id)
	}
	o.Running = !f.dieOnStart
	f.started[o.ID] = true
	f.runEntrySetup(o)
	return nil
}

func (f *fakeDocker) ContainerUnpause(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("ContainerUnpause", id); err != nil {
		return err
	}
	o := find(f.containers, id)
	if o == nil {
		return notFound("container", id)
	}
	o.Paused = false
	return nil
}

func (f *fakeDocker) ContainerInspect(_ context.Context, id string) (container.InspectResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("ContainerInspect", id); err != nil {
		return container.InspectResponse{}, err
	}
	o := find(f.containers, id)
	if o == nil {
		return container.InspectResponse{}, notFound("container", id)
	}
	status := container.StateExited
	if o.Running {
		status = container.StateRunning
	}
	if o.Paused {
		status = container.StatePaused // Docker also says Running: true
	}
	startedAt := "0001-01-01T00:00:00Z" // what Docker says of a container never started
	if f.started[o.ID] {
		startedAt = now.Format(time.RFC3339Nano)
	}
	return container.InspectResponse{
		ContainerJSONBase: &container.ContainerJSONBase{ID: o.ID, Name: "/" + o.Name, State: &container.State{Status: status, Running: o.Running, Paused: o.Paused, StartedAt: startedAt, ExitCode: f.exits[o.ID]}},
		Config:            &container.Config{Image: o.Image, Labels: copyLabels(o.Labels), Cmd: f.cmds[o.ID]},
	}, nil
}

func (f *fakeDocker) ContainerRemove(_ context.Context, id string, opts container.RemoveOptions) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("ContainerRemove", id); err != nil {
		return err
	}
	o := find(f.containers, id)
	if o == nil {
		return notFound("container", id)
	}
	if o.Running && !opts.Force {
		return conflict("cannot remove container " + o.Name + ": container is running: stop the container before removing or force remove")
	}
	delete(f.containers, o.ID)
	return nil
}

func (f *fakeDocker) ContainerExecCreate(_ context.Context, id string, opts container.ExecOptions) (container.ExecCreateResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("ContainerExecCreate", id); err != nil {
		return container.ExecCreateResponse{}, err
	}
	o := find(f.containers, id)
	if o == nil {
		return container.ExecCreateResponse{}, notFound("container", id)
	}
	if !o.Running {
		return container.ExecCreateResponse{}, conflict("container " + o.ID + " is not running")
	}
	execID := f.newID("e")
	f.execs[execID] = execRun{Container: o.Name, User: opts.User, Cmd: append([]string(nil), opts.Cmd...)}
	return container.ExecCreateResponse{ID: execID}, nil
}

func (f *fakeDocker) ContainerExecAttach(_ context.Context, execID string, _ container.ExecAttachOptions) (types.HijackedResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("ContainerExecAttach", execID); err != nil {
		return types.HijackedResponse{}, err
	}
	run, ok := f.execs[execID]
	if !ok {
		return types.HijackedResponse{}, notFound("exec instance", execID)
	}
	f.ran = append(f.ran, run)
	// The daemon multiplexes stdout and stderr on the hijacked stream.
	var buf bytes.Buffer
	if f.execOutput != "" {
		if _, err := stdcopy.NewStdWriter(&buf, stdcopy.Stderr).Write([]byte(f.execOutput)); err != nil {
			return types.HijackedResponse{}, err
		}
	}
	conn, peer := net.Pipe()
	if f.execPeers != nil {
		f.execPeers <- peer
		return types.HijackedResponse{Conn: conn, Reader: bufio.NewReader(conn)}, nil
	}
	peer.Close()
	return types.HijackedResponse{Conn: conn, Reader: bufio.NewReader(&buf)}, nil
}

func (f *fakeDocker) ContainerExecInspect(_ context.Context, execID string) (container.ExecInspect, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("ContainerExecInspect", execID); err != nil {
		return container.ExecInspect{}, err
	}
	if _, ok := f.execs[execID]; !ok {
		return container.ExecInspect{}, notFound("exec instance", execID)
	}
	return container.ExecInspect{ExecID: execID, ExitCode: f.execExit}, nil
}

func (f *fakeDocker) NetworkCreate(_ context.Context, name string, opts network.CreateOptions) (network.CreateResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("NetworkCreate", name); err != nil {
		return network.CreateResponse{}, err
	}
	if find(f.networks, name) != nil {
		return network.CreateResponse{}, conflict("network with name " + name + " already exists")
	}
	o := &object{ID: f.newID("n"), Name: name, Labels: copyLabels(opts.Labels)}
	f.networks[o.ID] = o
	return network.CreateResponse{ID: o.ID}, nil
}

func (f *fakeDocker) NetworkInspect(_ context.Context, id string, _ network.InspectOptions) (network.Inspect, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("NetworkInspect", id); err != nil {
		return network.Inspect{}, err
	}
	o := find(f.networks, id)
	if o == nil {
		return network.Inspect{}, notFound("network", id)
	}
	return network.Inspect{ID: o.ID, Name: o.Name, Labels: copyLabels(o.Labels)}, nil
}

func (f *fakeDocker) NetworkRemove(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("NetworkRemove", id); err != nil {
		return err
	}
	o := find(f.networks, id)
	if o == nil {
		return notFound("network", id)
	}
	delete(f.networks, o.ID)
	return nil
}

func (f *fakeDocker) VolumeCreate(_ context.Context, opts volume.CreateOptions) (volume.Volume, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("VolumeCreate", opts.Name); err != nil {
		return volume.Volume{}, err
	}
	// Docker returns an existing volume of that name instead of failing.
	if o, ok := f.volumes[opts.Name]; ok {
		return volume.Volume{Name: o.Name, Labels: copyLabels(o.Labels)}, nil
	}
	f.volumes[opts.Name] = &object{ID: opts.Name, Name: opts.Name, Labels: copyLabels(opts.Labels)}
	return volume.Volume{Name: opts.Name, Labels: copyLabels(opts.Labels)}, nil
}

func (f *fakeDocker) VolumeInspect(_ context.Context, id string) (volume.Volume, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("VolumeInspect", id); err != nil {
		return volume.Volume{}, err
	}
	o, ok := f.volumes[id]
	if !ok {
		return volume.Volume{}, notFound("volume", id)
	}
	return volume.Volume{Name: o.Name, Labels: copyLabels(o.Labels)}, nil
}

func (f *fakeDocker) VolumeRemove(_ context.Context, id string, _ bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("VolumeRemove", id); err != nil {
		return err
	}
	if _, ok := f.volumes[id]; !ok {
		return notFound("volume", id)
	}
	delete(f.volumes, id)
	return nil
}

func (f *fakeDocker) ImagePull(_ context.Context, ref string, _ image.PullOptions) (io.ReadCloser, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("ImagePull", ref); err != nil {
		return nil, err
	}
	if !f.registry[ref] {
		return nil, notFound("image", ref+" (pull access denied, repository does not exist or may require 'docker login')")
	}
	f.images[ref] = true
	return io.NopCloser(strings.NewReader(`{"status":"Pulling from library/x"}` + "\n" + `{"status":"Downloaded newer image"}` + "\n")), nil
}

// ContainerLogs streams the container's output multiplexed, as Docker
// does for a container without a TTY, from the last tail lines.
func (f *fakeDocker) ContainerLogs(_ context.Context, id string, opts container.LogsOptions) (io.ReadCloser, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("ContainerLogs", id+" tail="+opts.Tail); err != nil {
		return nil, err
	}
	o := find(f.containers, id)
	if o == nil {
		return nil, notFound("container", id)
	}
	lines := strings.SplitAfter(f.logs[o.ID], "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	var n int
	fmt.Sscan(opts.Tail, &n)
	if n < len(lines) {
		lines = lines[len(lines)-n:]
	}
	var buf bytes.Buffer
	for i, l := range lines {
		stream := stdcopy.Stdout
		if i%2 == 1 {
			stream = stdcopy.Stderr
		}
		stdcopy.NewStdWriter(&buf, stream).Write([]byte(l))
	}
	return io.NopCloser(&buf), nil
}

func (f *fakeDocker) put(kind observed.Kind, o object) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if o.ID == "" {
		o.ID = f.newID(string(kind[0]))
	}
	switch kind {
	case observed.KindContainer:
		f.containers[o.ID] = &o
	case observed.KindNetwork:
		f.networks[o.ID] = &o
	default:
		o.ID = o.Name
		f.volumes[o.Name] = &o
	}
}

func sorted(m map[string]*object) []object {
	var out []object
	for _, o := range m {
		c := *o
		c.Labels = copyLabels(o.Labels)
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (f *fakeDocker) world() world {
	f.mu.Lock()
	defer f.mu.Unlock()
	w := world{Containers: sorted(f.containers), Networks: sorted(f.networks), Volumes: sorted(f.volumes)}
	for i := range f.images {
		w.Images = append(w.Images, i)
	}
	sort.Strings(w.Images)
	return w
}

func (f *fakeDocker) callLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeDocker) execsRun() []execRun {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]execRun(nil), f.ran...)
}

// fixture is an executor over the fake Docker and a real store.
type fixture struct {
	docker *fakeDocker
	store  *sqlstore.Store
	exec   *dockeract.Executor
	sess   *desired.Session
}

const instance = "inst-1"

func newFixture(t *testing.T) *fixture {
	t.Helper()
	st, err := sqlstore.Open(context.Background(), filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	k := desired.SessionKey{User: "alice", Project: "web"}
	sess := &desired.Session{
		Key: k, ID: sqlstore.NewSessionID(), Mode: desired.ModeGracePeriod, Status: desired.StatusCreating,
		CreatedAt: now.Add(-time.Minute), MaxLifetimeAt: now.Add(8 * time.Hour), GracePeriod: time.Minute,
		Spec: desired.Spec{Image: "podspawn-test:busybox", Shell: "/bin/sh", ContainerName: desired.ContainerName(k), NetworkName: desired.NetworkName(k)},
	}
	if err := st.Create(context.Background(), sess, now.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	d := newFakeDocker()
	return &fixture{docker: d, store: st, sess: sess, exec: &dockeract.Executor{API: d, Store: st, Now: func() time.Time { return now }}}
}

func (f *fixture) labels(role, service string) map[string]string {
	l := map[string]string{
		observed.LabelManagedBy: observed.ManagedByValue, observed.LabelUser: f.sess.Key.User, observed.LabelProject: f.sess.Key.Project,
		observed.LabelSession: f.sess.ID, observed.LabelInstance: instance, observed.LabelRole: role,
	}
	if service != "" {
		l[observed.LabelService] = service
	}
	return l
}

func (f *fixture) action(kind reconcile.Kind, target string) reconcile.Action {
	a := reconcile.Action{Kind: kind, Key: f.sess.Key, Target: target, SessionID: f.sess.ID, Reason: reconcile.ReasonSessionCreating}
	switch kind {
	case reconcile.KindCreateNetwork:
		a.Labels = f.labels(observed.RoleSession, "")
	case reconcile.KindCreateVolume:
		a.Labels = f.labels(observed.RoleService, "db")
	case reconcile.KindCreateContainer:
		a.Labels = f.labels(observed.RoleSession, "")
		a.Container = &spec.Container{
			Role: observed.RoleSession, Image: "podspawn-test:busybox", Cmd: []string{"sleep", "infinity"},
			Network: f.sess.Spec.NetworkName, Aliases: []string{f.sess.Spec.ContainerName}, User: "alice", Shell: "/bin/sh",
		}
	}
	return a
}

func (f *fixture) serviceAction() reconcile.Action {
	a := f.action(reconcile.KindCreateContainer, f.sess.Spec.ServiceContainerName("db"))
	a.Reason = reconcile.ReasonSessionCreating
	a.Labels = f.labels(observed.RoleService, "db")
	a.Container = &spec.Container{
		Role: observed.RoleService, Image: "podspawn-test:busybox", Cmd: []string{"sleep", "infinity"}, Network: f.sess.Spec.NetworkName,
		Volumes: []desired.VolumeMount{{Name: f.sess.Spec.VolumeName("db", "data"), Target: "/data"}},
	}
	return a
}

func (f *fixture) setStatus(t *testing.T, st desired.Status) {
	t.Helper()
	q := `UPDATE sessions SET status = ?, grace_expiry = NULL WHERE id = ?`
	if st == desired.StatusGrace {
		q = `UPDATE sessions SET status = ?, grace_expiry = 1 WHERE id = ?`
	}
	if _, err := f.store.DB().Exec(q, string(st), f.sess.ID); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) row(t *testing.T) *desired.Session {
	t.Helper()
	s, err := f.store.LoadKey(context.Background(), f.sess.Key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestFakeErrorsAreRecognisedLikeDockers(t *testing.T) {
	if !errdefs.IsNotFound(notFound("container", "x")) {
		t.Fatal("errdefs.IsNotFound does not recognise the fake's NotFound")
	}
	if !errdefs.IsConflict(conflict("name in use")) {
		t.Fatal("errdefs.IsConflict does not recognise the fake's Conflict")
	}
	if errdefs.IsNotFound(conflict("x")) || errdefs.IsConflict(notFound("a", "b")) {
		t.Fatal("fake errors are recognised as the wrong class")
	}
}

// TestEveryKindIsIdempotent executes each action kind twice: the first
// run changes the world, the second finds it done.
func TestEveryKindIsIdempotent(t *testing.T) {
	type tc struct {
		setup  func(t *testing.T, f *fixture) reconcile.Action
		check  func(t *testing.T, f *fixture)
		execs  int
		remain world
	}
	cases := map[string]tc{
		"create-network": {
			setup: func(t *testing.T, f *fixture) reconcile.Action {
				return f.action(reconcile.KindCreateNetwork, f.sess.Spec.NetworkName)
			},
			check: func(t *testing.T, f *fixture) {
				w := f.docker.world()
				if len(w.Networks) != 1 || w.Networks[0].Name != "podspawn-alice-web-net" || !cmp.Equal(w.Networks[0].Labels, f.labels(observed.RoleSession, "")) {
					t.Fatalf("networks = %+v, want podspawn-alice-web-net with the session's labels", w.Networks)
				}
			},
		},
		"create-volume": {
			setup: func(t *testing.T, f *fixture) reconcile.Action {
				return f.action(reconcile.KindCreateVolume, f.sess.Spec.VolumeName("db", "data"))
			},
			check: func(t *testing.T, f *fixture) {
				w := f.docker.world()
				if len(w.Volumes) != 1 || w.Volumes[0].Name != "podspawn-alice-web-db-data" || !cmp.Equal(w.Volumes[0].Labels, f.labels(observed.RoleService, "db")) {
					t.Fatalf("volumes = %+v, want podspawn-alice-web-db-data with the service's labels", w.Volumes)
				}
			},
		},
		"create-container session": {
			setup: func(t *testing.T, f *fixture) reconcile.Action {
				return f.action(reconcile.KindCreateContainer, f.sess.Spec.ContainerName)
			},
			check: func(t *testing.T, f *fixture) {
				w := f.docker.world()
				if len(w.Containers) != 1 || !w.Containers[0].Running || w.Containers[0].Network != "podspawn-alice-web-net" {
					t.Fatalf("containers = %+v, want one running on the session network", w.Containers)
				}
				runs := f.docker.execsRun()
				// The image runs as root without an entrypoint: the
				// container's command sets up the account.
				if len(runs) != 1 || runs[0].User != "(command)" || runs[0].Container != "podspawn-alice-web" ||
					!cmp.Equal(runs[0].Cmd, []string{"podspawn-setup", "alice", "/bin/sh"}) {
					t.Fatalf("execs = %+v, want the user setup once, by the container's command, for alice with /bin/sh", runs)
				}
			},
			execs: 1,
		},
		"create-container service": {
			setup: func(t *testing.T, f *fixture) reconcile.Action { return f.serviceAction() },
			check: func(t *testing.T, f *fixture) {
				w := f.docker.world()
				if len(w.Containers) != 1 || !w.Containers[0].Running || !cmp.Equal(w.Containers[0].Mounts, []string{"volume:podspawn-alice-web-db-data:/data"}) {
					t.Fatalf("containers = %+v, want the running service with its volume", w.Containers)
				}
				if runs := f.docker.execsRun(); len(runs) != 0 {
					t.Fatalf("execs = %+v, want none for a service", runs)
				}
			},
		},
		"remove-container": {
			setup: func(t *testing.T, f *fixture) reconcile.Action {
				f.docker.put(observed.KindContainer, object{ID: "c-1", Name: "podspawn-alice-web", Labels: f.labels(observed.RoleSession, ""), Running: true})
				a := f.action(reconcile.KindRemoveContainer, "podspawn-alice-web")
				a.TargetID = "c-1"
				return a
			},
		},
		"remove-network": {
			setup: func(t *testing.T, f *fixture) reconcile.Action {
				f.docker.put(observed.KindNetwork, object{ID: "n-1", Name: "podspawn-alice-web-net", Labels: f.labels(observed.RoleSession, "")})
				a := f.action(reconcile.KindRemoveNetwork, "podspawn-alice-web-net")
				a.TargetID = "n-1"
				return a
			},
		},
		"remove-volume": {
			setup: func(t *testing.T, f *fixture) reconcile.Action {
				f.docker.put(observed.KindVolume, object{Name: "podspawn-alice-web-db-data", Labels: f.labels(observed.RoleService, "db")})
				return f.action(reconcile.KindRemoveVolume, "podspawn-alice-web-db-data")
			},
		},
		"mark-running": {
			setup: func(t *testing.T, f *fixture) reconcile.Action {
				return f.action(reconcile.KindMarkRunning, "session alice@web")
			},
			check: func(t *testing.T, f *fixture) {
				if s := f.row(t); s.Status != desired.StatusRunning {
					t.Fatalf("status = %s, want running", s.Status)
				}
			},
		},
		"start-grace": {
			setup: func(t *testing.T, f *fixture) reconcile.Action {
				f.setStatus(t, desired.StatusRunning)
				a := f.action(reconcile.KindStartGrace, "session alice@web")
				a.At = now.Add(time.Minute)
				return a
			},
			check: func(t *testing.T, f *fixture) {
				if s := f.row(t); s.Status != desired.StatusGrace || !s.GraceExpiry.Equal(now.Add(time.Minute)) {
					t.Fatalf("status = %s until %s, want grace_period until %s", s.Status, s.GraceExpiry, now.Add(time.Minute))
				}
			},
		},
		"cancel-grace": {
			setup: func(t *testing.T, f *fixture) reconcile.Action {
				f.setStatus(t, desired.StatusGrace)
				return f.action(reconcile.KindCancelGrace, "session alice@web")
			},
			check: func(t *testing.T, f *fixture) {
				if s := f.row(t); s.Status != desired.StatusRunning || !s.GraceExpiry.IsZero() {
					t.Fatalf("status = %s until %s, want running with no grace expiry", s.Status, s.GraceExpiry)
				}
			},
		},
		"mark-terminating": {
			setup: func(t *testing.T, f *fixture) reconcile.Action {
				a := f.action(reconcile.KindMarkTerminating, "session alice@web")
				a.Reason = reconcile.ReasonUserRequested
				return a
			},
			check: func(t *testing.T, f *fixture) {
				if s := f.row(t); s.Status != desired.StatusTerminating || s.TerminateReason != "user-requested" {
					t.Fatalf("status = %s (%q), want terminating (user-requested)", s.Status, s.TerminateReason)
				}
			},
		},
		"delete-session": {
			setup: func(t *testing.T, f *fixture) reconcile.Action {
				f.setStatus(t, desired.StatusTerminating)
				return f.action(reconcile.KindDeleteSession, "session alice@web")
			},
			check: func(t *testing.T, f *fixture) {
				if s := f.row(t); s != nil {
					t.Fatalf("row still there: %+v", s)
				}
			},
		},
		"reset-restarts": {
			setup: func(t *testing.T, f *fixture) reconcile.Action {
				if _, err := f.store.RecordRestart(context.Background(), f.sess.ID, 4, now.Add(8*time.Second), now.Add(-10*time.Minute)); err != nil {
					t.Fatal(err)
				}
				return f.action(reconcile.KindResetRestarts, "session alice@web")
			},
			check: func(t *testing.T, f *fixture) {
				if s := f.row(t); s.RestartCount != 0 || !s.NextRestartAt.IsZero() {
					t.Fatalf("restarts = %d, next at %s; want 0 and none", s.RestartCount, s.NextRestartAt)
				}
			},
		},
		"release-lease": {
			setup: func(t *testing.T, f *fixture) reconcile.Action {
				id, err := f.store.AddLease(context.Background(), f.sess.ID, 4242, 99, now)
				if err != nil {
					t.Fatal(err)
				}
				a := f.action(reconcile.KindReleaseLease, "session alice@web")
				a.LeaseID = id
				return a
			},
			check: func(t *testing.T, f *fixture) {
				if s := f.row(t); len(s.Leases) != 0 {
					t.Fatalf("leases = %+v, want none", s.Leases)
				}
			},
		},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			a := c.setup(t, f)
			ctx := context.Background()
			var got []actions.Outcome
			for range 2 {
				o, err := f.exec.Execute(ctx, a)
				if err != nil {
					t.Fatalf("Execute(%s): %v", a.Kind, err)
				}
				got = append(got, o)
			}
			if diff := cmp.Diff([]actions.Outcome{actions.Changed, actions.Unchanged}, got); diff != "" {
				t.Fatalf("outcomes of two runs (-want +got):\n%s", diff)
			}
			if c.check != nil {
				c.check(t, f)
			}
			if strings.HasPrefix(name, "remove-") {
				if diff := cmp.Diff(world{Images: []string{"podspawn-test:busybox"}}, f.docker.world()); diff != "" {
					t.Fatalf("world after removal (-want +got):\n%s", diff)
				}
			}
		})
	}
}

// TestRemovePinsTheObjectSeenWhenPlanning: a same-named object that
// replaced the planned one (another generation) is not removed.
func TestRemovePinsTheObjectSeenWhenPlanning(t *testing.T) {
	for _, kind := range []observed.Kind{observed.KindContainer, observed.KindNetwork} {
		t.Run(string(kind), func(t *testing.T) {
			f := newFixture(t)
			name := "podspawn-alice-web"
			rk := reconcile.KindRemoveContainer
			if kind == observed.KindNetwork {
				name, rk = "podspawn-alice-web-net", reconcile.KindRemoveNetwork
			}
			f.docker.put(kind, object{ID: "replacement", Name: name, Labels: f.labels(observed.RoleSession, ""), Running: true})
			before := f.docker.world()
			a := f.action(rk, name)
			a.TargetID = "planned-and-gone"
			o, err := f.exec.Execute(context.Background(), a)
			if err != nil || o != actions.Unchanged {
				t.Fatalf("Execute = %q, %v; want unchanged, nil", o, err)
			}
			if diff := cmp.Diff(before, f.docker.world()); diff != "" {
				t.Fatalf("the replacement was touched (-before +after):\n%s", diff)
			}
		})
	}
}

func TestRemoveFailureIsReturned(t *testing.T) {
	f := newFixture(t)
	f.docker.put(observed.KindNetwork, object{ID: "n-1", Name: "podspawn-alice-web-net", Labels: f.labels(observed.RoleSession, "")})
	f.docker.hook = func(method, _ string) error {
		if method == "NetworkRemove" {
			return errors.New("Error response from daemon: error while removing network: network podspawn-alice-web-net has active endpoints")
		}
		return nil
	}
	a := f.action(reconcile.KindRemoveNetwork, "podspawn-alice-web-net")
	a.TargetID = "n-1"
	_, err := f.exec.Execute(context.Background(), a)
	for _, want := range []string{
		"remove-network podspawn-alice-web-net: ", "active endpoints", "a container outside this session is attached",
		"docker network inspect podspawn-alice-web-net", "docker network disconnect podspawn-alice-web-net <container>",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("err = %v, want the daemon's error prefixed with the action and target, saying what to do; missing %q", err, want)
		}
	}
	if errors.Is(err, actions.ErrTerminal) {
		t.Fatal("a busy network is transient, not terminal")
	}

	// Any other refusal is returned as is.
	f.docker.hook = func(method, _ string) error {
		if method == "NetworkRemove" {
			return errors.New("Error response from daemon: something else")
		}
		return nil
	}
	_, err = f.exec.Execute(context.Background(), a)
	if err == nil || err.Error() != "remove-network podspawn-alice-web-net: Error response from daemon: something else" {
		t.Fatalf("err = %v, want the daemon's error with only the action and target added", err)
	}
}

// TestCreateNetworkWithoutAddressSpaceSaysWhatToFix: Docker's default
// pools run out after about 30 session networks; the error must say how
// to give Docker more, and stay retryable (ending sessions free ranges).
func TestCreateNetworkWithoutAddressSpaceSaysWhatToFix(t *testing.T) {
	f := newFixture(t)
	f.docker.hook = func(method, _ string) error {
		if method == "NetworkCreate" {
			return errors.New("Error response from daemon: could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network")
		}
		return nil
	}
	_, err := f.exec.Execute(context.Background(), f.action(reconcile.KindCreateNetwork, "podspawn-alice-web-net"))
	for _, want := range []string{"create-network podspawn-alice-web-net: ", "non-overlapping IPv4 address pool", "default-address-pools", "/etc/docker/daemon.json"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("err = %v, want it to contain %q", err, want)
		}
	}
	if errors.Is(err, actions.ErrTerminal) {
		t.Fatal("exhausted pools are transient (ending sessions free ranges), not terminal")
	}
}

// TestCreateRefusesWhatIsNotOurs: an object in the way that is not this
// session generation's is never adopted nor touched, and the error says
// what it is and what to do.
func TestCreateRefusesWhatIsNotOurs(t *testing.T) {
	owners := map[string]struct {
		labels func(f *fixture) map[string]string
		who    string
	}{
		"unmanaged": {
			labels: func(*fixture) map[string]string { return map[string]string{"com.example.team": "db"} },
			who:    "is not managed by podspawn",
		},
		"other session": {
			labels: func(f *fixture) map[string]string {
				l := f.labels(observed.RoleSession, "")
				l[observed.LabelSession] = "older-generation"
				return l
			},
			who: `belongs to another session (user "alice", project "web", session "older-generation")`,
		},
		"other instance": {
			labels: func(f *fixture) map[string]string {
				l := f.labels(observed.RoleSession, "")
				l[observed.LabelInstance] = "inst-2"
				return l
			},
			who: `belongs to another podspawn state database (instance "inst-2")`,
		},
	}
	kinds := map[string]struct {
		kind   observed.Kind
		action func(f *fixture) reconcile.Action
	}{
		"container": {observed.KindContainer, func(f *fixture) reconcile.Action {
			return f.action(reconcile.KindCreateContainer, f.sess.Spec.ContainerName)
		}},
		"network": {observed.KindNetwork, func(f *fixture) reconcile.Action {
			return f.action(reconcile.KindCreateNetwork, f.sess.Spec.NetworkName)
		}},
		"volume": {observed.KindVolume, func(f *fixture) reconcile.Action {
			return f.action(reconcile.KindCreateVolume, f.sess.Spec.VolumeName("db", "data"))
		}},
	}
	for kname, k := range kinds {
		for oname, owner := range owners {
			t.Run(kname+"/"+oname, func(t *testing.T) {
				f := newFixture(t)
				a := k.action(f)
				f.docker.put(k.kind, object{Name: a.Target, Labels: owner.labels(f), Image: "postgres:16"})
				before := f.docker.world()

				o, err := f.exec.Execute(context.Background(), a)
				if !errors.Is(err, actions.ErrTerminal) {
					t.Fatalf("Execute = %q, %v; want an error wrapping ErrTerminal", o, err)
				}
				for _, want := range []string{kname + " " + a.Target + " already exists", owner.who, "remove or rename it"} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not contain %q", err, want)
					}
				}
				if diff := cmp.Diff(before, f.docker.world()); diff != "" {
					t.Fatalf("the foreign object was touched (-before +after):\n%s", diff)
				}
				for _, c := range f.docker.callLog() {
					if m := strings.Fields(c)[0]; strings.Contains(m, "Remove") || m == "ContainerStart" || m == "ContainerExecCreate" {
						t.Fatalf("executor called %s on an object that is not its own", c)
					}
				}
			})
		}
	}
}

func TestCreateAdoptsItsOwnObjects(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.docker.put(observed.KindNetwork, object{Name: f.sess.Spec.NetworkName, Labels: f.labels(observed.RoleSession, "")})
	f.docker.put(observed.KindVolume, object{Name: f.sess.Spec.VolumeName("db", "data"), Labels: f.labels(observed.RoleService, "db")})
	f.docker.put(observed.KindContainer, object{Name: f.sess.Spec.ContainerName, Labels: f.labels(observed.RoleSession, ""), Image: "podspawn-test:busybox", Running: true})
	before := f.docker.world()
	for _, a := range []reconcile.Action{
		f.action(reconcile.KindCreateNetwork, f.sess.Spec.NetworkName),
		f.action(reconcile.KindCreateVolume, f.sess.Spec.VolumeName("db", "data")),
		f.action(reconcile.KindCreateContainer, f.sess.Spec.ContainerName),
	} {
		o, err := f.exec.Execute(ctx, a)
		if err != nil || o != actions.Unchanged {
			t.Fatalf("%s: Execute = %q, %v; want unchanged (adopted), nil", a.Kind, o, err)
		}
	}
	if diff := cmp.Diff(before, f.docker.world()); diff != "" {
		t.Fatalf("adopting changed the world (-before +after):\n%s", diff)
	}
	if runs := f.docker.execsRun(); len(runs) != 0 {
		t.Fatalf("execs = %+v, want none for a running adopted container", runs)
	}
}

// A paused session container is not running: the plan asks to start it
// again, and the executor unpauses it rather than reporting it unchanged
// on every pass.
func TestCreateUnpausesAPausedOwnContainer(t *testing.T) {
	f := newFixture(t)
	f.docker.put(observed.KindContainer, object{ID: "c-own", Name: f.sess.Spec.ContainerName, Labels: f.labels(observed.RoleSession, ""), Image: "podspawn-test:busybox", Running: true, Paused: true})
	o, err := f.exec.Execute(context.Background(), f.action(reconcile.KindCreateContainer, f.sess.Spec.ContainerName))
	if err != nil || o != actions.Changed {
		t.Fatalf("Execute = %q, %v; want changed, nil", o, err)
	}
	want := []object{{ID: "c-own", Name: "podspawn-alice-web", Labels: f.labels(observed.RoleSession, ""), Image: "podspawn-test:busybox", Running: true}}
	if diff := cmp.Diff(want, f.docker.world().Containers); diff != "" {
		t.Fatalf("containers (-want +got):\n%s", diff)
	}
	if runs := f.docker.execsRun(); len(runs) != 0 {
		t.Fatalf("execs = %+v, want none: the account is there already", runs)
	}
}

func TestCreateStartsAStoppedOwnContainer(t *testing.T) {
	f := newFixture(t)
	f.docker.put(observed.KindContainer, object{ID: "c-own", Name: f.sess.Spec.ContainerName, Labels: f.labels(observed.RoleSession, ""), Image: "podspawn-test:busybox"})
	o, err := f.exec.Execute(context.Background(), f.action(reconcile.KindCreateContainer, f.sess.Spec.ContainerName))
	if err != nil || o != actions.Changed {
		t.Fatalf("Execute = %q, %v; want changed, nil", o, err)
	}
	w := f.docker.world()
	want := []object{{ID: "c-own", Name: "podspawn-alice-web", Labels: f.labels(observed.RoleSession, ""), Image: "podspawn-test:busybox", Running: true}}
	if diff := cmp.Diff(want, w.Containers); diff != "" {
		t.Fatalf("containers (-want +got):\n%s", diff)
	}
	if runs := f.docker.execsRun(); len(runs) != 1 || runs[0].Container != "podspawn-alice-web" {
		t.Fatalf("execs = %+v, want the user setup once", runs)
	}
}

func TestCreateContainerImage(t *testing.T) {
	t.Run("pulled when missing", func(t *testing.T) {
		f := newFixture(t)
		f.docker.registry["postgres:16"] = true
		a := f.serviceAction()
		a.Container.Image = "postgres:16"
		o, err := f.exec.Execute(context.Background(), a)
		if err != nil || o != actions.Changed {
			t.Fatalf("Execute = %q, %v; want changed, nil", o, err)
		}
		if w := f.docker.world(); len(w.Containers) != 1 || w.Containers[0].Image != "postgres:16" || !w.Containers[0].Running {
			t.Fatalf("containers = %+v, want postgres:16 running", w.Containers)
		}
	})
	t.Run("missing and not pullable", func(t *testing.T) {
		f := newFixture(t)
		a := f.serviceAction()
		a.Container.Image = "podspawn-nope:1"
		before := f.docker.world()
		_, err := f.exec.Execute(context.Background(), a)
		if err == nil || !strings.Contains(err.Error(), "image podspawn-nope:1 is not available locally and could not be pulled (build it or pull it first)") {
			t.Fatalf("err = %v, want one saying the image is missing and what to do", err)
		}
		if diff := cmp.Diff(before, f.docker.world()); diff != "" {
			t.Fatalf("world changed (-before +after):\n%s", diff)
		}
	})
}

// TestCreateContainerUserSetupFailure: when the account cannot be set up,
// the container is not left running without it. The planner never plans
// a create for a running container, so a container left behind would be
// marked running without its user and never repaired.
func TestCreateContainerUserSetupFailure(t *testing.T) {
	f := newFixture(t)
	f.docker.execExit = 1
	f.docker.execOutput = "sh: grep: not found\n"
	a := f.action(reconcile.KindCreateContainer, f.sess.Spec.ContainerName)
	_, err := f.exec.Execute(context.Background(), a)
	if err == nil || !strings.Contains(err.Error(), "setting up user alice in the container: script exited 1: sh: grep: not found") {
		t.Fatalf("err = %v, want the setup script's exit code and output", err)
	}
	if w := f.docker.world(); len(w.Containers) != 0 {
		t.Fatalf("containers = %+v, want none left behind", w.Containers)
	}

	// The retry starts over and, with a working image, succeeds.
	f.docker.execExit, f.docker.execOutput = 0, ""
	o, err := f.exec.Execute(context.Background(), a)
	if err != nil || o != actions.Changed {
		t.Fatalf("retry: Execute = %q, %v; want changed, nil", o, err)
	}
	if runs := f.docker.execsRun(); len(runs) != 2 {
		t.Fatalf("execs = %+v, want the setup run again on the retry", runs)
	}
}

func TestCreateContainerStartFailureIsRetriedByStarting(t *testing.T) {
	f := newFixture(t)
	starts := 0
	f.docker.hook = func(method, _ string) error {
		if method == "ContainerStart" {
			starts++
			if starts == 1 {
				return errors.New("Error response from daemon: failed to create task for container: OCI runtime create failed")
			}
		}
		return nil
	}
	a := f.action(reconcile.KindCreateContainer, f.sess.Spec.ContainerName)
	if _, err := f.exec.Execute(context.Background(), a); err == nil || !strings.Contains(err.Error(), "starting: ") {
		t.Fatalf("err = %v, want the start failure", err)
	}
	o, err := f.exec.Execute(context.Background(), a)
	if err != nil || o != actions.Changed {
		t.Fatalf("retry: Execute = %q, %v; want changed (the existing container was started), nil", o, err)
	}
	if w := f.docker.world(); len(w.Containers) != 1 || !w.Containers[0].Running {
		t.Fatalf("containers = %+v, want exactly one, running", w.Containers)
	}
}

func TestUnknownKindIsAnError(t *testing.T) {
	f := newFixture(t)
	_, err := f.exec.Execute(context.Background(), reconcile.Action{Kind: "frobnicate", Target: "x"})
	if err == nil || !strings.Contains(err.Error(), `unknown action kind "frobnicate"`) {
		t.Fatalf("err = %v", err)
	}
}

func TestCreateContainerWithoutSpecIsTerminal(t *testing.T) {
	f := newFixture(t)
	a := f.action(reconcile.KindCreateContainer, f.sess.Spec.ContainerName)
	a.Container = nil
	if _, err := f.exec.Execute(context.Background(), a); !errors.Is(err, actions.ErrTerminal) {
		t.Fatalf("err = %v, want ErrTerminal", err)
	}
}

func TestExecReturnsExitCodeAndOutput(t *testing.T) {
	d := newFakeDocker()
	d.put(observed.KindContainer, object{ID: "c-1", Name: "podspawn-alice", Running: true})
	d.execExit, d.execOutput = 3, "no such user\n"
	code, out, err := dockeract.Exec(context.Background(), d, "c-1", []string{"id", "alice"}, "root")
	if err != nil || code != 3 || out != "no such user\n" {
		t.Fatalf("Exec = %d, %q, %v; want 3, %q, nil", code, out, err, "no such user\n")
	}
	if diff := cmp.Diff([]execRun{{Container: "podspawn-alice", User: "root", Cmd: []string{"id", "alice"}}}, d.execsRun()); diff != "" {
		t.Fatalf("exec (-want +got):\n%s", diff)
	}
	if _, _, err := dockeract.Exec(context.Background(), d, "c-gone", []string{"true"}, "root"); !errdefs.IsNotFound(err) {
		t.Fatalf("Exec in a missing container: err = %v, want NotFound", err)
	}
}

// TestExecGivesUpWhenTheContextEnds: the hijacked stream ignores ctx, so
// a command that hangs must still release the caller when ctx ends.
func TestExecGivesUpWhenTheContextEnds(t *testing.T) {
	d := newFakeDocker()
	d.put(observed.KindContainer, object{ID: "c-1", Name: "podspawn-alice", Running: true})
	d.execPeers = make(chan net.Conn, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		code int
		out  string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		code, out, err := dockeract.Exec(ctx, d, "c-1", []string{"sh", "-c", "sleep infinity"}, "root")
		done <- result{code, out, err}
	}()
	var peer net.Conn
	select {
	case peer = <-d.execPeers:
	case <-time.After(20 * time.Second):
		t.Fatal("Exec never attached")
	}
	defer peer.Close()
	// net.Pipe is synchronous: once this write returns, Exec is reading
	// the stream, and the command never ends on its own.
	if _, err := stdcopy.NewStdWriter(peer, stdcopy.Stdout).Write([]byte("started\n")); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case r := <-done:
		if r.code != -1 || r.out != "started\n" || !errors.Is(r.err, context.Canceled) || !strings.Contains(r.err.Error(), "did not finish") {
			t.Fatalf("Exec = %d, %q, %v; want -1, %q and an error wrapping context.Canceled", r.code, r.out, r.err, "started\n")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Exec still blocked after its context was cancelled")
	}
}
