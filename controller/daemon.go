package controller

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/podspawn/podspawn/controller/metrics"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/sqlstore"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/reconcile"
)

// Daemon defaults.
const (
	DefaultDrainTimeout   = 30 * time.Second
	DefaultDBPollInterval = time.Second
	DefaultReconnectBase  = 500 * time.Millisecond
	DefaultReconnectMax   = 10 * time.Second
	DefaultResyncTimeout  = time.Minute
)

// Daemon is the long-running cleanup controller: workers consume the key
// queue; Docker events, database commits, connection-process exits and a
// periodic resync only enqueue keys; each key's reconcile requeues it at its
// own next deadline, so expiries are enforced on time, not at the next tick.
type Daemon struct {
	C *Controller
	// Watcher streams the runtime's changes (observed/dockerobs for Docker).
	Watcher Watcher
	// Interval between full resyncs, the safety net for anything the
	// watchers missed.
	Interval time.Duration
	Workers  int
	// DrainTimeout bounds how long shutdown waits for in-flight reconciles.
	DrainTimeout time.Duration
	// DBPollInterval is how often the database is checked for commits.
	DBPollInterval time.Duration
	// ReconnectBase and ReconnectMax bound the backoff between attempts to
	// reach Docker again.
	ReconnectBase, ReconnectMax time.Duration
	// ResyncTimeout bounds one resync.
	ResyncTimeout time.Duration
	// Queue is used instead of a new NewQueue when set (tests).
	Queue Queue
	// OnResync, when set, runs at the start of every resync (the host
	// access rules); an error is logged and the resync goes on.
	OnResync func(ctx context.Context) error
	// Health, when set, is told whether each resync reached the database
	// and Docker and whether the event stream is connected (/readyz).
	Health *metrics.Health
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

func (d *Daemon) resyncTimeout() time.Duration {
	return orDefault(d.ResyncTimeout, DefaultResyncTimeout)
}

// ErrDrainTimeout is returned when in-flight reconciles did not finish
// within the drain timeout and were cancelled.
var ErrDrainTimeout = errors.New("in-flight reconciles did not finish in time and were cancelled; the next pass completes them")

// Run runs until ctx is cancelled, then stops taking work, lets in-flight
// reconciles finish (bounded by DrainTimeout) and returns. It returns an
// error only for a failed start or an aborted drain: Docker or database
// trouble while running is logged and retried, never fatal.
func (d *Daemon) Run(ctx context.Context) error {
	if d.Interval <= 0 {
		return fmt.Errorf("invalid resync interval %s: must be positive", d.Interval)
	}
	log := d.C.Log
	q := d.Queue
	if q == nil {
		q = NewQueue(d.C.Clock, d.C.Metrics.QueueMetrics())
	}
	workers := d.Workers
	if workers < 1 {
		workers = 1
	}

	watcher, err := sqlstore.OpenWatcher(ctx, d.C.Store.Path())
	if err != nil {
		return err
	}
	defer watcher.Close()

	// In-flight work must survive the signal that stops the daemon, so the
	// workers' context is cancelled only when the drain times out.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	// Stop taking work the moment ctx ends, before the sources wind down.
	var stopping atomic.Bool
	stop := context.AfterFunc(ctx, func() { stopping.Store(true) })
	defer stop()
	var workersDone sync.WaitGroup
	for i := 0; i < workers; i++ {
		workersDone.Add(1)
		go func() {
			defer workersDone.Done()
			d.work(workCtx, q, &stopping)
		}()
	}

	var sources sync.WaitGroup
	sources.Add(1)
	go func() {
		defer sources.Done()
		d.watchDB(ctx, q, watcher)
	}()
	d.watchDocker(ctx, q)
	sources.Wait()

	log.Info("Stopping: finishing in-flight reconciles", "timeout", orDefault(d.DrainTimeout, DefaultDrainTimeout).String())
	drained := make(chan struct{})
	go func() {
		q.ShutDownWithDrain()
		close(drained)
	}()
	timer := d.C.Clock.NewTimer(orDefault(d.DrainTimeout, DefaultDrainTimeout))
	defer timer.Stop()
	select {
	case <-drained:
	case <-timer.C():
		cancelWork()
		q.ShutDown() // stops ShutDownWithDrain waiting
		<-drained
		workersDone.Wait()
		return ErrDrainTimeout
	}
	workersDone.Wait()
	return nil
}

// work is one worker. Once stopping, keys still queued are dropped rather
// than started: the next start's full resync finds whatever they needed.
func (d *Daemon) work(ctx context.Context, q Queue, stopping *atomic.Bool) {
	for {
		k, shutdown := q.Get()
		if shutdown {
			return
		}
		if stopping.Load() {
			q.Done(k)
			continue
		}
		d.C.processItem(ctx, q, k)
	}
}

// watchDocker keeps the Docker event subscription and the periodic resync
// going until ctx ends. Losing Docker is logged once; attempts to reach it
// again back off exponentially up to ReconnectMax, and every (re)connection
// starts with a full resync.
func (d *Daemon) watchDocker(ctx context.Context, q Queue) {
	log := d.C.Log
	base := orDefault(d.ReconnectBase, DefaultReconnectBase)
	maxBackoff := orDefault(d.ReconnectMax, DefaultReconnectMax)
	backoff := base
	down := false // an outage was logged and not yet recovered from
	first := true
	for ctx.Err() == nil {
		// Taken before the list, so events between list and subscription
		// are replayed rather than lost.
		since := d.C.Clock.Now()
		subCtx, cancelSub := context.WithCancel(ctx)
		changes, errs := d.Watcher.Watch(subCtx, since)
		err := d.resync(ctx, q, true)
		if err == nil {
			err = failed(errs)
		}
		d.Health.Stream(err == nil)
		if err != nil {
			cancelSub()
			if ctx.Err() != nil {
				return
			}
			if !down {
				down = true
				log.Error(err, "Resync failed; retrying with backoff until it succeeds", "maxBackoff", maxBackoff.String())
			} else {
				log.V(1).Info("Resync still failing", "err", err.Error(), "retryIn", backoff.String())
			}
			if !d.sleep(ctx, backoff) {
				return
			}
			backoff = min(2*backoff, maxBackoff)
			continue
		}
		backoff = base
		switch {
		case down:
			down = false
			log.Info("Recovered: resubscribed to Docker events and resynced")
		case first:
			log.Info("Watching Docker events", "interval", d.Interval.String())
		}
		first = false
		err = d.listen(ctx, q, changes, errs)
		d.Health.Stream(false)
		cancelSub()
		if ctx.Err() != nil {
			return
		}
		down = true
		log.Error(err, "Lost the Docker event stream; reconnecting with backoff", "maxBackoff", maxBackoff.String())
	}
}

// listen reads events and runs the periodic resync until the stream fails
// or ctx ends.
func (d *Daemon) listen(ctx context.Context, q Queue, changes <-chan observed.Change, errs <-chan error) error {
	log := d.C.Log
	timer := d.C.Clock.NewTimer(d.Interval)
	defer timer.Stop()
	failing := false
	retry := orDefault(d.ReconnectBase, DefaultReconnectBase)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case c := <-changes:
			d.C.Log.V(2).Info("Docker event", "user", c.Key.User, "project", c.Key.Project, "type", c.Kind, "event", c.Action)
			q.Add(c.Key)
		case err := <-errs:
			return err
		case <-timer.C():
			if err := d.resync(ctx, q, false); err != nil {
				// Typically a busy database or a Docker hiccup: retry soon,
				// log once per failure spell.
				if !failing {
					log.Error(err, "Resync failed; retrying")
				}
				failing = true
				timer.Reset(retry)
				retry = min(2*retry, d.Interval)
				continue
			}
			if failing {
				log.Info("Resync succeeded again")
			}
			failing = false
			retry = orDefault(d.ReconnectBase, DefaultReconnectBase)
			timer.Reset(d.Interval)
		}
	}
}

// sleep waits for d or ctx; it reports false when ctx ended.
func (d *Daemon) sleep(ctx context.Context, dur time.Duration) bool {
	t := d.C.Clock.NewTimer(dur)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C():
		return true
	}
}

// resync loads all desired and observed state. With all, every key in
// desired ∪ observed is enqueued (start and reconnection); otherwise the
// full plan is computed once and only keys with work are enqueued now, and
// keys with a future deadline at that deadline, which finds the same work
// without a reconcile per idle session on every tick.
func (d *Daemon) resync(ctx context.Context, q Queue, all bool) error {
	start := d.C.Clock.Now()
	err := d.resyncOnce(ctx, q, all)
	d.C.Metrics.ObservePass(metrics.PassResync, d.C.Clock.Since(start), err)
	return err
}

// resyncOnce is resync without its metrics.
func (d *Daemon) resyncOnce(ctx context.Context, q Queue, all bool) error {
	ctx, cancel := context.WithTimeout(ctx, d.resyncTimeout())
	defer cancel()
	if d.OnResync != nil {
		if err := d.OnResync(ctx); err != nil {
			d.C.Log.Error(err, "Resync: the host access rules could not be brought in line; retrying at the next resync")
		}
	}
	tick := d.C.guard.asked.Add(1)
	// The daemon detects clock steps in-process too (planNow); the stored
	// sample carries a hold a one-shot pass set before the daemon started,
	// and keeps the sample fresh for the one-shot passes after it.
	sample, err := d.C.checkStoredClock(ctx)
	if err != nil {
		d.Health.Database(err)
		return fmt.Errorf("comparing the clocks with the last pass's: %w", err)
	}
	des, err := d.C.LoadDesired(ctx)
	d.Health.Database(err)
	if err != nil {
		return fmt.Errorf("loading desired state: %w", err)
	}
	// Not recording costs the next pass one comparison, not this pass.
	if err := d.C.recordClock(ctx, sample); err != nil {
		d.Health.Database(err)
		d.C.Log.Error(err, "Recording this pass's clock sample failed; the next pass compares with an older one")
	}
	obs, err := d.C.Observe(ctx, des)
	d.Health.Docker(err)
	if err != nil {
		return fmt.Errorf("observing Docker: %w", err)
	}
	d.Watcher.Seen(obs.Objects, des.InstanceID)
	now := d.C.planNow()
	d.C.reportFutureRows(des, now)
	plan := d.C.guarded(reconcile.Compute(des, obs, now, d.C.options()), des, obs)
	d.C.remember(tick, plan.Holds)
	d.C.LogHolds(plan)
	d.C.Metrics.SetHeldLastResync(len(plan.Held))
	n := 0
	if all {
		keys := map[desired.SessionKey]bool{}
		for _, s := range des.Sessions {
			keys[s.Key] = true
		}
		for _, o := range obs.Objects {
			if foreign(o.Labels, des.InstanceID) {
				continue
			}
			k, _ := o.Key()
			keys[k] = true
		}
		for k := range keys {
			q.Add(k)
		}
		n = len(keys)
	} else {
		for _, k := range planKeys(plan) {
			q.Add(k)
			n++
		}
		for _, w := range plan.Wakes {
			q.AddAfter(w.Key, w.At.Sub(now))
		}
	}
	d.C.Log.V(1).Info("Resynced", append([]any{"full", all, "enqueued", n, "sessions", len(des.Sessions), "objects", len(obs.Objects)}, PlanLogValues(plan)...)...)
	return nil
}

// watchDB polls the database for commits by other processes and watches
// the processes behind leases.
func (d *Daemon) watchDB(ctx context.Context, q Queue, w *sqlstore.Watcher) {
	notify := func(k desired.SessionKey) {
		d.C.Log.V(2).Info("Session changed", "user", k.User, "project", k.Project)
		q.Add(k)
	}
	procs := newProcWatcher(d.C.Log, notify)
	defer procs.close()
	dw := &dbWatcher{w: w, log: d.C.Log, procs: procs, notify: notify}
	dw.poll(ctx)
	t := d.C.Clock.NewTicker(orDefault(d.DBPollInterval, DefaultDBPollInterval))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
			dw.poll(ctx)
		}
	}
}

// failed returns a stream error that is already there, without waiting.
func failed(errs <-chan error) error {
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}
