package controller

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/api/types/events"
	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/lock"
	"github.com/podspawn/podspawn/desired/sqlstore"
	"github.com/podspawn/podspawn/observed/proc"
	"github.com/podspawn/podspawn/reconcile"
)

// startWorkers runs n daemon workers on q until the test ends.
func startWorkers(t *testing.T, d *Daemon, q Queue, n int) {
	t.Helper()
	var stopping atomic.Bool
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.work(context.Background(), q, &stopping)
		}()
	}
	t.Cleanup(func() {
		q.ShutDown()
		wg.Wait()
	})
}

// A key whose reconcile keeps failing is retried at 0.5s, 1s, 2s, ...
// capped at 5m, while other keys are reconciled at once; a pass with
// nothing left to do forgets the backoff.
func TestDaemonFailingKeyBacksOffWithoutStarvingOthers(t *testing.T) {
	f := newFixture(t)
	d := &Daemon{C: f.ctrl}
	q := &recordingQueue{Queue: NewQueue(quietClock{f.clk}, nil)}
	startWorkers(t, d, q, 2)
	// waitArmed waits until the queue's waiting loop has armed its timer
	// for the next retry, d from now. Stepping the fake clock before that
	// is a race: a loop that reads the time before the step and arms its
	// timer after it overshoots the retry, which then never comes (this
	// test failed so under the race detector, now and then).
	armed := map[time.Duration]int{}
	waitArmed := func(d time.Duration) {
		t.Helper()
		armed[d]++
		n := armed[d]
		waitFor(t, fmt.Sprintf("the queue to arm its %s timer", d), func() bool { return f.clk.countTimers(d) >= n })
	}

	bad := f.orphan("dmfail")
	f.exec.setFn(func(_ context.Context, a reconcile.Action) (actions.Outcome, bool, error) {
		if a.Key == bad {
			return "", true, errors.New("network has active endpoints")
		}
		// The other keys' removals report nothing changed, so their passes
		// leave no rate-limited follow-up in the queue's waiting heap: the
		// failing key's retry is then the only timer the queue arms, and
		// waitArmed can tell when it is armed.
		f.docker.remove(a.Target)
		return actions.Unchanged, true, nil
	})
	q.Add(bad)
	waitFor(t, "the first failure", func() bool { return q.limitedCount(bad) == 1 })

	var gaps []time.Duration
	for n := 1; n <= 12; n++ {
		want := min(BackoffBase<<(n-1), BackoffMax)
		waitArmed(want)
		f.clk.Step(want - time.Millisecond)
		// Another key is handled while the failing one waits.
		ok := f.orphan(fmt.Sprintf("dmok%d", n))
		q.Add(ok)
		waitFor(t, "another key to be cleaned", func() bool { return !f.docker.has(desired.ContainerName(ok)) })
		if got := len(f.exec.attemptsOf(bad)); got != n {
			t.Fatalf("after %s of a %s backoff: %d attempts, want %d", want-time.Millisecond, want, got, n)
		}
		f.clk.Step(time.Millisecond)
		waitFor(t, fmt.Sprintf("retry %d", n), func() bool { return q.limitedCount(bad) == n+1 })
		at := f.exec.attemptsOf(bad)
		gaps = append(gaps, at[n].Sub(at[n-1]))
	}
	s := time.Second
	wantGaps := []time.Duration{s / 2, s, 2 * s, 4 * s, 8 * s, 16 * s, 32 * s, 64 * s, 128 * s, 256 * s, 300 * s, 300 * s}
	if diff := cmp.Diff(wantGaps, gaps); diff != "" {
		t.Errorf("retry gaps (-want +got):\n%s", diff)
	}

	f.exec.setFn(nil)
	waitArmed(BackoffMax)
	f.clk.Step(BackoffMax)
	waitFor(t, "the failing key to recover", func() bool { return !f.docker.has(desired.ContainerName(bad)) })
	// The recovering pass changed something, so its follow-up look goes
	// through the rate limiter and keeps the (capped) backoff; only the
	// next pass, with nothing to do, forgets it.
	waitFor(t, "the look after the recovery to be scheduled", func() bool { return q.limitedCount(bad) == 14 })
	if n := q.NumRequeues(bad); n != 14 {
		t.Fatalf("NumRequeues = %d after the recovering pass, want 14 (the backoff is kept after a pass that changed something)", n)
	}
	waitArmed(BackoffMax)
	f.clk.Step(BackoffMax)
	waitFor(t, "the backoff to be forgotten", func() bool { return q.NumRequeues(bad) == 0 })
	if n := f.logs.count(`"msg"="Reconcile failed"`, `"user"="dmfail"`); n != 13 {
		t.Errorf("logged %d failures of dmfail, want 13 (one per attempt)", n)
	}
}

// A panic in one key's reconcile becomes that key's error; the worker
// goes on with other keys.
func TestDaemonRecoversPanicInReconcile(t *testing.T) {
	f := newFixture(t)
	d := &Daemon{C: f.ctrl}
	q := &recordingQueue{Queue: NewQueue(f.clk, nil)}
	startWorkers(t, d, q, 1)

	bad := f.orphan("dmpanic")
	f.exec.setFn(func(_ context.Context, a reconcile.Action) (actions.Outcome, bool, error) {
		if a.Key == bad {
			var m map[string]int
			m["boom"]++ // a real runtime panic, not a staged one
		}
		return "", false, nil
	})
	q.Add(bad)
	waitFor(t, "the panic to be retried later", func() bool { return q.limitedCount(bad) == 1 })
	if f.logs.count(`"msg"="Reconcile failed"`, "panic while reconciling dmpanic", "assignment to entry in nil map") != 1 {
		t.Errorf("panic not logged as the key's error:\n%s", f.logs.dump())
	}
	ok := f.orphan("dmafter")
	q.Add(ok)
	waitFor(t, "the next key on the same worker", func() bool { return !f.docker.has(desired.ContainerName(ok)) })
}

// Docker down at start: one error line however many retries, retries back
// off 0.5s doubling to the 10s cap, and the first successful attempt
// resubscribes and resyncs fully. A broken event stream later is logged
// once and reconnected at once; events enqueue their key.
func TestDaemonDockerOutage(t *testing.T) {
	f := newFixture(t)
	f.docker.setDown(true)
	d := &Daemon{C: f.ctrl, Watcher: f.watcher(), Interval: time.Hour, Workers: 2}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	waitFor(t, "the first attempt", func() bool { return len(f.docker.subscriptions()) == 2 })
	seen := map[time.Duration]int{}
	s := time.Second
	for i, b := range []time.Duration{s / 2, s, 2 * s, 4 * s, 8 * s, 10 * s, 10 * s} {
		seen[b]++
		waitFor(t, fmt.Sprintf("backoff %s", b), func() bool { return f.clk.countTimers(b) == seen[b] })
		f.clk.Step(b)
		waitFor(t, fmt.Sprintf("attempt %d", i+2), func() bool { return len(f.docker.subscriptions()) == 2*(i+2) })
	}
	if n := f.logs.count("Resync failed; retrying with backoff"); n != 1 {
		t.Errorf("outage logged %d times at the default level, want once", n)
	}

	// An orphan appeared while Docker was away; reconnection resyncs it.
	// Docker comes back only while the daemon sleeps, so no attempt sees
	// it half up.
	waitFor(t, "the next backoff", func() bool { return f.clk.countTimers(10*s) == 3 })
	orphan := f.orphan("dmoutage")
	f.docker.setDown(false)
	f.clk.Step(10 * s)
	waitFor(t, "the orphan to be removed after reconnecting", func() bool { return !f.docker.has(desired.ContainerName(orphan)) })
	waitFor(t, "the recovery line", func() bool { return f.logs.count("Recovered: resubscribed to Docker events and resynced") == 1 })
	subs := f.docker.subscriptions()
	if got, want := subs[len(subs)-1], t0.Add(45500*time.Millisecond); !got.Equal(want) {
		t.Errorf("reconnected at %s, want %s", got, want)
	}

	// The stream breaks (dockerd restarted): reconnect without waiting.
	before := len(f.docker.subscriptions())
	orphan2 := f.orphan("dmrestart")
	f.docker.breakStreams()
	waitFor(t, "resubscription", func() bool { return len(f.docker.subscriptions()) == before+2 })
	waitFor(t, "the resync after resubscribing", func() bool { return !f.docker.has(desired.ContainerName(orphan2)) })
	if n := f.logs.count("Lost the Docker event stream"); n != 1 {
		t.Errorf("stream loss logged %d times, want 1", n)
	}

	// An event enqueues its key.
	ev := f.orphan("dmevent")
	f.docker.send(t, events.Message{Type: events.ContainerEventType, Action: events.ActionDie, Actor: events.Actor{ID: "id-dmevent",
		Attributes: map[string]string{"managed-by": "podspawn", "podspawn.user": "dmevent", "podspawn.instance": f.store.InstanceID()}}})
	waitFor(t, "the event's key to be reconciled", func() bool { return !f.docker.has(desired.ContainerName(ev)) })
}

// Shutdown lets the in-flight reconcile finish, starts nothing new and
// returns nil.
func TestDaemonShutdownDrainsInFlight(t *testing.T) {
	f := newFixture(t)
	release := make(chan struct{})
	var started atomic.Int32
	f.exec.setFn(func(_ context.Context, a reconcile.Action) (actions.Outcome, bool, error) {
		started.Add(1)
		<-release
		return "", false, nil // then remove it as usual
	})
	var keys []desired.SessionKey
	for i := 0; i < 5; i++ {
		keys = append(keys, f.orphan(fmt.Sprintf("dmdrain%d", i)))
	}
	d := &Daemon{C: f.ctrl, Watcher: f.watcher(), Interval: time.Hour, Workers: 1}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	waitFor(t, "a reconcile in flight", func() bool { return started.Load() == 1 })
	cancel()
	waitFor(t, "the drain to start", func() bool { return f.logs.count("Stopping: finishing in-flight reconciles") == 1 })
	select {
	case err := <-done:
		t.Fatalf("Run returned (%v) with a reconcile in flight", err)
	default:
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	removed := 0
	for _, k := range keys {
		if !f.docker.has(desired.ContainerName(k)) {
			removed++
		}
	}
	if started.Load() != 1 || removed != 1 {
		t.Errorf("after shutdown: %d reconciles started, %d orphans removed; want exactly the in-flight one", started.Load(), removed)
	}
}

// A reconcile that does not finish within the drain timeout is cancelled
// and Run says so.
func TestDaemonShutdownDrainTimeout(t *testing.T) {
	f := newFixture(t)
	var started atomic.Int32
	f.exec.setFn(func(ctx context.Context, a reconcile.Action) (actions.Outcome, bool, error) {
		started.Add(1)
		<-ctx.Done()
		return "", true, ctx.Err()
	})
	f.orphan("dmstuck")
	d := &Daemon{C: f.ctrl, Watcher: f.watcher(), Interval: time.Hour, Workers: 1, DrainTimeout: 30 * time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	waitFor(t, "a reconcile in flight", func() bool { return started.Load() == 1 })
	cancel()
	waitFor(t, "the drain timer", func() bool { return f.clk.countTimers(30*time.Second) == 1 })
	f.clk.Step(30 * time.Second)
	if err := <-done; !errors.Is(err, ErrDrainTimeout) {
		t.Fatalf("Run = %v, want ErrDrainTimeout", err)
	}
}

func session(user, project, id string, status desired.Status) *desired.Session {
	k := desired.SessionKey{User: user, Project: project}
	return &desired.Session{
		Key: k, ID: id, Mode: desired.ModeGracePeriod, Status: status, CreatedAt: t0, MaxLifetimeAt: t0.Add(8 * time.Hour),
		GracePeriod: time.Minute, Spec: desired.Spec{Image: "img", Shell: "/bin/sh", ContainerName: desired.ContainerName(k), NetworkName: desired.NetworkName(k)},
	}
}

type keyLog struct {
	mu   sync.Mutex
	keys []desired.SessionKey
	ch   chan desired.SessionKey
}

func newKeyLog() *keyLog { return &keyLog{ch: make(chan desired.SessionKey, 100)} }

func (l *keyLog) notify(k desired.SessionKey) {
	l.mu.Lock()
	l.keys = append(l.keys, k)
	l.mu.Unlock()
	l.ch <- k
}

func (l *keyLog) take() []desired.SessionKey {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.keys
	l.keys = nil
	for len(l.ch) > 0 {
		<-l.ch
	}
	return out
}

// Commits by other processes enqueue exactly the keys whose rows or
// leases changed.
func TestDBWatcherEnqueuesChangedKeys(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	w, err := sqlstore.OpenWatcher(ctx, f.store.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	kl := newKeyLog()
	procs := newProcWatcher(logr.Discard(), kl.notify)
	defer procs.close()
	dw := &dbWatcher{w: w, log: f.logs.logger(), procs: procs, notify: kl.notify}

	a := session("dma", "", "id-a", desired.StatusRunning)
	b := session("dmb", "web", "id-b", desired.StatusRunning)
	for _, s := range []*desired.Session{a, b} {
		if err := f.store.Create(ctx, s, t0); err != nil {
			t.Fatal(err)
		}
	}
	self, err := proc.Self()
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name string
		edit func() error
		want []desired.SessionKey
	}{
		{"priming", func() error { return nil }, nil},
		{"no commit", func() error { return nil }, nil},
		{"grace started", func() error {
			_, err := f.store.StartGrace(ctx, a.ID, t0.Add(time.Minute), t0.Add(time.Second))
			return err
		}, []desired.SessionKey{a.Key}},
		{"lease added", func() error { _, err := f.store.AddLease(ctx, b.ID, self.PID, self.Start, t0); return err }, []desired.SessionKey{b.Key}},
		{"row removed", func() error {
			if _, err := f.store.MarkTerminating(ctx, a.ID, "user-requested", t0); err != nil {
				return err
			}
			_, err := f.store.DeleteSession(ctx, a.ID)
			return err
		}, []desired.SessionKey{a.Key}},
		{"row added", func() error { return f.store.Create(ctx, session("dmc", "", "id-c", desired.StatusCreating), t0) }, []desired.SessionKey{{User: "dmc"}}},
	}
	for _, st := range steps {
		if err := st.edit(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if err := dw.check(ctx); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if diff := cmp.Diff(st.want, kl.take()); diff != "" {
			t.Errorf("%s: enqueued keys (-want +got):\n%s", st.name, diff)
		}
	}
	// Our own process holds b's lease: watched, not reported.
	procs.mu.Lock()
	watched := len(procs.watched)
	procs.mu.Unlock()
	if watched != 1 {
		t.Errorf("%d lease processes watched, want 1", watched)
	}
}

// startHelper starts a process to hold a lease, reaped at test end.
func startHelper(t *testing.T) (*exec.Cmd, uint64) {
	t.Helper()
	cmd := exec.Command("sleep", "300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	st, err := proc.StartTime(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	return cmd, st
}

func TestProcWatcherReportsExits(t *testing.T) {
	kl := newKeyLog()
	pw := newProcWatcher(logr.Discard(), kl.notify)
	defer pw.close()
	alive, aliveStart := startHelper(t)
	dropped, droppedStart := startHelper(t)
	self, err := proc.Self()
	if err != nil {
		t.Fatal(err)
	}
	kAlive, kDropped, kReused := desired.SessionKey{User: "dmalive"}, desired.SessionKey{User: "dmdropped"}, desired.SessionKey{User: "dmreused"}
	leases := []sqlstore.LeaseRef{
		{Key: kAlive, ID: 1, PID: alive.Process.Pid, PIDStart: aliveStart},
		{Key: kDropped, ID: 2, PID: dropped.Process.Pid, PIDStart: droppedStart},
		// Our pid with another start time: a reused pid, so already dead.
		{Key: kReused, ID: 3, PID: self.PID, PIDStart: self.Start + 1},
	}
	pw.sync(leases)
	if got := <-kl.ch; got != kReused {
		t.Fatalf("first report %v, want the reused pid's lease", got)
	}
	// Lease 2 is released: its process exiting later is not reported.
	pw.sync(leases[:1])
	dropped.Process.Kill()
	dropped.Wait()
	alive.Process.Kill()
	alive.Wait()
	select {
	case got := <-kl.ch:
		if got != kAlive {
			t.Fatalf("reported %v, want %v", got, kAlive)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the exit of a lease process was not reported")
	}
	// Syncing again does not report the same dead lease twice.
	pw.sync(leases[:1])
	if diff := cmp.Diff([]desired.SessionKey{kReused, kAlive}, kl.take()); diff != "" {
		t.Errorf("reports (-want +got):\n%s", diff)
	}
}

func TestDaemonLock(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	path := lock.DaemonPath(dir)
	if pid, running, err := lock.DaemonHolder(path); err != nil || running || pid != 0 {
		t.Fatalf("before: holder = %d, %v, %v; want none", pid, running, err)
	}
	l, err := lock.AcquireDaemon(path)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if want := strconv.Itoa(os.Getpid()) + "\n"; string(data) != want {
		t.Errorf("lock file holds %q, want %q", data, want)
	}
	_, err = lock.AcquireDaemon(path)
	if !errors.Is(err, lock.ErrDaemonRunning) || !strings.Contains(err.Error(), "pid "+strconv.Itoa(os.Getpid())) || !strings.Contains(err.Error(), path) {
		t.Errorf("second acquire = %v; want lock.ErrDaemonRunning naming the pid and %s", err, path)
	}
	if pid, running, err := lock.DaemonHolder(path); err != nil || !running || pid != os.Getpid() {
		t.Errorf("while held: holder = %d, %v, %v; want %d, true", pid, running, err, os.Getpid())
	}
	l.Release()
	if pid, running, err := lock.DaemonHolder(path); err != nil || running || pid != 0 {
		t.Errorf("after release: holder = %d, %v, %v; want none", pid, running, err)
	}
	l2, err := lock.AcquireDaemon(path)
	if err != nil {
		t.Fatalf("re-acquire after release: %v", err)
	}
	l2.Release()
}
