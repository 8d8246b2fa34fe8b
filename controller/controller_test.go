package controller_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podspawn/podspawn/observed/dockerobs"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/go-logr/logr/funcr"
	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/controller"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/sqlstore"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/observed/proc"
	"github.com/podspawn/podspawn/reconcile"
)

// world is an in-memory Docker for dockerobs.API: labelled containers,
// networks and volumes, listed with label filters as the daemon does.
type world struct {
	mu         sync.Mutex
	containers map[string]container.Summary // by name
	networks   map[string]network.Summary   // by name
	volumes    map[string]volume.Volume     // by name
	listErr    error
	seq        int
}

func newWorld() *world {
	return &world{containers: map[string]container.Summary{}, networks: map[string]network.Summary{}, volumes: map[string]volume.Volume{}}
}

func labelsMatch(f filters.Args, labels map[string]string) bool {
	for _, kv := range f.Get("label") {
		k, v, hasValue := strings.Cut(kv, "=")
		got, ok := labels[k]
		if !ok || (hasValue && got != v) {
			return false
		}
	}
	return true
}

func (w *world) ContainerList(_ context.Context, o container.ListOptions) ([]container.Summary, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.listErr != nil {
		return nil, w.listErr
	}
	var out []container.Summary
	for _, c := range w.containers {
		if (o.All || c.State == container.StateRunning) && labelsMatch(o.Filters, c.Labels) {
			out = append(out, c)
		}
	}
	return out, nil
}

func (w *world) NetworkList(_ context.Context, o network.ListOptions) ([]network.Summary, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.listErr != nil {
		return nil, w.listErr
	}
	var out []network.Summary
	for _, n := range w.networks {
		if labelsMatch(o.Filters, n.Labels) {
			out = append(out, n)
		}
	}
	return out, nil
}

func (w *world) VolumeList(_ context.Context, o volume.ListOptions) (volume.ListResponse, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.listErr != nil {
		return volume.ListResponse{}, w.listErr
	}
	var out volume.ListResponse
	for _, v := range w.volumes {
		if labelsMatch(o.Filters, v.Labels) {
			out.Volumes = append(out.Volumes, &v)
		}
	}
	return out, nil
}

func (w *world) failLists(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.listErr = err
}

func (w *world) addContainer(name string, labels map[string]string, running bool, created time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seq++
	state := container.StateExited
	if running {
		state = container.StateRunning
	}
	w.containers[name] = container.Summary{ID: fmt.Sprintf("c%04d", w.seq), Names: []string{"/" + name}, Labels: labels, State: state, Created: created.Unix()}
}

func (w *world) addNetwork(name string, labels map[string]string, created time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seq++
	w.networks[name] = network.Summary{ID: fmt.Sprintf("n%04d", w.seq), Name: name, Labels: labels, Created: created}
}

// remove deletes the object of kind named name whose ID is id (any ID when
// id is empty) and reports whether it existed.
func (w *world) remove(kind observed.Kind, name, id string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch kind {
	case observed.KindContainer:
		if c, ok := w.containers[name]; ok && (id == "" || c.ID == id) {
			delete(w.containers, name)
			return true
		}
	case observed.KindNetwork:
		if n, ok := w.networks[name]; ok && (id == "" || n.ID == id) {
			delete(w.networks, name)
			return true
		}
	default:
		if _, ok := w.volumes[name]; ok {
			delete(w.volumes, name)
			return true
		}
	}
	return false
}

// names lists what exists as kind/name[:state], sorted.
func (w *world) names() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for n, c := range w.containers {
		out = append(out, "container/"+n+":"+c.State)
	}
	for n := range w.networks {
		out = append(out, "network/"+n)
	}
	for n := range w.volumes {
		out = append(out, "volume/"+n)
	}
	sort.Strings(out)
	return out
}

// fakeExecutor applies actions to the real store and the in-memory world.
// Intercept, when set, sees every call first (controller-runtime
// interceptor style) and may inject an error or a panic, or call next.
type fakeExecutor struct {
	store *sqlstore.Store
	world *world
	now   func() time.Time

	mu        sync.Mutex
	intercept func(ctx context.Context, a reconcile.Action, next actions.Executor) (actions.Outcome, error)
	calls     []reconcile.Action
}

func (e *fakeExecutor) setIntercept(f func(ctx context.Context, a reconcile.Action, next actions.Executor) (actions.Outcome, error)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.intercept = f
}

func (e *fakeExecutor) Execute(ctx context.Context, a reconcile.Action) (actions.Outcome, error) {
	e.mu.Lock()
	e.calls = append(e.calls, a)
	f := e.intercept
	e.mu.Unlock()
	if f != nil {
		return f(ctx, a, applier{e})
	}
	return e.apply(ctx, a)
}

type applier struct{ e *fakeExecutor }

func (a applier) Execute(ctx context.Context, act reconcile.Action) (actions.Outcome, error) {
	return a.e.apply(ctx, act)
}

func changedOrNot(changed bool, err error) (actions.Outcome, error) {
	switch {
	case err != nil:
		return "", err
	case changed:
		return actions.Changed, nil
	}
	return actions.Unchanged, nil
}

func (e *fakeExecutor) apply(ctx context.Context, a reconcile.Action) (actions.Outcome, error) {
	now := e.now()
	switch a.Kind {
	case reconcile.KindReleaseLease:
		return changedOrNot(e.store.ReleaseLease(ctx, a.LeaseID))
	case reconcile.KindCancelGrace:
		return changedOrNot(e.store.CancelGrace(ctx, a.SessionID, now))
	case reconcile.KindStartGrace:
		return changedOrNot(e.store.StartGrace(ctx, a.SessionID, a.At, now))
	case reconcile.KindMarkTerminating:
		return changedOrNot(e.store.MarkTerminating(ctx, a.SessionID, string(a.Reason), now))
	case reconcile.KindMarkRunning:
		return changedOrNot(e.store.MarkRunning(ctx, a.SessionID, now))
	case reconcile.KindDeleteSession:
		return changedOrNot(e.store.DeleteSession(ctx, a.SessionID))
	case reconcile.KindRemoveContainer:
		return changedOrNot(e.world.remove(observed.KindContainer, a.Target, a.TargetID), nil)
	case reconcile.KindRemoveNetwork:
		return changedOrNot(e.world.remove(observed.KindNetwork, a.Target, a.TargetID), nil)
	case reconcile.KindRemoveVolume:
		return changedOrNot(e.world.remove(observed.KindVolume, a.Target, a.TargetID), nil)
	case reconcile.KindCreateNetwork:
		e.world.addNetwork(a.Target, a.Labels, now)
		return actions.Changed, nil
	case reconcile.KindCreateContainer:
		if a.Restart != nil {
			if _, err := e.store.RecordRestart(ctx, a.SessionID, a.Restart.Count, a.Restart.NextAt, now); err != nil {
				return "", err
			}
		}
		e.world.addContainer(a.Target, a.Labels, true, now)
		return actions.Changed, nil
	case reconcile.KindResetRestarts:
		return changedOrNot(e.store.ResetRestarts(ctx, a.SessionID, now))
	}
	return "", fmt.Errorf("fake executor: unexpected action kind %q", a.Kind)
}

func (e *fakeExecutor) executed() []reconcile.Action {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]reconcile.Action(nil), e.calls...)
}

// step is the part of an executed action a test compares.
type step struct {
	Kind   reconcile.Kind
	Key    string
	Target string
	Reason reconcile.Reason
}

func steps(as []reconcile.Action) []step {
	var out []step
	for _, a := range as {
		out = append(out, step{Kind: a.Kind, Key: a.Key.String(), Target: a.Target, Reason: a.Reason})
	}
	return out
}

// qcall is one call on the queue.
type qcall struct {
	Op    string
	Key   string
	After time.Duration
}

// recQueue records the calls processNextItem makes on the real queue.
// Mutations are recorded before they take effect and Get after, so for a
// key the record is in the order the calls happened.
type recQueue struct {
	controller.Queue
	mu    sync.Mutex
	calls []qcall
}

func (q *recQueue) rec(c qcall) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.calls = append(q.calls, c)
}

func (q *recQueue) Get() (desired.SessionKey, bool) {
	k, shutdown := q.Queue.Get()
	if !shutdown {
		q.rec(qcall{Op: "Get", Key: k.String()})
	}
	return k, shutdown
}

func (q *recQueue) Add(k desired.SessionKey) {
	q.rec(qcall{Op: "Add", Key: k.String()})
	q.Queue.Add(k)
}

func (q *recQueue) AddAfter(k desired.SessionKey, d time.Duration) {
	q.rec(qcall{Op: "AddAfter", Key: k.String(), After: d})
	q.Queue.AddAfter(k, d)
}

func (q *recQueue) AddRateLimited(k desired.SessionKey) {
	q.rec(qcall{Op: "AddRateLimited", Key: k.String()})
	q.Queue.AddRateLimited(k)
}

func (q *recQueue) Forget(k desired.SessionKey) {
	q.rec(qcall{Op: "Forget", Key: k.String()})
	q.Queue.Forget(k)
}

func (q *recQueue) Done(k desired.SessionKey) {
	q.rec(qcall{Op: "Done", Key: k.String()})
	q.Queue.Done(k)
}

// of returns the calls about k.
func (q *recQueue) of(k desired.SessionKey) []qcall {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []qcall
	for _, c := range q.calls {
		if c.Key == k.String() {
			out = append(out, c)
		}
	}
	return out
}

// logBuffer keeps the controller's log lines.
type logBuffer struct {
	mu    sync.Mutex
	lines []string
}

func (l *logBuffer) add(_, args string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, args)
}

// matching returns the lines containing every part.
func (l *logBuffer) matching(parts ...string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range l.lines {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

type env struct {
	ctrl   *controller.Controller
	store  *sqlstore.Store
	world  *world
	exec   *fakeExecutor
	clk    *timerClock
	logs   *logBuffer
	keyDir string
}

const (
	gracePeriod = 30 * time.Minute
	maxLifetime = 8 * time.Hour
)

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	st, err := sqlstore.Open(context.Background(), filepath.Join(dir, "state", "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	keyDir := filepath.Join(dir, "keys")
	if err := os.MkdirAll(keyDir, 0o700); err != nil {
		t.Fatal(err)
	}
	clk := newTimerClock()
	w := newWorld()
	logs := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("controller log:\n%s", strings.Join(logs.matching(), "\n"))
		}
	})
	ex := &fakeExecutor{store: st, world: w, now: clk.Now}
	c := &controller.Controller{
		Store: st, KeyDir: keyDir, LockDir: filepath.Join(dir, "locks"), Observer: dockerobs.Lister{API: w}, Executor: ex,
		Options: reconcile.Options{OrphanMinAge: 10 * time.Minute, PendingTimeout: 5 * time.Minute},
		Clock:   clk, Log: funcr.New(logs.add, funcr.Options{Verbosity: 1}), Workers: 2,
		ReconcileTimeout: time.Minute, LockTimeout: 5 * time.Second, Guard: reconcile.GuardLimits{MaxUnplannedRemovals: 5},
	}
	return &env{ctrl: c, store: st, world: w, exec: ex, clk: clk, logs: logs, keyDir: keyDir}
}

func (e *env) addUser(t *testing.T, name string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(e.keyDir, name), []byte("# keys of "+name+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

type sessOpts struct {
	status  desired.Status
	reason  string // terminate reason
	live    bool   // a connection held by this test process
	running bool   // the session container exists and runs
}

// addSession records a session and creates its network and (optionally)
// its container in the world, labelled for the session.
func (e *env) addSession(t *testing.T, k desired.SessionKey, o sessOpts) *desired.Session {
	t.Helper()
	ctx := context.Background()
	s := &desired.Session{
		Key: k, ID: sqlstore.NewSessionID(), Mode: desired.ModeGracePeriod, Status: o.status,
		CreatedAt: epoch.Add(-time.Hour), MaxLifetimeAt: epoch.Add(maxLifetime), GracePeriod: gracePeriod,
		TerminateReason: o.reason,
		Spec: desired.Spec{
			Image: "podspawn-test:busybox", Shell: "/bin/sh",
			ContainerName: desired.ContainerName(k), NetworkName: desired.NetworkName(k),
		},
	}
	if o.status == desired.StatusGrace {
		s.GraceExpiry = epoch.Add(10 * time.Minute)
	}
	if err := e.store.Create(ctx, s, epoch.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if o.live {
		self, err := proc.Self()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.store.AddLease(ctx, s.ID, self.PID, self.Start, epoch.Add(-time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	labels := map[string]string{
		observed.LabelManagedBy: observed.ManagedByValue, observed.LabelUser: k.User, observed.LabelProject: k.Project,
		observed.LabelSession: s.ID, observed.LabelInstance: e.store.InstanceID(), observed.LabelRole: observed.RoleSession,
	}
	e.world.addNetwork(s.Spec.NetworkName, labels, epoch.Add(-time.Hour))
	if o.running {
		e.world.addContainer(s.Spec.ContainerName, labels, true, epoch.Add(-time.Hour))
	}
	return s
}

// status returns the stored status of k, or "" when the row is gone.
func (e *env) status(t *testing.T, k desired.SessionKey) desired.Status {
	t.Helper()
	s, err := e.store.LoadKey(context.Background(), k)
	if err != nil {
		t.Fatal(err)
	}
	if s == nil {
		return ""
	}
	return s.Status
}

func (e *env) queue(t *testing.T) *recQueue {
	q := &recQueue{Queue: controller.NewQueue(e.clk, nil)}
	t.Cleanup(q.ShutDown)
	return q
}

// process runs one worker step, failing the test if no key arrives.
func (e *env) process(t *testing.T, q controller.Queue) {
	t.Helper()
	done := make(chan bool, 1)
	go func() { done <- e.ctrl.ProcessNextItemForTest(context.Background(), q) }()
	select {
	case ok := <-done:
		if !ok {
			t.Fatal("processNextItem reported shutdown")
		}
	case <-time.After(waitFor):
		t.Fatal("processNextItem got no key")
	}
}

var errLocked = errors.New("database is locked")

func TestProcessNextItemRequeuesAtTheDeadline(t *testing.T) {
	e := newEnv(t)
	alice := desired.SessionKey{User: "alice"}
	e.addUser(t, "alice")
	e.addSession(t, alice, sessOpts{status: desired.StatusRunning, live: true, running: true})
	q := e.queue(t)

	q.Add(alice)
	e.process(t, q)
	want := []qcall{{Op: "Add", Key: "alice"}, {Op: "Get", Key: "alice"}, {Op: "Forget", Key: "alice"}, {Op: "AddAfter", Key: "alice", After: maxLifetime}, {Op: "Done", Key: "alice"}}
	if diff := cmp.Diff(want, q.of(alice)); diff != "" {
		t.Fatalf("queue calls of a session with nothing to do (-want +got):\n%s", diff)
	}
	if got := e.exec.executed(); len(got) != 0 {
		t.Fatalf("executed %v, want nothing", steps(got))
	}

	// The key sleeps until its max lifetime, and not a nanosecond less.
	if d := e.clk.nextTimer(t); d != maxLifetime {
		t.Fatalf("queue timer = %s, want %s", d, maxLifetime)
	}
	e.clk.Step(maxLifetime - time.Nanosecond)
	if n := q.Len(); n != 0 {
		t.Fatalf("Len = %d before the deadline, want 0", n)
	}
	e.clk.Step(time.Nanosecond)
	e.process(t, q)
	wantSteps := []step{
		{Kind: reconcile.KindMarkTerminating, Key: "alice", Target: "session alice", Reason: reconcile.ReasonLifetimeExceeded},
		{Kind: reconcile.KindRemoveContainer, Key: "alice", Target: "podspawn-alice", Reason: reconcile.ReasonLifetimeExceeded},
		{Kind: reconcile.KindRemoveNetwork, Key: "alice", Target: "podspawn-alice-net", Reason: reconcile.ReasonLifetimeExceeded},
		{Kind: reconcile.KindDeleteSession, Key: "alice", Target: "session alice", Reason: reconcile.ReasonLifetimeExceeded},
	}
	if diff := cmp.Diff(wantSteps, steps(e.exec.executed())); diff != "" {
		t.Fatalf("actions at the deadline (-want +got):\n%s", diff)
	}

	// Work was done, so the key is looked at again after the first backoff
	// step (a pass that changes something goes through the rate limiter,
	// so a key that changes something on every pass cannot loop hot);
	// then it is converged, its backoff is forgotten and it has no
	// deadline left.
	if d := e.clk.nextTimer(t); d != controller.BackoffBase {
		t.Fatalf("requeue after changes = %s, want %s", d, controller.BackoffBase)
	}
	e.clk.Step(controller.BackoffBase)
	e.process(t, q)
	want = append(want,
		qcall{Op: "Get", Key: "alice"}, qcall{Op: "AddRateLimited", Key: "alice"}, qcall{Op: "Done", Key: "alice"},
		qcall{Op: "Get", Key: "alice"}, qcall{Op: "Forget", Key: "alice"}, qcall{Op: "Done", Key: "alice"},
	)
	if diff := cmp.Diff(want, q.of(alice)); diff != "" {
		t.Fatalf("queue calls (-want +got):\n%s", diff)
	}
	if n := q.Len(); n != 0 {
		t.Fatalf("Len = %d after convergence, want 0", n)
	}
	if st := e.status(t, alice); st != "" {
		t.Fatalf("alice's row has status %q, want it deleted", st)
	}
	if got := e.world.names(); len(got) != 0 {
		t.Fatalf("world = %v, want empty", got)
	}
}

func TestProcessNextItemTransientErrorBacksOffThenForgets(t *testing.T) {
	e := newEnv(t)
	alice := desired.SessionKey{User: "alice"}
	e.addUser(t, "alice")
	e.addSession(t, alice, sessOpts{status: desired.StatusRunning, running: true})
	failures := 0
	e.exec.setIntercept(func(ctx context.Context, a reconcile.Action, next actions.Executor) (actions.Outcome, error) {
		if a.Kind == reconcile.KindStartGrace && failures < 3 {
			failures++
			return "", fmt.Errorf("start-grace session alice: %w", errLocked)
		}
		return next.Execute(ctx, a)
	})
	q := e.queue(t)
	q.Add(alice)

	want := []qcall{{Op: "Add", Key: "alice"}}
	var elapsed time.Duration
	for i, backoff := range []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second} {
		e.process(t, q)
		want = append(want, qcall{Op: "Get", Key: "alice"}, qcall{Op: "AddRateLimited", Key: "alice"}, qcall{Op: "Done", Key: "alice"})
		if n := q.NumRequeues(alice); n != i+1 {
			t.Fatalf("NumRequeues = %d after failure %d", n, i+1)
		}
		if d := e.clk.nextTimer(t); d != backoff {
			t.Fatalf("backoff after failure %d = %s, want %s", i+1, d, backoff)
		}
		e.clk.Step(backoff)
		elapsed += backoff
	}
	// start-grace succeeds: Changed, so look again, with the backoff kept
	// (the fourth step) because the pass changed something.
	e.process(t, q)
	if d := e.clk.nextTimer(t); d != 4*time.Second {
		t.Fatalf("requeue after the successful pass = %s, want 4s (the backoff carries on until a pass has nothing to do)", d)
	}
	e.clk.Step(4 * time.Second)
	e.process(t, q) // nothing left: sleep until the grace period ends
	want = append(want,
		qcall{Op: "Get", Key: "alice"}, qcall{Op: "AddRateLimited", Key: "alice"}, qcall{Op: "Done", Key: "alice"},
		qcall{Op: "Get", Key: "alice"}, qcall{Op: "Forget", Key: "alice"}, qcall{Op: "AddAfter", Key: "alice", After: gracePeriod - 4*time.Second}, qcall{Op: "Done", Key: "alice"},
	)
	if diff := cmp.Diff(want, q.of(alice)); diff != "" {
		t.Fatalf("queue calls (-want +got):\n%s", diff)
	}
	if n := q.NumRequeues(alice); n != 0 {
		t.Fatalf("NumRequeues = %d after success, want 0 (Forget resets the backoff)", n)
	}
	s, err := e.store.LoadKey(context.Background(), alice)
	if err != nil {
		t.Fatal(err)
	}
	if s.Status != desired.StatusGrace || !s.GraceExpiry.Equal(epoch.Add(elapsed+gracePeriod)) {
		t.Fatalf("row: status %s, grace expiry %s; want grace_period until %s", s.Status, s.GraceExpiry, epoch.Add(elapsed+gracePeriod))
	}
	for attempt := 1; attempt <= 3; attempt++ {
		if got := e.logs.matching(`"msg"="Reconcile failed"`, `"attempt"=`+fmt.Sprint(attempt), "database is locked"); len(got) != 1 {
			t.Errorf("log lines for failed attempt %d: %q, want one", attempt, got)
		}
	}
}

func TestProcessNextItemTerminalErrorIsNotRetried(t *testing.T) {
	e := newEnv(t)
	alice := desired.SessionKey{User: "alice"}
	e.addUser(t, "alice")
	e.addSession(t, alice, sessOpts{status: desired.StatusRunning, running: true})
	calls := 0
	e.exec.setIntercept(func(ctx context.Context, a reconcile.Action, next actions.Executor) (actions.Outcome, error) {
		calls++
		if calls == 1 {
			return "", errLocked
		}
		return "", fmt.Errorf("container podspawn-alice already exists and is not managed by podspawn; remove or rename it: %w", actions.ErrTerminal)
	})
	q := e.queue(t)
	q.Add(alice)
	e.process(t, q)
	e.clk.Step(e.clk.nextTimer(t))
	e.process(t, q)

	want := []qcall{
		{Op: "Add", Key: "alice"},
		{Op: "Get", Key: "alice"}, {Op: "AddRateLimited", Key: "alice"}, {Op: "Done", Key: "alice"},
		{Op: "Get", Key: "alice"}, {Op: "Forget", Key: "alice"}, {Op: "Done", Key: "alice"},
	}
	if diff := cmp.Diff(want, q.of(alice)); diff != "" {
		t.Fatalf("queue calls (-want +got):\n%s", diff)
	}
	if n := q.NumRequeues(alice); n != 0 {
		t.Fatalf("NumRequeues = %d, want 0", n)
	}
	if n := q.Len(); n != 0 {
		t.Fatalf("Len = %d, want 0: a terminal error must wait for an operator, not retry", n)
	}
	if got := e.logs.matching("needs an operator", "remove or rename it"); len(got) != 1 {
		t.Fatalf("terminal error log lines: %q, want one", got)
	}
	if st := e.status(t, alice); st != desired.StatusRunning {
		t.Fatalf("alice's status = %q, want running (nothing happened)", st)
	}
}

func TestProcessNextItemRecoversPanicAndReleasesTheLock(t *testing.T) {
	e := newEnv(t)
	alice, bob := desired.SessionKey{User: "alice"}, desired.SessionKey{User: "bob", Project: "web"}
	for _, k := range []desired.SessionKey{alice, bob} {
		e.addUser(t, k.User)
		e.addSession(t, k, sessOpts{status: desired.StatusRunning, running: true})
	}
	e.exec.setIntercept(func(ctx context.Context, a reconcile.Action, next actions.Executor) (actions.Outcome, error) {
		if a.Key == alice {
			panic("boom")
		}
		return next.Execute(ctx, a)
	})
	q := e.queue(t)
	q.Add(alice)
	q.Add(bob)
	e.process(t, q)
	e.process(t, q)

	wantAlice := []qcall{{Op: "Add", Key: "alice"}, {Op: "Get", Key: "alice"}, {Op: "AddRateLimited", Key: "alice"}, {Op: "Done", Key: "alice"}}
	if diff := cmp.Diff(wantAlice, q.of(alice)); diff != "" {
		t.Fatalf("queue calls of the panicking key (-want +got):\n%s", diff)
	}
	wantBob := []qcall{{Op: "Add", Key: "bob@web"}, {Op: "Get", Key: "bob@web"}, {Op: "AddRateLimited", Key: "bob@web"}, {Op: "Done", Key: "bob@web"}}
	if diff := cmp.Diff(wantBob, q.of(bob)); diff != "" {
		t.Fatalf("queue calls of the other key (-want +got):\n%s", diff)
	}
	if got := e.logs.matching(`"msg"="Reconcile failed"`, "panic while reconciling alice: boom"); len(got) != 1 {
		t.Fatalf("panic log lines: %q, want one", got)
	}
	if st := e.status(t, bob); st != desired.StatusGrace {
		t.Fatalf("bob's status = %q, want grace_period", st)
	}

	// The panic released alice's lock: her retry gets it and goes through.
	e.exec.setIntercept(nil)
	e.clk.Step(e.clk.nextTimer(t))
	e.process(t, q)
	e.process(t, q)
	if st := e.status(t, alice); st != desired.StatusGrace {
		t.Fatalf("alice's status after the retry = %q, want grace_period; log:\n%s", st, strings.Join(e.logs.matching(), "\n"))
	}
}

// TestRunWorkersFailingKeyDoesNotStarveOthers holds one worker in a key
// whose reconcile hangs and then keeps failing, and checks that the other
// worker brings every other key to convergence meanwhile.
func TestRunWorkersFailingKeyDoesNotStarveOthers(t *testing.T) {
	e := newEnv(t)
	bad := desired.SessionKey{User: "bad"}
	e.addUser(t, "bad")
	e.addSession(t, bad, sessOpts{status: desired.StatusRunning, running: true})
	var good []desired.SessionKey
	for i := range 10 {
		k := desired.SessionKey{User: fmt.Sprintf("good%d", i)}
		good = append(good, k)
		e.addUser(t, k.User)
		e.addSession(t, k, sessOpts{status: desired.StatusRunning, running: true})
	}
	entered := make(chan struct{})
	release := make(chan struct{})
	var mu sync.Mutex
	badCalls := 0
	e.exec.setIntercept(func(ctx context.Context, a reconcile.Action, next actions.Executor) (actions.Outcome, error) {
		if a.Key != bad {
			return next.Execute(ctx, a)
		}
		mu.Lock()
		badCalls++
		first := badCalls == 1
		mu.Unlock()
		if first {
			close(entered)
			<-release
		}
		return "", errLocked
	})
	q := e.queue(t)
	stopped := make(chan struct{})
	go func() {
		e.ctrl.RunWorkers(context.Background(), q, 2)
		close(stopped)
	}()

	q.Add(bad)
	select {
	case <-entered:
	case <-time.After(waitFor):
		t.Fatal("the failing key was never reconciled")
	}
	for _, k := range good {
		q.Add(k)
	}
	// served counts the passes over k that finished. (The pass that starts
	// grace changes something, so its follow-up look waits out a backoff on
	// the fake clock, which this test does not move.)
	served := func(k desired.SessionKey) int {
		n := 0
		for _, c := range q.of(k) {
			if c.Op == "Done" {
				n++
			}
		}
		return n
	}
	eventually(t, "every other key to be served while one worker is stuck", func() bool {
		for _, k := range good {
			if served(k) == 0 {
				return false
			}
		}
		return true
	})

	close(release)
	eventually(t, "the first failure", func() bool { return q.NumRequeues(bad) == 1 })
	// The failing key keeps coming back (as events would bring it) and
	// keeps failing; the others are still served in between.
	for i := 2; i <= 4; i++ {
		q.Add(bad)
		q.Add(good[i])
		eventually(t, fmt.Sprintf("failure %d", i), func() bool { return q.NumRequeues(bad) == i })
		eventually(t, fmt.Sprintf("%v served again", good[i]), func() bool { return served(good[i]) >= 2 })
	}

	q.ShutDownWithDrain()
	select {
	case <-stopped:
	case <-time.After(waitFor):
		t.Fatal("RunWorkers did not return after ShutDownWithDrain")
	}
	for _, k := range good {
		if st := e.status(t, k); st != desired.StatusGrace {
			t.Errorf("%v: status %q, want grace_period", k, st)
		}
	}
	if st := e.status(t, bad); st != desired.StatusRunning {
		t.Errorf("bad: status %q, want running", st)
	}
}

type result struct {
	Kind    reconcile.Kind
	Target  string
	Outcome actions.Outcome
	Err     string
}

func results(rs []controller.Result) []result {
	var out []result
	for _, r := range rs {
		res := result{Kind: r.Action.Kind, Target: r.Action.Target, Outcome: r.Outcome}
		if r.Err != nil {
			res.Err = r.Err.Error()
		}
		out = append(out, res)
	}
	return out
}

func TestReconcileOnceStopsAKeysChainAtItsFirstFailure(t *testing.T) {
	e := newEnv(t)
	alice, bob, carol := desired.SessionKey{User: "alice"}, desired.SessionKey{User: "bob"}, desired.SessionKey{User: "carol", Project: "web"}
	for _, k := range []desired.SessionKey{alice, bob, carol} {
		e.addUser(t, k.User)
	}
	e.addSession(t, alice, sessOpts{status: desired.StatusTerminating, reason: string(reconcile.ReasonUserRequested), running: true})
	e.addSession(t, bob, sessOpts{status: desired.StatusTerminating, reason: string(reconcile.ReasonUserRequested), running: true})
	e.addSession(t, carol, sessOpts{status: desired.StatusRunning, live: true, running: true})
	e.exec.setIntercept(func(ctx context.Context, a reconcile.Action, next actions.Executor) (actions.Outcome, error) {
		if a.Key == alice && a.Kind == reconcile.KindRemoveNetwork {
			return "", errors.New("remove-network podspawn-alice-net: network has active endpoints")
		}
		return next.Execute(ctx, a)
	})

	rep, err := e.ctrl.ReconcileOnce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]result{}
	for _, k := range rep.Keys {
		got[k.Key.String()] = results(k.Results)
	}
	want := map[string][]result{
		"alice": {
			{Kind: reconcile.KindRemoveContainer, Target: "podspawn-alice", Outcome: actions.Changed},
			{Kind: reconcile.KindRemoveNetwork, Target: "podspawn-alice-net", Err: "remove-network podspawn-alice-net: network has active endpoints"},
		},
		"bob": {
			{Kind: reconcile.KindRemoveContainer, Target: "podspawn-bob", Outcome: actions.Changed},
			{Kind: reconcile.KindRemoveNetwork, Target: "podspawn-bob-net", Outcome: actions.Changed},
			{Kind: reconcile.KindDeleteSession, Target: "session bob", Outcome: actions.Changed},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("results per key (-want +got):\n%s", diff)
	}
	var failed []string
	for _, k := range rep.Failed() {
		failed = append(failed, k.Key.String())
	}
	if diff := cmp.Diff([]string{"alice"}, failed); diff != "" {
		t.Fatalf("failed keys (-want +got):\n%s", diff)
	}
	for _, a := range e.exec.executed() {
		if a.Key == alice && a.Kind == reconcile.KindDeleteSession {
			t.Fatal("alice's row was deleted although removing her network failed")
		}
	}
	if st := e.status(t, alice); st != desired.StatusTerminating {
		t.Fatalf("alice's status = %q, want terminating (the row survives until Docker agreed)", st)
	}
	if st := e.status(t, bob); st != "" {
		t.Fatalf("bob's status = %q, want the row deleted", st)
	}
	if st := e.status(t, carol); st != desired.StatusRunning {
		t.Fatalf("carol's status = %q, want running", st)
	}
	wantWorld := []string{"container/podspawn-carol-web:running", "network/podspawn-alice-net", "network/podspawn-carol-web-net"}
	if diff := cmp.Diff(wantWorld, e.world.names()); diff != "" {
		t.Fatalf("world (-want +got):\n%s", diff)
	}
}

func TestReconcileOnceLoadFailureExecutesNothing(t *testing.T) {
	alice := desired.SessionKey{User: "alice"}
	cases := map[string]struct {
		breakIt func(t *testing.T, e *env)
		want    string
	}{
		"corrupt session row": {
			breakIt: func(t *testing.T, e *env) {
				if _, err := e.store.DB().Exec(`UPDATE sessions SET spec = '{"image":' WHERE user = 'alice'`); err != nil {
					t.Fatal(err)
				}
			},
			want: "session alice: corrupt spec column",
		},
		"key directory missing": {
			breakIt: func(t *testing.T, e *env) {
				if err := os.RemoveAll(e.keyDir); err != nil {
					t.Fatal(err)
				}
			},
			want: "does not exist",
		},
		"docker unreachable": {
			breakIt: func(t *testing.T, e *env) {
				e.world.failLists(errors.New("Cannot connect to the Docker daemon at unix:///var/run/docker.sock"))
			},
			want: "Cannot connect to the Docker daemon",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			for _, keys := range [][]desired.SessionKey{nil, {alice}} {
				e := newEnv(t)
				e.addUser(t, "alice")
				// Work that a pass would do if it got this far: alice is to be
				// removed, and zed (no key file, no row) left an old orphan.
				e.addSession(t, alice, sessOpts{status: desired.StatusTerminating, reason: string(reconcile.ReasonUserRequested), running: true})
				e.world.addContainer("podspawn-zed", map[string]string{
					observed.LabelManagedBy: observed.ManagedByValue, observed.LabelUser: "zed",
					observed.LabelInstance: e.store.InstanceID(), observed.LabelSession: "old", observed.LabelRole: observed.RoleSession,
				}, true, epoch.Add(-24*time.Hour))
				worldBefore := e.world.names()
				tc.breakIt(t, e)

				var err error
				if keys == nil {
					_, err = e.ctrl.ReconcileOnce(context.Background())
					if !errors.Is(err, controller.ErrLoad) {
						t.Fatalf("ReconcileOnce error = %v, want one wrapping ErrLoad", err)
					}
				} else {
					err = e.ctrl.ReconcileKey(context.Background(), keys[0]).Err
				}
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("reconcile of %v: error = %v, want one containing %q", keys, err, tc.want)
				}
				if got := e.exec.executed(); len(got) != 0 {
					t.Fatalf("ReconcileOnce(%v) executed %v after a load failure, want nothing", keys, steps(got))
				}
				if diff := cmp.Diff(worldBefore, e.world.names()); diff != "" {
					t.Fatalf("world changed (-before +after):\n%s", diff)
				}
				var rows []string
				if err := e.store.DB().Select(&rows, `SELECT user || ':' || status FROM sessions`); err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff([]string{"alice:terminating"}, rows); diff != "" {
					t.Fatalf("rows changed (-want +got):\n%s", diff)
				}
			}
		})
	}
}

// A removal that Docker reported done but that a fresh list still shows
// (a list taken while dockerd shuts down can be stale) must not let the
// row go: the record is what remembers the object.
func TestReconcileKeyKeepsTheRowWhileDockerStillShowsAnObject(t *testing.T) {
	e := newEnv(t)
	alice := desired.SessionKey{User: "alice"}
	e.addUser(t, "alice")
	e.addSession(t, alice, sessOpts{status: desired.StatusTerminating, reason: string(reconcile.ReasonUserRequested), running: true})
	e.exec.setIntercept(func(ctx context.Context, a reconcile.Action, next actions.Executor) (actions.Outcome, error) {
		if a.Kind == reconcile.KindRemoveNetwork {
			return actions.Changed, nil // claims success, removes nothing
		}
		return next.Execute(ctx, a)
	})

	rep := e.ctrl.ReconcileKey(context.Background(), alice)
	if rep.Err == nil || !strings.Contains(rep.Err.Error(), "still has network podspawn-alice-net in Docker") {
		t.Fatalf("ReconcileKey error = %v, want one naming the network left in Docker", rep.Err)
	}
	if got := e.status(t, alice); got != desired.StatusTerminating {
		t.Fatalf("row status = %q, want it kept as terminating", got)
	}
	for _, a := range e.exec.executed() {
		if a.Kind == reconcile.KindDeleteSession {
			t.Fatalf("delete-session was executed although the network is still listed")
		}
	}
}

// A key directory that comes up empty must not wipe the server: a one-shot
// pass holds the removals, a per-key reconcile (the daemon's and the admin
// commands' path) takes the same whole-plan decision, and a confirmed pass
// removes them.
func TestGuardHoldsMassRemovalInEveryPath(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var ks []desired.SessionKey
	for i := range 6 {
		k := desired.SessionKey{User: fmt.Sprintf("user%d", i)}
		e.addSession(t, k, sessOpts{status: desired.StatusRunning, live: true, running: true})
		ks = append(ks, k)
	}
	// No key file at all: the directory exists and is empty.

	rep, err := e.ctrl.ReconcileOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	held, holds := rep.Held()
	if len(held) != 6*4 || len(holds) != 1 || holds[0].Reason != reconcile.HoldMassRemoval || len(holds[0].Keys) != 6 {
		t.Fatalf("one-shot pass: held %d actions, holds %+v; want 24 actions of 6 sessions held for mass-removal", len(held), holds)
	}
	for _, r := range rep.Results() {
		t.Errorf("one-shot pass executed %s %s", r.Action.Kind, r.Action.Target)
	}

	krep := e.ctrl.ReconcileKey(ctx, ks[0])
	if krep.Err != nil {
		t.Fatal(krep.Err)
	}
	if len(krep.Results) != 0 || len(krep.Plan.Held) != 4 {
		t.Fatalf("per-key reconcile: executed %d actions, held %d; want 0 executed and the key's 4 held", len(krep.Results), len(krep.Plan.Held))
	}
	for _, k := range ks {
		if got := e.status(t, k); got != desired.StatusRunning {
			t.Fatalf("%s is %q after held passes; want running", k, got)
		}
	}

	e.ctrl.Guard.Allow = true
	rep, err = e.ctrl.ReconcileOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if held, _ := rep.Held(); len(held) != 0 || len(rep.Failed()) != 0 {
		t.Fatalf("confirmed pass: held %d, failed %v", len(held), rep.Failed())
	}
	for _, k := range ks {
		if got := e.status(t, k); got != "" {
			t.Errorf("%s is %q after the confirmed pass; want removed", k, got)
		}
	}
}
