package reconcile

import (
	"fmt"
	"time"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/observed"
)

// CrashLoop is the back-off for a session container that keeps stopping,
// after kubelet's CrashLoopBackOff. The first restart after a stop comes at
// once; restart n is followed by a wait of BackoffBase·2^(n-1), at most
// BackoffMax, before the next one; a container that stops again after
// MaxRestarts restarts without staying up for ResetAfter is torn down with
// reason crash-loop. The count and the next allowed restart live on the
// session row (desired.Session), so every pass, one-shot or daemon, and a
// daemon started later, keep the same back-off.
//
// The zero value turns it off: a stopped container is started again at
// once, every time, and nothing is recorded.
type CrashLoop struct {
	MaxRestarts int
	ResetAfter  time.Duration
	BackoffBase time.Duration
	BackoffMax  time.Duration
}

// CrashLoopLogLines is how many of a crash-looping container's last log
// lines the executor logs before removing it: its own output usually says
// why it keeps failing.
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

// Restart is what a create-container that starts a stopped session
// container again records on the session row as it does so: the restart
// count after this restart, and the instant before which the next restart
// is not allowed. Recording before the start means a start that fails, or a
// container that dies at once, still counts.
type Restart struct {
	Count  int       `json:"count"`
	NextAt time.Time `json:"next_at"`
}

// restartCount is how many restarts of the stopped container ctr count
// towards the limit. The count starts over once the container stayed up
// for ResetAfter: a pass records that while the container runs
// (reset-restarts), and the container's finish time covers one that
// stopped again before any pass saw it up long enough.
func (c *keyCtx) restartCount(ctr *item) int {
	s, p := c.sess, c.opt.CrashLoop
	n := s.RestartCount
	if n > 0 && !ctr.FinishedAt.IsZero() && !s.LastRestartAt.IsZero() && !ctr.FinishedAt.Before(s.LastRestartAt.Add(p.ResetAfter)) {
		return 0
	}
	return n
}

// stopped reports whether a container's processes are gone: it is not
// running, paused (unpausing is no restart) or being removed.
func stopped(ctr *item) bool {
	return !ctr.Running && ctr.State != observed.StatePaused && ctr.State != observed.StateRemoving
}

// crashLoopDetail says why the stopped session container sessCtr has used
// up its restarts, or returns "" when it has not.
func (c *keyCtx) crashLoopDetail(sessCtr *item) string {
	p := c.opt.CrashLoop
	if !p.enabled() || c.sess.Status == desired.StatusCreating || sessCtr == nil || !stopped(sessCtr) {
		return ""
	}
	n := c.restartCount(sessCtr)
	if n < p.MaxRestarts {
		return ""
	}
	return fmt.Sprintf("container is %s (exit code %d) again after %s, none of which stayed up for %s; its last %d log lines are logged as it is removed",
		sessCtr.State, sessCtr.ExitCode, restarts(n), human(p.ResetAfter), CrashLoopLogLines)
}

// restartPolicy decides on starting the stopped session container
// sessCtr again: now, with what to record (nil with the policy off), or
// not before the back-off ends (wait), which it reports as a skip and a
// wake.
func (c *keyCtx) restartPolicy(sessCtr *item) (rec *Restart, wait bool) {
	s, p := c.sess, c.opt.CrashLoop
	if !p.enabled() || !stopped(sessCtr) {
		return nil, false
	}
	n := c.restartCount(sessCtr)
	if n > 0 && !s.NextRestartAt.IsZero() && !expired(s.NextRestartAt, c.now) {
		c.skipped = append(c.skipped, Skip{Key: c.key, ObjectKind: sessCtr.Kind, Target: sessCtr.Name, Reason: ReasonCrashLoopBackOff,
			Detail: fmt.Sprintf("container is %s (exit code %d) after %s; restart %d of %d is allowed at %s, in %s",
				sessCtr.State, sessCtr.ExitCode, restarts(n), n+1, p.MaxRestarts, s.NextRestartAt.UTC().Format(time.RFC3339), human(s.NextRestartAt.Sub(c.now)))})
		c.wakeAt(s.NextRestartAt)
		return nil, true
	}
	return &Restart{Count: n + 1, NextAt: c.now.Add(p.Backoff(n + 1))}, false
}

func restarts(n int) string {
	if n == 1 {
		return "1 restart"
	}
	return fmt.Sprintf("%d restarts", n)
}

// restartDetail is the detail of a restart.
func (c *keyCtx) restartDetail(sessCtr *item, rec *Restart) string {
	if rec == nil {
		return fmt.Sprintf("container is %s; starting it again", sessCtr.State)
	}
	return fmt.Sprintf("container is %s (exit code %d); starting it again (restart %d of %d; the next is not allowed before %s)",
		sessCtr.State, sessCtr.ExitCode, rec.Count, c.opt.CrashLoop.MaxRestarts, rec.NextAt.UTC().Format(time.RFC3339))
}

// resetRestarts starts the restart count over once the running session
// container has stayed up for ResetAfter since its last restart, and wakes
// the key then otherwise.
func (c *keyCtx) resetRestarts(sessCtr *item) {
	s, p := c.sess, c.opt.CrashLoop
	if !p.enabled() || sessCtr == nil || !sessCtr.Running || (s.RestartCount == 0 && s.NextRestartAt.IsZero()) {
		return
	}
	at := s.LastRestartAt.Add(p.ResetAfter)
	if !expired(at, c.now) {
		c.wakeAt(at)
		return
	}
	c.add(Action{Kind: KindResetRestarts, Target: "session " + c.key.String(), SessionID: s.ID, Reason: ReasonStayedUp,
		Detail: fmt.Sprintf("container stayed up for %s after restart %d; the restart count starts over", human(p.ResetAfter), s.RestartCount)}, phaseMaintain)
}
