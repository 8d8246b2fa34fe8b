package controller_test

import (
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/utils/clock"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/podspawn/podspawn/controller"
	"github.com/podspawn/podspawn/desired"
)

// waitFor bounds every wait on another goroutine. It is a deadline for a
// condition, never a synchronisation sleep.
const waitFor = 20 * time.Second

var epoch = time.Date(2026, 11, 29, 7, 0, 0, 0, time.UTC)

// timerClock is a fake clock that reports every timer the delaying queue
// arms. The queue arms a timer for the head of its waiting heap only once
// it has taken an item in, so a recorded duration is exact proof of the
// delay the queue applies (the fake time does not move in between).
//
// Its tickers never tick. The only ticker the queue makes is its 10s
// safety heartbeat, which would otherwise wake the waiting loop on large
// steps and re-arm timers concurrently with the test's next step; without
// it the loop moves only when an item is added or the armed timer fires.
type timerClock struct {
	*testingclock.FakeClock
	timers chan time.Duration
}

func newTimerClock() *timerClock {
	return &timerClock{FakeClock: testingclock.NewFakeClock(epoch), timers: make(chan time.Duration, 1000)}
}

func (c *timerClock) NewTimer(d time.Duration) clock.Timer {
	// Report only once the timer is armed, so a test that steps the clock
	// after seeing the report never steps past an unarmed timer.
	timer := c.FakeClock.NewTimer(d)
	c.timers <- d
	return timer
}

func (c *timerClock) NewTicker(time.Duration) clock.Ticker { return silentTicker{} }

type silentTicker struct{}

func (silentTicker) C() <-chan time.Time { return nil }
func (silentTicker) Stop()               {}

// nextTimer returns the duration of the next timer the queue arms.
func (c *timerClock) nextTimer(t *testing.T) time.Duration {
	t.Helper()
	select {
	case d := <-c.timers:
		return d
	case <-time.After(waitFor):
		t.Fatal("the queue armed no timer")
		return 0
	}
}

func newTestQueue(t *testing.T) (controller.Queue, *timerClock) {
	clk := newTimerClock()
	q := controller.NewQueue(clk, nil)
	t.Cleanup(q.ShutDown)
	return q, clk
}

type getResult struct {
	key      desired.SessionKey
	shutdown bool
}

// get takes the next key, failing the test if none arrives in time.
func get(t *testing.T, q controller.Queue) (desired.SessionKey, bool) {
	t.Helper()
	ch := make(chan getResult, 1)
	go func() {
		k, sd := q.Get()
		ch <- getResult{k, sd}
	}()
	select {
	case r := <-ch:
		return r.key, r.shutdown
	case <-time.After(waitFor):
		t.Fatal("no key arrived")
		return desired.SessionKey{}, false
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(waitFor)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

var (
	keyA = desired.SessionKey{User: "alice"}
	keyB = desired.SessionKey{User: "bob", Project: "web"}
	keyC = desired.SessionKey{User: "carol"}
)

func TestQueueCollapsesRepeatedAdds(t *testing.T) {
	q, _ := newTestQueue(t)
	q.Add(keyA)
	q.Add(keyB)
	q.Add(keyA)
	q.Add(keyA)
	if n := q.Len(); n != 2 {
		t.Fatalf("Len = %d after adding alice three times and bob once, want 2", n)
	}
	var got []desired.SessionKey
	for range 2 {
		k, _ := get(t, q)
		got = append(got, k)
		q.Done(k)
	}
	if diff := cmp.Diff([]desired.SessionKey{keyA, keyB}, got); diff != "" {
		t.Fatalf("keys (-want +got):\n%s", diff)
	}
	if n := q.Len(); n != 0 {
		t.Fatalf("Len = %d after draining, want 0", n)
	}
}

func TestQueueAddWhileProcessingComesBackOnceAfterDone(t *testing.T) {
	q, _ := newTestQueue(t)
	q.Add(keyA)
	k, _ := get(t, q)
	if k != keyA {
		t.Fatalf("got %v, want %v", k, keyA)
	}
	q.Add(keyA)
	q.Add(keyA)
	if n := q.Len(); n != 0 {
		t.Fatalf("Len = %d while alice is processing, want 0 (a key is held back until Done)", n)
	}
	q.Done(keyA)
	if n := q.Len(); n != 1 {
		t.Fatalf("Len = %d after Done, want 1 (the adds during processing collapse into one)", n)
	}
	k, _ = get(t, q)
	if k != keyA {
		t.Fatalf("got %v, want %v", k, keyA)
	}
	q.Done(keyA)
	if n := q.Len(); n != 0 {
		t.Fatalf("Len = %d, want 0: the key came back more than once", n)
	}
}

// TestQueueNeverHandsAKeyToTwoWorkers hammers a few keys with adds while
// four workers process them and checks that no key is ever being
// processed twice at the same time.
func TestQueueNeverHandsAKeyToTwoWorkers(t *testing.T) {
	q, _ := newTestQueue(t)
	keys := []desired.SessionKey{keyA, keyB, keyC}
	var (
		mu        sync.Mutex
		inFlight  = map[desired.SessionKey]bool{}
		processed = map[desired.SessionKey]int{}
		overlaps  []desired.SessionKey
		wg        sync.WaitGroup
	)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k, shutdown := q.Get()
				if shutdown {
					return
				}
				mu.Lock()
				if inFlight[k] {
					overlaps = append(overlaps, k)
				}
				inFlight[k] = true
				processed[k]++
				mu.Unlock()
				for range 10 {
					runtime.Gosched() // widen the window in which an overlap would show
				}
				mu.Lock()
				inFlight[k] = false
				mu.Unlock()
				q.Done(k)
			}
		}()
	}
	for i := range 3000 {
		q.Add(keys[i%len(keys)])
		if i%7 == 0 {
			runtime.Gosched()
		}
	}
	q.ShutDownWithDrain()
	wg.Wait()
	if len(overlaps) > 0 {
		t.Fatalf("keys processed by two workers at once: %v", overlaps)
	}
	for _, k := range keys {
		if processed[k] == 0 {
			t.Errorf("key %v was never processed", k)
		}
	}
}

func TestQueueAddAfterKeepsEarliestDeadline(t *testing.T) {
	q, clk := newTestQueue(t)

	q.AddAfter(keyA, 10*time.Second)
	if d := clk.nextTimer(t); d != 10*time.Second {
		t.Fatalf("timer = %s, want 10s", d)
	}
	q.AddAfter(keyA, 3*time.Second)
	if d := clk.nextTimer(t); d != 3*time.Second {
		t.Fatalf("timer after an earlier AddAfter = %s, want 3s (the earliest deadline wins)", d)
	}
	q.AddAfter(keyA, 7*time.Second)
	if d := clk.nextTimer(t); d != 3*time.Second {
		t.Fatalf("timer after a later AddAfter = %s, want still 3s", d)
	}

	// The waiting loop compares against the fake time, so nothing can be
	// ready before the clock reaches the deadline.
	clk.Step(3*time.Second - time.Nanosecond)
	if n := q.Len(); n != 0 {
		t.Fatalf("Len = %d one nanosecond before the deadline, want 0", n)
	}
	clk.Step(time.Nanosecond)
	k, _ := get(t, q)
	if k != keyA {
		t.Fatalf("got %v, want %v", k, keyA)
	}
	q.Done(keyA)

	// The 7s and 10s requests were merged into the 3s one: past both, only
	// a marker key arrives. A leftover alice entry would be ready earlier
	// than the marker and so be handed out first.
	q.AddAfter(keyB, 8*time.Second)
	if d := clk.nextTimer(t); d != 8*time.Second {
		t.Fatalf("timer = %s, want 8s", d)
	}
	clk.Step(8 * time.Second)
	k, _ = get(t, q)
	if k != keyB {
		t.Fatalf("got %v, want only the marker %v: alice came back a second time", k, keyB)
	}
	q.Done(k)
	if n := q.Len(); n != 0 {
		t.Fatalf("Len = %d, want 0", n)
	}
}

func TestQueueAddAfterZeroAddsAtOnce(t *testing.T) {
	q, _ := newTestQueue(t)
	q.AddAfter(keyA, 0)
	q.AddAfter(keyB, -time.Second)
	if n := q.Len(); n != 2 {
		t.Fatalf("Len = %d, want 2: a deadline already reached must not wait", n)
	}
}

// TestQueueBackoffGrowsCapsAndResets drives a failing key through the
// rate limiter and checks each delay the queue applies: 500ms doubling,
// capped at 5m, independent per key, and back to 500ms after Forget.
func TestQueueBackoffGrowsCapsAndResets(t *testing.T) {
	q, clk := newTestQueue(t)
	want := []time.Duration{
		500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second,
		16 * time.Second, 32 * time.Second, 64 * time.Second, 128 * time.Second, 256 * time.Second,
		controller.BackoffMax, controller.BackoffMax, controller.BackoffMax,
	}
	fail := func(k desired.SessionKey) time.Duration {
		t.Helper()
		q.AddRateLimited(k)
		d := clk.nextTimer(t)
		if n := q.Len(); n != 0 {
			t.Fatalf("Len = %d right after AddRateLimited, want 0 (the key waits out its backoff)", n)
		}
		clk.Step(d)
		got, _ := get(t, q)
		if got != k {
			t.Fatalf("got %v after the backoff, want %v", got, k)
		}
		q.Done(got)
		return d
	}

	var got []time.Duration
	for i := range want {
		got = append(got, fail(keyA))
		if n := q.NumRequeues(keyA); n != i+1 {
			t.Fatalf("NumRequeues = %d after %d failures", n, i+1)
		}
		if i == 6 {
			// Another key's backoff is its own.
			if d := fail(keyB); d != controller.BackoffBase {
				t.Fatalf("bob's first backoff = %s while alice is at %s, want %s", d, want[i], controller.BackoffBase)
			}
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("backoff sequence (-want +got):\n%s", diff)
	}

	q.Forget(keyA)
	if n := q.NumRequeues(keyA); n != 0 {
		t.Fatalf("NumRequeues = %d after Forget, want 0", n)
	}
	if d := fail(keyA); d != controller.BackoffBase {
		t.Fatalf("backoff after Forget = %s, want %s", d, controller.BackoffBase)
	}
	if n := q.NumRequeues(keyB); n != 1 {
		t.Fatalf("bob's NumRequeues = %d, want 1 (Forget of alice must not touch bob)", n)
	}
}

func TestQueueShutDownWithDrainWaitsForKeysInProcess(t *testing.T) {
	q, _ := newTestQueue(t)
	q.Add(keyA)
	q.Add(keyB)
	k, _ := get(t, q)
	if k != keyA {
		t.Fatalf("got %v, want %v", k, keyA)
	}

	drained := make(chan struct{})
	go func() {
		q.ShutDownWithDrain()
		close(drained)
	}()
	eventually(t, "the queue to start shutting down", q.ShuttingDown)

	q.Add(keyC) // refused: the queue is shutting down
	k, shutdown := get(t, q)
	if k != keyB || shutdown {
		t.Fatalf("got %v (shutdown %v), want %v: keys queued before the shutdown are still handed out", k, shutdown, keyB)
	}
	q.Done(keyB)
	select {
	case <-drained:
		t.Fatal("ShutDownWithDrain returned while alice was still being processed")
	default:
	}
	q.Done(keyA)
	select {
	case <-drained:
	case <-time.After(waitFor):
		t.Fatal("ShutDownWithDrain did not return after the last Done")
	}
	if _, shutdown := get(t, q); !shutdown {
		t.Fatal("Get after the drain must report shutdown (carol was added after the shutdown and must be dropped)")
	}
}
