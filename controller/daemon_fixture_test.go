package controller

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"k8s.io/utils/clock"
	testclock "k8s.io/utils/clock/testing"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/sqlstore"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/observed/dockerobs"
	"github.com/podspawn/podspawn/reconcile"
)

// Shared fixtures of the daemon tests: a fake Docker (lists, events,
// inspect) holding a small world, a scriptable executor, a clock that
// records the timers it hands out, and a logger that keeps its lines.

var t0 = time.Date(2026, 11, 29, 7, 0, 0, 0, time.UTC)

// waitFor polls cond until it holds or a generous real-time deadline
// passes. It synchronises with the daemon's goroutines; it never measures.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond) // polling interval, not synchronisation
	}
}

// fakeDocker is a world of labelled containers plus an event feed.
type fakeDocker struct {
	mu      sync.Mutex
	objs    map[string]observed.Object // by name
	down    bool
	lists   int
	subs    []*fakeSub
	inspect map[string]map[string]string // network/volume labels by id or name
	clk     clock.PassiveClock
}

type fakeSub struct {
	at    time.Time
	opts  events.ListOptions
	msgs  chan events.Message
	errs  chan error
	alive bool
}

func newFakeDocker(clk clock.PassiveClock) *fakeDocker {
	return &fakeDocker{objs: map[string]observed.Object{}, inspect: map[string]map[string]string{}, clk: clk}
}

var errDockerDown = errors.New("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?")

func (f *fakeDocker) put(o observed.Object) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.objs[o.Name] = o
}

func (f *fakeDocker) has(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.objs[name]
	return ok
}

func (f *fakeDocker) remove(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.objs, name)
}

func (f *fakeDocker) setDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
}

func (f *fakeDocker) listCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lists
}

func matches(fl filters.Args, labels map[string]string) bool {
	for _, want := range fl.Get("label") {
		k, v, _ := strings.Cut(want, "=")
		if labels[k] != v {
			return false
		}
	}
	return true
}

func (f *fakeDocker) ContainerList(_ context.Context, o container.ListOptions) ([]container.Summary, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, errDockerDown
	}
	f.lists++
	var out []container.Summary
	for _, obj := range f.objs {
		if obj.Kind == observed.KindContainer && matches(o.Filters, obj.Labels) {
			state := container.StateExited
			if obj.Running {
				state = container.StateRunning
			}
			out = append(out, container.Summary{ID: obj.ID, Names: []string{"/" + obj.Name}, Created: obj.Created.Unix(), State: state, Labels: obj.Labels})
		}
	}
	return out, nil
}

func (f *fakeDocker) NetworkList(_ context.Context, o network.ListOptions) ([]network.Summary, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, errDockerDown
	}
	var out []network.Summary
	for _, obj := range f.objs {
		if obj.Kind == observed.KindNetwork && matches(o.Filters, obj.Labels) {
			out = append(out, network.Summary{ID: obj.ID, Name: obj.Name, Created: obj.Created, Labels: obj.Labels})
		}
	}
	return out, nil
}

func (f *fakeDocker) VolumeList(_ context.Context, o volume.ListOptions) (volume.ListResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return volume.ListResponse{}, errDockerDown
	}
	return volume.ListResponse{}, nil
}

// Events opens a fake stream; when Docker is down the stream fails at once,
// as the real client does when it cannot connect.
func (f *fakeDocker) Events(ctx context.Context, o events.ListOptions) (<-chan events.Message, <-chan error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := &fakeSub{at: f.clk.Now(), opts: o, msgs: make(chan events.Message), errs: make(chan error, 1), alive: !f.down}
	if f.down {
		s.errs <- errDockerDown
	} else {
		go func() {
			<-ctx.Done()
			f.mu.Lock()
			s.alive = false
			f.mu.Unlock()
		}()
	}
	f.subs = append(f.subs, s)
	return s.msgs, s.errs
}

// subscriptions returns the times of Events calls.
func (f *fakeDocker) subscriptions() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []time.Time
	for _, s := range f.subs {
		out = append(out, s.at)
	}
	return out
}

// breakStreams fails every live stream, as a dockerd exit does.
func (f *fakeDocker) breakStreams() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.subs {
		if s.alive {
			s.alive = false
			s.errs <- errors.New("unexpected EOF")
		}
	}
}

// send delivers m on the live labelled stream (the first of each pair).
func (f *fakeDocker) send(t *testing.T, m events.Message) {
	t.Helper()
	f.mu.Lock()
	var target *fakeSub
	for _, s := range f.subs {
		if s.alive && len(s.opts.Filters.Get("label")) > 0 {
			target = s
		}
	}
	f.mu.Unlock()
	if target == nil {
		t.Fatal("no live event subscription")
	}
	select {
	case target.msgs <- m:
	case <-time.After(20 * time.Second):
		t.Fatal("daemon did not read the event")
	}
}

func (f *fakeDocker) NetworkInspect(_ context.Context, id string, _ network.InspectOptions) (network.Inspect, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if l, ok := f.inspect[id]; ok {
		return network.Inspect{ID: id, Labels: l}, nil
	}
	return network.Inspect{}, fmt.Errorf("network %s not found", id)
}

func (f *fakeDocker) VolumeInspect(_ context.Context, id string) (volume.Volume, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if l, ok := f.inspect[id]; ok {
		return volume.Volume{Name: id, Labels: l}, nil
	}
	return volume.Volume{}, fmt.Errorf("volume %s not found", id)
}

// fakeExec removes objects from the fake world unless fn says otherwise.
type fakeExec struct {
	mu       sync.Mutex
	docker   *fakeDocker
	clk      clock.PassiveClock
	fn       func(ctx context.Context, a reconcile.Action) (o actions.Outcome, handled bool, err error)
	attempts map[desired.SessionKey][]time.Time
}

func (e *fakeExec) setFn(fn func(ctx context.Context, a reconcile.Action) (o actions.Outcome, handled bool, err error)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.fn = fn
}

func (e *fakeExec) Execute(ctx context.Context, a reconcile.Action) (actions.Outcome, error) {
	e.mu.Lock()
	if e.attempts == nil {
		e.attempts = map[desired.SessionKey][]time.Time{}
	}
	e.attempts[a.Key] = append(e.attempts[a.Key], e.clk.Now())
	fn := e.fn
	e.mu.Unlock()
	if fn != nil {
		if o, handled, err := fn(ctx, a); handled {
			return o, err
		}
	}
	e.docker.remove(a.Target)
	return actions.Changed, nil
}

func (e *fakeExec) attemptsOf(k desired.SessionKey) []time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]time.Time(nil), e.attempts[k]...)
}

// timerClock is a fake clock that records the duration of every timer
// handed out, so a test can step exactly when the daemon is waiting.
type timerClock struct {
	*testclock.FakeClock
	mu     sync.Mutex
	timers []time.Duration
}

func (c *timerClock) NewTimer(d time.Duration) clock.Timer {
	// Recorded only once armed: a test that steps the clock after seeing
	// the record must not step before the timer's deadline is fixed.
	timer := c.FakeClock.NewTimer(d)
	c.mu.Lock()
	c.timers = append(c.timers, d)
	c.mu.Unlock()
	return timer
}

// quietClock is the fixture clock with tickers that never tick, for a
// queue that a test steps through exact timers: the queue's only ticker is
// its 10s safety heartbeat, which would wake its waiting loop on large
// steps and re-arm timers while the test steps again.
type quietClock struct{ *timerClock }

func (quietClock) NewTicker(time.Duration) clock.Ticker { return quietTicker{} }

type quietTicker struct{}

func (quietTicker) C() <-chan time.Time { return nil }
func (quietTicker) Stop()               {}

// countTimers counts handed-out timers of exactly d.
func (c *timerClock) countTimers(d time.Duration) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, x := range c.timers {
		if x == d {
			n++
		}
	}
	return n
}

// logSink keeps log lines.
type logSink struct {
	mu    sync.Mutex
	lines []string
}

func (l *logSink) logger() logr.Logger {
	return funcr.New(func(prefix, args string) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.lines = append(l.lines, args)
	}, funcr.Options{Verbosity: 2})
}

// count returns how many lines contain every part.
func (l *logSink) count(parts ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.lines {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			n++
		}
	}
	return n
}

func (l *logSink) dump() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

type fixture struct {
	ctrl   *Controller
	store  *sqlstore.Store
	docker *fakeDocker
	exec   *fakeExec
	clk    *timerClock
	logs   *logSink
	dir    string
}

func newFixture(t *testing.T) *fixture {
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
	clk := &timerClock{FakeClock: testclock.NewFakeClock(t0)}
	fd := newFakeDocker(clk)
	ex := &fakeExec{docker: fd, clk: clk}
	logs := &logSink{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("daemon log:\n%s", logs.dump())
		}
	})
	c := &Controller{Guard: reconcile.GuardLimits{MaxUnplannedRemovals: 5},
		Store: st, KeyDir: keyDir, LockDir: filepath.Join(dir, "locks"), Observer: dockerobs.Lister{API: fd}, Executor: ex,
		Options: reconcile.Options{OrphanMinAge: 0, PendingTimeout: time.Minute},
		Clock:   clk, Log: logs.logger(), Workers: 2, ReconcileTimeout: time.Minute, LockTimeout: 10 * time.Second,
	}
	return &fixture{ctrl: c, store: st, docker: fd, exec: ex, clk: clk, logs: logs, dir: dir}
}

// orphan puts a labelled container of user with no session row.
func (f *fixture) orphan(user string) desired.SessionKey {
	k := desired.SessionKey{User: user}
	f.docker.put(observed.Object{
		Kind: observed.KindContainer, ID: "id-" + user, Name: desired.ContainerName(k), Created: t0.Add(-time.Hour), Running: true,
		Labels: map[string]string{
			observed.LabelManagedBy: observed.ManagedByValue, observed.LabelUser: user,
			observed.LabelInstance: f.store.InstanceID(), observed.LabelRole: observed.RoleSession, observed.LabelSession: "gen-" + user,
		},
	})
	return k
}

// recordingQueue notes every AddRateLimited after it took effect, so a test
// steps the clock only once the retry time is fixed.
type recordingQueue struct {
	Queue
	mu      sync.Mutex
	limited map[desired.SessionKey]int
}

func (q *recordingQueue) AddRateLimited(k desired.SessionKey) {
	q.Queue.AddRateLimited(k)
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.limited == nil {
		q.limited = map[desired.SessionKey]int{}
	}
	q.limited[k]++
}

func (q *recordingQueue) limitedCount(k desired.SessionKey) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.limited[k]
}

// watcher is the Docker watcher over the fake Docker.
func (f *fixture) watcher() *dockerobs.Watcher {
	return dockerobs.NewWatcher(f.docker, f.store.InstanceID(), f.logs.logger())
}
