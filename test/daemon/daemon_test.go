package daemon_test

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/google/go-cmp/cmp"
	"github.com/jmoiron/sqlx"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/test/harness"
)

// deadlineBound is how long a test waits for a grace deadline to take
// effect. The daemons run with --interval 1h, so a removal within it can only
// come from the deadline timer; it is wide so that a slow machine does not
// fail the test, and it asserts nothing about how punctual the timer is.
const deadlineBound = 2 * time.Minute

// A connection process dies; the daemon releases its lease, starts the
// 2s grace period and tears the session down right after the deadline.
// With --interval 1h only the deadline timer can explain the removal.
func TestDaemonEnforcesGraceDeadline(t *testing.T) {
	e := newDmEnv(t, 2*time.Second)
	key := desired.SessionKey{User: uniq("dmgr")}
	h := startHelper(t)
	e.seed(key, h)
	d := e.startDaemon()
	harness.Eventually(t, 60*time.Second, "the daemon to create the session", func() bool { return e.running(key) })

	h.kill()
	var expiry time.Time
	harness.Eventually(t, 20*time.Second, "the grace period to start", func() bool {
		s := e.row(key)
		if s != nil && s.Status == desired.StatusGrace {
			expiry = s.GraceExpiry
			return true
		}
		return false
	})
	if got := expiry.Sub(time.Now()); got > 2*time.Second {
		t.Fatalf("grace expiry %s is %s away, want at most the 2s grace period", expiry, got)
	}
	// The bound only proves that the deadline timer fired: the next periodic
	// pass (--interval 1h) is far beyond it, however slow the machine.
	harness.Eventually(t, deadlineBound, "the session to be removed after its deadline", func() bool { return e.gone(key) })

	want := []string{"mark-terminating", "remove-container", "remove-network", "delete-session"}
	if diff := cmp.Diff(want, d.actions(`"reason": "grace-expired"`, `"user": "`+key.User+`"`)); diff != "" {
		t.Errorf("actions logged with reason grace-expired (-want +got):\n%s", diff)
	}
	if n := len(d.lines("Resynced")); n != 1 {
		t.Errorf("%d resyncs, want only the one at start", n)
	}
	if code := d.term(); code != 0 {
		t.Errorf("exit code on SIGTERM = %d, want 0", code)
	}
	d.waitLog(time.Second, "Cleanup daemon stopped")
}

// Another process (spawn, at the last disconnect) releases the lease and
// starts the grace period in the database; the daemon's database watcher
// gives it a timer within a second, so it ends on time with --interval 1h.
func TestDaemonPicksUpGraceStartedByAnotherProcess(t *testing.T) {
	e := newDmEnv(t, 2*time.Second)
	key := desired.SessionKey{User: uniq("dmdb")}
	h := startHelper(t) // stays alive: only the database says the connection ended
	e.seed(key, h)
	d := e.startDaemon()
	harness.Eventually(t, 60*time.Second, "the daemon to create the session", func() bool { return e.running(key) })

	expiry := time.Now().Add(2 * time.Second)
	st := e.store()
	err := st.Tx(context.Background(), func(tx *sqlx.Tx) error {
		s, err := st.LoadKeyTx(context.Background(), tx, key)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(`DELETE FROM leases WHERE session_id = ?`, s.ID); err != nil {
			return err
		}
		_, err = tx.Exec(`UPDATE sessions SET status = 'grace_period', grace_expiry = ?, updated_at = ? WHERE id = ?`,
			expiry.UnixNano(), time.Now().UnixNano(), s.ID)
		return err
	})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	// The bound only proves that the deadline timer fired: the next periodic
	// pass (--interval 1h) is far beyond it, however slow the machine.
	harness.Eventually(t, deadlineBound, "the session to be removed after its deadline", func() bool { return e.gone(key) })
	if n := len(d.lines(`"action": "delete-session"`, `"reason": "grace-expired"`, `"user": "`+key.User+`"`)); n != 1 {
		t.Errorf("session deletions with reason grace-expired: %d, want 1", n)
	}
	if code := d.term(); code != 0 {
		t.Errorf("exit code on SIGTERM = %d, want 0", code)
	}
}

// A labelled container removed by hand: the Docker event makes the daemon
// clean the rest of the session (network, record) at once.
func TestDaemonCleansSessionWhoseContainerWasRemovedByHand(t *testing.T) {
	e := newDmEnv(t, time.Hour)
	key := desired.SessionKey{User: uniq("dmrm"), Project: "web"}
	h := startHelper(t)
	e.seed(key, h)
	d := e.startDaemon()
	harness.Eventually(t, 60*time.Second, "the daemon to create the session", func() bool { return e.running(key) })
	h.kill()
	harness.Eventually(t, 20*time.Second, "the grace period to start", func() bool {
		s := e.row(key)
		return s != nil && s.Status == desired.StatusGrace
	})

	if err := e.Docker.ContainerRemove(context.Background(), desired.ContainerName(key), container.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 15*time.Second, "the network and row to be removed", func() bool { return e.gone(key) })
	if n := len(d.lines(`"reason": "container-gone"`, `"action": "remove-network"`, `"user": "`+key.User+`"`)); n != 1 {
		t.Errorf("network removals with reason container-gone: %d, want 1", n)
	}
	if n := len(d.lines("Resynced")); n != 1 {
		t.Errorf("%d resyncs, want only the one at start", n)
	}
	if code := d.term(); code != 0 {
		t.Errorf("exit code on SIGTERM = %d, want 0", code)
	}
}

// dockerd stops and comes back: the daemon survives, logs the outage once,
// and enforces a grace period that expired while Docker was away.
//
// The deadline is moved into the outage with SQL once dockerd has exited:
// dockerd keeps serving its API for seconds while it stops containers, so
// a deadline timed by the wall clock alone could fall before the outage.
func TestDaemonSurvivesDockerRestart(t *testing.T) {
	e := newDmEnv(t, time.Hour)
	key := desired.SessionKey{User: uniq("dmrs")}
	h := startHelper(t)
	e.seed(key, h)
	d := e.startDaemon()
	harness.Eventually(t, 60*time.Second, "the daemon to create the session", func() bool { return e.running(key) })
	h.kill()
	harness.Eventually(t, 20*time.Second, "the grace period to start", func() bool {
		s := e.row(key)
		return s != nil && s.Status == desired.StatusGrace
	})

	// Make sure dockerd runs again whatever happens below.
	t.Cleanup(func() {
		if err := privateDockerd.ensureRunning(); err != nil {
			t.Errorf("restarting the private dockerd: %v", err)
		}
	})
	privateDockerd.stop(t)
	d.waitLog(30*time.Second, "Lost the Docker event stream")
	expiry := time.Now().Add(time.Second)
	st := e.store()
	if _, err := st.DB().Exec(`UPDATE sessions SET grace_expiry = ?, updated_at = ? WHERE user = ?`, expiry.UnixNano(), time.Now().UnixNano(), key.User); err != nil {
		t.Fatal(err)
	}
	st.Close()
	// The database watcher picks the change up and the reconcile fails
	// while Docker is away; retries continue past the deadline.
	harness.Eventually(t, 30*time.Second, "a failed reconcile after the deadline", func() bool {
		return time.Now().After(expiry) && len(d.attempts(key.User)) >= 2
	})
	if s := e.row(key); s == nil || s.Status != desired.StatusGrace {
		t.Fatalf("session while Docker was down: %+v, want it still in its grace period", s)
	}
	if !d.alive() {
		t.Fatalf("the daemon exited while Docker was down")
	}
	privateDockerd.restart(t)
	harness.Eventually(t, 60*time.Second, "the expired session to be removed after Docker came back", func() bool { return e.gone(key) })
	// The session's own retry can reach the restarted dockerd before the
	// resync's next attempt does, so the recovery may be logged after it.
	d.waitLog(60*time.Second, "Recovered: resubscribed to Docker events and resynced")

	if n := len(d.lines("Lost the Docker event stream")) + len(d.lines("Resync failed; retrying with backoff")); n != 1 {
		t.Errorf("outage logged %d times at the default level, want once", n)
	}
	if n := len(d.lines("Recovered: resubscribed to Docker events and resynced")); n != 1 {
		t.Errorf("recovery logged %d times, want 1", n)
	}
	if n := len(d.lines(`"action": "delete-session"`, `"reason": "grace-expired"`, `"user": "`+key.User+`"`)); n != 1 {
		t.Errorf("session deletions with reason grace-expired: %d, want 1", n)
	}
	if code := d.term(); code != 0 {
		t.Errorf("exit code on SIGTERM = %d, want 0", code)
	}
}

// Only one daemon per state directory; SIGTERM stops the first cleanly, and
// a teardown it interrupted is never half done: a session without its row
// has no objects left, and one cleanup pass finishes the rest.
func TestDaemonSingleInstanceAndCleanShutdown(t *testing.T) {
	e := newDmEnv(t, 2*time.Second)
	h := startHelper(t)
	var keys []desired.SessionKey
	for i := 0; i < 4; i++ {
		k := desired.SessionKey{User: uniq("dmsd")}
		keys = append(keys, k)
		e.seed(k, h)
	}
	d := e.startDaemon("--workers", "1")
	for _, k := range keys {
		harness.Eventually(t, 90*time.Second, "the daemon to create "+k.String(), func() bool { return e.running(k) })
	}

	second := e.Run("cleanup", "--daemon", "--interval", "1h")
	lockPath := e.StateDir + "/cleanup-daemon.lock"
	if second.Code == 0 || !strings.Contains(second.Stderr, "pid "+strconv.Itoa(d.cmd.Process.Pid)) || !strings.Contains(second.Stderr, lockPath) {
		t.Fatalf("second daemon: exit %d, stderr %q; want a failure naming pid %d and %s", second.Code, second.Stderr, d.cmd.Process.Pid, lockPath)
	}
	data, err := os.ReadFile(lockPath)
	if err != nil || string(data) != strconv.Itoa(d.cmd.Process.Pid)+"\n" {
		t.Errorf("lock file holds %q (%v), want the daemon's pid and a newline", data, err)
	}
	// A one-shot pass may run beside the daemon.
	if r := e.Run("cleanup"); r.Code != 0 {
		t.Errorf("one-shot cleanup beside the daemon: exit %d\n%s", r.Code, r.Stderr)
	}

	h.kill()
	// With one worker the daemon starts the grace periods one after
	// another (each pass first kills the dead connection's processes); all
	// must have started, or the pass after the daemon would only start one.
	for _, k := range keys {
		harness.Eventually(t, 60*time.Second, "the grace period of "+k.String()+" to start", func() bool {
			s := e.row(k)
			return s != nil && s.Status == desired.StatusGrace
		})
	}
	// Stop as soon as teardown has begun, with most of it still queued.
	d.waitLog(60*time.Second, `"action": "remove-container"`)
	if code := d.term(); code != 0 {
		t.Fatalf("exit code on SIGTERM = %d, want 0", code)
	}
	d.waitLog(time.Second, "Cleanup daemon stopped")
	for _, k := range keys {
		c, _ := e.containerRunning(desired.ContainerName(k))
		if e.row(k) == nil && (c || e.networkExists(desired.NetworkName(k))) {
			t.Errorf("%s: row deleted but Docker objects left behind", k)
		}
	}
	// The grace periods started up to a few seconds apart: the one pass
	// must find them all over.
	for _, k := range keys {
		if s := e.row(k); s != nil && s.Status == desired.StatusGrace {
			harness.Eventually(t, 60*time.Second, "the grace period of "+k.String()+" to end", func() bool { return time.Now().After(s.GraceExpiry) })
		}
	}
	if r := e.Run("cleanup"); r.Code != 0 {
		t.Fatalf("cleanup after the daemon: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	for _, k := range keys {
		if !e.gone(k) {
			t.Errorf("%s: not fully removed after one cleanup pass", k)
		}
	}
	if n := len(d.lines("Reconcile failed")); n != 0 {
		t.Errorf("%d reconciles failed during shutdown, want none:\n%s", n, d.out.String())
	}
}

// One session's teardown keeps failing (an unlabelled container holds its
// network): it backs off, and another session is still cleaned on time.
// Removing the blocker unblocks it through the network's disconnect event.
func TestDaemonFailingSessionDoesNotStarveOthers(t *testing.T) {
	e := newDmEnv(t, 2*time.Second)
	stuck := desired.SessionKey{User: uniq("dmst")}
	free := desired.SessionKey{User: uniq("dmfr")}
	hs, hf := startHelper(t), startHelper(t)
	e.seed(stuck, hs)
	e.seed(free, hf)
	d := e.startDaemon()
	for _, k := range []desired.SessionKey{stuck, free} {
		harness.Eventually(t, 60*time.Second, "the daemon to create "+k.String(), func() bool { return e.running(k) })
	}
	blocker := e.blocker(desired.NetworkName(stuck))

	hs.kill()
	harness.Eventually(t, 30*time.Second, "the stuck session's teardown to fail twice", func() bool { return len(d.attempts(stuck.User)) >= 2 })

	hf.kill()
	harness.Eventually(t, 20*time.Second, "the free session's grace period", func() bool {
		s := e.row(free)
		return s != nil && s.Status == desired.StatusGrace
	})
	// deadlineBound: removed by its deadline timer, not by a periodic pass.
	harness.Eventually(t, deadlineBound, "the free session to be removed by its deadline timer", func() bool { return e.gone(free) })

	s := e.row(stuck)
	if s == nil || s.Status != desired.StatusTerminating || !e.networkExists(desired.NetworkName(stuck)) {
		t.Fatalf("stuck session: row %+v, network exists %v; want a terminating row and its network", s, e.networkExists(desired.NetworkName(stuck)))
	}
	att := d.attempts(stuck.User)
	for i := range att {
		if att[i] != i+1 {
			t.Fatalf("failure attempts %v, want 1, 2, 3, ...", att)
		}
	}

	if err := e.Docker.ContainerRemove(context.Background(), blocker, container.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 15*time.Second, "the stuck session to be removed once unblocked", func() bool { return e.gone(stuck) })
	if code := d.term(); code != 0 {
		t.Errorf("exit code on SIGTERM = %d, want 0", code)
	}
}

// --interval is validated with or without --daemon, before anything is
// opened; contradictory flags are refused.
func TestCleanupFlagErrors(t *testing.T) {
	e := newDmEnv(t, time.Minute)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"cleanup", "--interval", "0s"}, `Error: invalid --interval "0s": must be a positive duration such as 60s`},
		{[]string{"cleanup", "--daemon", "--interval=-5s"}, `Error: invalid --interval "-5s": must be a positive duration such as 60s`},
		{[]string{"cleanup", "--interval", "60"}, `Error: invalid --interval: invalid duration "60": must include a time unit (e.g. 60s, 8h)`},
		{[]string{"cleanup", "--daemon", "--interval", "soon"}, `Error: invalid --interval: invalid duration "soon": must be a Go duration such as 90s, 5m or 8h`},
		{[]string{"cleanup", "--daemon", "--dry-run"}, `Error: --dry-run cannot be combined with --daemon`},
		{[]string{"cleanup", "--daemon", "-o", "json"}, `Error: --output json applies to a single pass`},
		{[]string{"cleanup", "--daemon", "--workers", "0"}, `Error: invalid --workers 0: must be at least 1`},
	}
	for _, tc := range tests {
		r := e.Run(tc.args...)
		if r.Code != 1 || !strings.HasPrefix(r.Stderr, tc.want) || strings.Contains(r.Stderr, "panic") {
			t.Errorf("podspawn %v: exit %d, stderr %q; want exit 1 and %q", tc.args, r.Code, r.Stderr, tc.want)
		}
	}
	if _, err := os.Stat(e.StateDir + "/cleanup-daemon.lock"); err == nil {
		t.Error("a refused daemon created its lock file")
	}
}
