package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"k8s.io/client-go/util/workqueue"
)

// Pass types: a resync plans everything; a reconcile is one key's.
const (
	PassResync    = "resync"
	PassReconcile = "reconcile"
)

// Metrics are the daemon's metrics. Every method is safe on a nil
// *Metrics, so code paths shared with one-shot commands record nothing.
type Metrics struct {
	Registry *prometheus.Registry

	actions          *prometheus.CounterVec
	destroyed        *prometheus.CounterVec
	passes           *prometheus.CounterVec
	passErrors       *prometheus.CounterVec
	held             prometheus.Counter
	heldLastResync   prometheus.Gauge
	passDuration     *prometheus.HistogramVec
	dockerDuration   *prometheus.HistogramVec
	deadlineLateness *prometheus.HistogramVec
	queue            *queueMetrics
}

// New registers every metric of the daemon in a new private registry,
// with status read at scrape time.
func New(status func() Status, opts ...StatusOption) *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry()}
	m.actions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "podspawn_actions_total",
		Help: "Actions executed, by kind, reason and outcome (changed, unchanged or failed)",
	}, []string{"kind", "reason", "outcome"})
	m.destroyed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "podspawn_sessions_destroyed_total",
		Help: "Sessions whose record was deleted after their Docker objects were gone, by reason",
	}, []string{"reason"})
	m.passes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "podspawn_passes_total",
		Help: "Passes run, by type (resync: a full plan; reconcile: one session key)",
	}, []string{"type"})
	m.passErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "podspawn_pass_errors_total",
		Help: "Passes that ended in an error, by type",
	}, []string{"type"})
	m.held = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "podspawn_held_removals_total",
		Help: "Removals the blast-radius guard held, counted at each reconcile that held them",
	})
	m.heldLastResync = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "podspawn_held_removals",
		Help: "Removals the blast-radius guard held in the last resync's plan",
	})
	m.passDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "podspawn_pass_duration_seconds",
		Help:    "Duration of passes, by type",
		Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 10),
	}, []string{"type"})
	m.dockerDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "podspawn_docker_request_duration_seconds",
		Help:    "Duration of Docker API requests until the response headers, by operation",
		Buckets: prometheus.ExponentialBuckets(0.001, 3, 10),
	}, []string{"operation"})
	m.deadlineLateness = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "podspawn_deadline_lateness_seconds",
		Help:    "Time from a session's grace or lifetime deadline until its objects and record were gone, by reason",
		Buckets: []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300},
	}, []string{"reason"})
	m.queue = newQueueMetrics()
	m.Registry.MustRegister(
		NewStatusCollector(status, true, opts...),
		m.actions, m.destroyed, m.passes, m.passErrors, m.held, m.heldLastResync,
		m.passDuration, m.dockerDuration, m.deadlineLateness,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	m.queue.register(m.Registry)
	return m
}

// ObserveAction counts one executed action; err non-nil is outcome failed.
func (m *Metrics) ObserveAction(kind, reason, outcome string, err error) {
	if m == nil {
		return
	}
	if err != nil {
		outcome = "failed"
	}
	m.actions.WithLabelValues(kind, reason, outcome).Inc()
}

// ObserveDestroyed counts a session whose record was deleted for reason,
// and, when deadline is set, how late after it that happened.
func (m *Metrics) ObserveDestroyed(reason string, deadline, now time.Time) {
	if m == nil {
		return
	}
	m.destroyed.WithLabelValues(reason).Inc()
	if !deadline.IsZero() {
		m.deadlineLateness.WithLabelValues(reason).Observe(max(now.Sub(deadline), 0).Seconds())
	}
}

// ObservePass counts one pass of type typ and its duration.
func (m *Metrics) ObservePass(typ string, d time.Duration, err error) {
	if m == nil {
		return
	}
	m.passes.WithLabelValues(typ).Inc()
	m.passDuration.WithLabelValues(typ).Observe(d.Seconds())
	if err != nil {
		m.passErrors.WithLabelValues(typ).Inc()
	}
}

// ObserveHeld counts removals the guard held in one reconcile.
func (m *Metrics) ObserveHeld(n int) {
	if m == nil || n == 0 {
		return
	}
	m.held.Add(float64(n))
}

// SetHeldLastResync records how many removals the last resync's plan held.
func (m *Metrics) SetHeldLastResync(n int) {
	if m == nil {
		return
	}
	m.heldLastResync.Set(float64(n))
}

// ObserveDockerRequest records one Docker API request of operation op.
func (m *Metrics) ObserveDockerRequest(op string, d time.Duration) {
	if m == nil {
		return
	}
	m.dockerDuration.WithLabelValues(op).Observe(d.Seconds())
}

// QueueMetrics is the work queue's metrics provider; nil without metrics,
// so the queue falls back to client-go's (no-op) default.
func (m *Metrics) QueueMetrics() workqueue.MetricsProvider {
	if m == nil {
		return nil
	}
	return m.queue
}
