package daemon_test

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/test/harness"
)

// graceSession creates key's session with a daemon, lets its connection
// die so it is in its grace period, and stops that daemon: the next one
// starts on a settled session, as after a restart of the daemon.
func (e *dmEnv) graceSession(key desired.SessionKey) {
	e.t.Helper()
	h := startHelper(e.t)
	e.seed(key, h)
	d := e.startDaemon()
	harness.Eventually(e.t, 60*time.Second, "the daemon to create the session", func() bool { return e.running(key) })
	h.kill()
	harness.Eventually(e.t, 20*time.Second, "the grace period to start", func() bool {
		s := e.row(key)
		return s != nil && s.Status == desired.StatusGrace
	})
	if code := d.term(); code != 0 {
		e.t.Fatalf("first daemon: exit code on SIGTERM = %d, want 0", code)
	}
}

// kill sends the container named name SIGKILL.
func (e *dmEnv) kill(name string) {
	e.t.Helper()
	if err := e.Docker.ContainerKill(context.Background(), name, "KILL"); err != nil {
		e.t.Fatal(err)
	}
}

var logTimeRE = regexp.MustCompile(`^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)`)

// restartTimes returns when the daemon logged each restart of user's
// session container.
func (p *daemonProc) restartTimes(user string) []time.Time {
	var out []time.Time
	for _, l := range p.lines(`"action": "create-container"`, `"reason": "container-stopped"`, `"user": "`+user+`"`) {
		m := logTimeRE.FindStringSubmatch(l)
		if m == nil {
			p.t.Fatalf("no timestamp in %q", l)
		}
		ts, err := time.Parse("2006-01-02T15:04:05.000Z", m[1])
		if err != nil {
			p.t.Fatal(err)
		}
		out = append(out, ts)
	}
	return out
}

// A session container that stops while the daemon runs (killed, OOM) is
// started again on its die event, not at the next periodic pass
// (--interval 1h). Before, the die event's pass listed the container as
// still running (dockerd 20.10 updates its list only after the die and
// network disconnect events) and planned nothing, and no later event came:
// the container stayed Exited until the next resync.
func TestDaemonRestartsAStoppedContainerOnItsDieEvent(t *testing.T) {
	e := newDmEnv(t, time.Hour)
	key := desired.SessionKey{User: uniq("dmkl")}
	e.graceSession(key)
	d := e.startDaemon()

	name := desired.ContainerName(key)
	e.kill(name)
	// Only the die event can explain a restart within the bound: the next
	// periodic pass is an hour away.
	harness.Eventually(t, 30*time.Second, "the killed container to be started again", func() bool {
		_, up := e.containerRunning(name)
		return up && len(d.restartTimes(key.User)) > 0
	})
	if diff := cmp.Diff([]string{"create-container"}, d.actions(`"reason": "container-stopped"`, `"user": "`+key.User+`"`)); diff != "" {
		t.Errorf("actions logged with reason container-stopped (-want +got):\n%s", diff)
	}
	if n := len(d.lines("Resynced")); n != 1 {
		t.Errorf("%d resyncs, want only the one at start", n)
	}
	s := e.row(key)
	if s == nil || s.Status != desired.StatusGrace || s.RestartCount != 1 {
		t.Errorf("session after the restart: %+v, want it still in its grace period with 1 restart recorded", s)
	}
	if r := e.Run("list"); !strings.Contains(r.Stdout, "restarting (1)") {
		t.Errorf("podspawn list: %q, want the session shown as restarting (1)", r.Stdout)
	}
	if code := d.term(); code != 0 {
		t.Errorf("exit code on SIGTERM = %d, want 0", code)
	}
}
