package reconcile

import (
	"fmt"
	"time"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/observed"
)

// CrashLoop backs off restarting a session container that keeps stopping,
// after kubelet's CrashLoopBackOff: the first restart comes at once,
// restart n is followed by a wait of BackoffBase·2^(n-1), at most
// BackoffMax, and a container that stops again after MaxRestarts restarts,
// none of which stayed up for ResetAfter, is torn down (reason crash-loop).
// The count lives on the session row, so one-shot passes and a daemon
// started later keep the same back-off. The zero value turns it off: a
// stopped container is started again at once, every time.
type CrashLoop struct {
	MaxRestarts int
	ResetAfter  time.Duration
	BackoffBase time.Duration
	BackoffMax  time.Duration
}

// CrashLoopLogLines is how many last log lines of a crash-looping
// container are logged as it is removed: they usually say why it fails.
const CrashLoopLogLines = 20

func (p CrashLoop) enabled() bool { return p.MaxRestarts > 0 }

// Backoff is the wait after restart n (n >= 1) before the next restart.
func (p CrashLoop) Backoff(n int) time.Duration {
	d := p.BackoffBase
	for i := 1; i < n && d < p.BackoffMax; i++ {
		d *= 2
	}
	return min(d, p.BackoffMax)
}

// Restart is what starting a stopped session container again records on
// the row before the start: the count after it and the instant before
// which the next is not allowed. Recording first means a start that fails,
// or a container that dies at once, still counts.
type Restart struct {
	Count  int       `json:"count"`
	NextAt time.Time `json:"next_at"`
}

// restartCount is how many restarts of the stopped container ctr count
// towards the limit. It starts over once the container stayed up for
// ResetAfter: a pass that sees it running records that (reset-restarts),
// and the finish time covers one that stopped before a pass saw it.
func (c *keyCtx) restartCount(ctr *item) int {
	s, p := c.sess, c.opt.CrashLoop
	if s.RestartCount > 0 && !ctr.FinishedAt.IsZero() && !s.LastRestartAt.IsZero() && !ctr.FinishedAt.Before(s.LastRestartAt.Add(p.ResetAfter)) {
		return 0
	}
	return s.RestartCount
}

// stopped: the container's processes are gone. A paused one is unpaused
// (no restart), and one being removed cannot be started.
func stopped(ctr *item) bool {
	return !ctr.Running && ctr.State != observed.StatePaused && ctr.State != observed.StateRemoving && ctr.State != observed.StateRestarting
}

// restartedByRuntime: the runtime starts the container again itself.
func restartedByRuntime(ctr *item) bool { return ctr != nil && ctr.State == observed.StateRestarting }

// crashLoopDetail says why the stopped session container has used up its
// restarts, or returns "" when it has not.
func (c *keyCtx) crashLoopDetail(sessCtr *item) string {
	p := c.opt.CrashLoop
	if !p.enabled() || c.sess.Status == desired.StatusCreating || sessCtr == nil || !stopped(sessCtr) {
		return ""
	}
	if n := c.restartCount(sessCtr); n >= p.MaxRestarts {
		return fmt.Sprintf("container is %s (exit code %d) again after %s, none of which stayed up for %s; its last %d log lines are logged as it is removed",
			sessCtr.State, sessCtr.ExitCode, restarts(n), human(p.ResetAfter), CrashLoopLogLines)
	}
	return ""
}

// restartPolicy decides whether a session container that is not running is
// started (or unpaused) again now, and what to record (nil with the policy
// off). A stopped one keeps the user's files, so it is started rather than
// replaced, unless it is backing off (a skip and a wake). One that Docker
// is removing is left: its destroy event brings the key back as missing.
func (c *keyCtx) restartPolicy(sessCtr *item) (rec *Restart, restart bool) {
	s, p := c.sess, c.opt.CrashLoop
	if s.Status == desired.StatusCreating || sessCtr == nil || sessCtr.Running || sessCtr.State == observed.StateRemoving {
		return nil, false
	}
	if restartedByRuntime(sessCtr) {
		// Its changes (a restart, a start) bring the key back by event.
		c.skip(sessCtr.Kind, sessCtr.Name, ReasonRuntimeRestarting, fmt.Sprintf("container stopped (exit code %d); the runtime restarts it itself (%s, %s so far)",
			sessCtr.ExitCode, orWord(sessCtr.RuntimeReason, "restarting"), restarts(sessCtr.RuntimeRestarts)))
		return nil, false
	}
	if !p.enabled() || !stopped(sessCtr) {
		return nil, true
	}
	n := c.restartCount(sessCtr)
	if n > 0 && !s.NextRestartAt.IsZero() && !expired(s.NextRestartAt, c.now) {
		c.skip(sessCtr.Kind, sessCtr.Name, ReasonCrashLoopBackOff, fmt.Sprintf("container is %s (exit code %d) after %s; restart %d of %d is allowed at %s, in %s",
			sessCtr.State, sessCtr.ExitCode, restarts(n), n+1, p.MaxRestarts, stamp(s.NextRestartAt), human(s.NextRestartAt.Sub(c.now))))
		c.wakeAt(s.NextRestartAt)
		return nil, false
	}
	return &Restart{Count: n + 1, NextAt: c.now.Add(p.Backoff(n + 1))}, true
}

func orWord(s, otherwise string) string {
	if s == "" {
		return otherwise
	}
	return s
}

func restarts(n int) string {
	if n == 1 {
		return "1 restart"
	}
	return fmt.Sprintf("%d restarts", n)
}

func (c *keyCtx) restartDetail(sessCtr *item, rec *Restart) string {
	if rec == nil {
		return fmt.Sprintf("container is %s; starting it again", sessCtr.State)
	}
	return fmt.Sprintf("container is %s (exit code %d); starting it again (restart %d of %d; the next is not allowed before %s)",
		sessCtr.State, sessCtr.ExitCode, rec.Count, c.opt.CrashLoop.MaxRestarts, stamp(rec.NextAt))
}

// resetRestarts starts the restart count over once the running session
// container stayed up for ResetAfter since its last restart, and wakes the
// key then otherwise.
func (c *keyCtx) resetRestarts(sessCtr *item) {
	s, p := c.sess, c.opt.CrashLoop
	if !p.enabled() || !running(sessCtr) || (s.RestartCount == 0 && s.NextRestartAt.IsZero()) {
		return
	}
	if at := s.LastRestartAt.Add(p.ResetAfter); !expired(at, c.now) {
		c.wakeAt(at)
		return
	}
	c.add(c.onSession(KindResetRestarts, ReasonStayedUp, fmt.Sprintf("container stayed up for %s after restart %d; the restart count starts over",
		human(p.ResetAfter), s.RestartCount)), phaseMaintain)
}
