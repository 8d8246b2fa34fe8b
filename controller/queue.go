package controller

import (
	"context"
	"errors"
	"time"

	"golang.org/x/time/rate"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/controller/metrics"
	"github.com/podspawn/podspawn/desired"
)

// Queue is the client-go rate-limiting work queue keyed by session key:
// a key is never processed by two workers at once, repeated adds collapse,
// failures back off per key and AddAfter keeps the earliest deadline.
type Queue = workqueue.TypedRateLimitingInterface[desired.SessionKey]

// Backoff bounds for a failing key.
const (
	BackoffBase = 500 * time.Millisecond
	BackoffMax  = 5 * time.Minute
)

// NewQueue returns the queue with per-key exponential backoff
// (500ms doubling to 5m) combined with an overall token bucket, so one
// failing key can neither hot-loop nor starve the others. It reports
// depth, adds, latency, work duration and retries to mp (nil: client-go's
// no-op default).
func NewQueue(clk clock.WithTicker, mp workqueue.MetricsProvider) Queue {
	limiter := workqueue.NewTypedMaxOfRateLimiter[desired.SessionKey](
		workqueue.NewTypedItemExponentialFailureRateLimiter[desired.SessionKey](BackoffBase, BackoffMax),
		&workqueue.TypedBucketRateLimiter[desired.SessionKey]{Limiter: rate.NewLimiter(rate.Limit(20), 200)},
	)
	return workqueue.NewTypedRateLimitingQueueWithConfig(limiter, workqueue.TypedRateLimitingQueueConfig[desired.SessionKey]{
		Name:            "podspawn",
		Clock:           clk,
		MetricsProvider: mp,
	})
}

// processNextItem takes one key off the queue, reconciles it and decides
// when it comes back: after a pass that changed something it is looked at
// again through the rate limiter; after a pass with nothing to do its
// backoff is forgotten and it returns at its next deadline; on a transient
// error it backs off; on a terminal one it waits for the next resync or
// event.
func (c *Controller) processNextItem(ctx context.Context, q Queue) bool {
	k, shutdown := q.Get()
	if shutdown {
		return false
	}
	c.processItem(ctx, q, k)
	return true
}

// processItem reconciles k, which the caller took off q with Get.
func (c *Controller) processItem(ctx context.Context, q Queue, k desired.SessionKey) {
	defer q.Done(k)
	start := c.Clock.Now()
	rep := c.ReconcileKey(ctx, k)
	c.Metrics.ObservePass(metrics.PassReconcile, c.Clock.Since(start), rep.Err)
	log := c.Log.WithValues("user", k.User, "project", k.Project)
	switch {
	case rep.Err == nil && changed(rep):
		// Executed work changes state; look again so the key converges
		// (for example create, then mark-running, then start-grace). The
		// look goes through the rate limiter and the backoff is kept until
		// a pass has nothing to do: a key whose every pass changes
		// something (a container that dies right after each start) slows
		// down to the limiter's pace instead of looping hot. Events still
		// bring it back at once, and the next look sets its deadline.
		log.V(1).Info("Requeue after changes", "attempt", q.NumRequeues(k)+1)
		q.AddRateLimited(k)
	case rep.Err == nil:
		q.Forget(k)
		if w, ok := wakeFor(rep.Plan, k); ok {
			d := w.Sub(c.Clock.Now())
			log.V(1).Info("Requeue at deadline", "requeueAfter", d)
			q.AddAfter(k, d)
		}
	case errors.Is(rep.Err, actions.ErrTerminal):
		attempt := q.NumRequeues(k) + 1 // read before Forget resets it
		q.Forget(k)
		log.Error(rep.Err, "Reconcile failed; needs an operator", "attempt", attempt)
	default:
		log.Error(rep.Err, "Reconcile failed", "attempt", q.NumRequeues(k)+1)
		q.AddRateLimited(k)
	}
}

// RunWorkers starts n workers on q and returns when q shuts down and
// every worker has finished its current key.
func (c *Controller) RunWorkers(ctx context.Context, q Queue, n int) {
	done := make(chan struct{})
	for i := 0; i < n; i++ {
		go func() {
			defer func() { done <- struct{}{} }()
			for c.processNextItem(ctx, q) {
			}
		}()
	}
	for i := 0; i < n; i++ {
		<-done
	}
}

func changed(rep KeyReport) bool {
	for _, r := range rep.Results {
		if r.Outcome == actions.Changed {
			return true
		}
	}
	return false
}
