package daemon_test

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/podspawn/podspawn/actions/dockeract"

	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/test/harness"
)

// newDmEnvCleanup is newDmEnv with the body of the config's cleanup
// section.
func newDmEnvCleanup(t testing.TB, grace time.Duration, cleanup string) *dmEnv {
	t.Helper()
	dc := privateDockerd.use(t)
	env := harness.NewEnv(t, harness.Options{
		Session: fmt.Sprintf("  grace_period: %s\n  max_lifetime: 8h\n  mode: grace-period\n", grace),
		Cleanup: cleanup,
	})
	return &dmEnv{Env: env, t: t, Docker: dc, Grace: grace}
}

// crashOnStart makes the session container's command (sleep infinity)
// print a line and exit 3 from its next start on: /bin/sleep becomes a
// script in the container's own filesystem, which a restart keeps.
func (e *dmEnv) crashOnStart(name string) {
	e.t.Helper()
	script := `rm /bin/sleep && printf '#!/bin/sh\necho "boom: cannot start" >&2\nexit 3\n' >/bin/sleep && chmod 755 /bin/sleep`
	code, out, err := dockeract.Exec(context.Background(), e.Docker, name, []string{"sh", "-c", script}, "root")
	if err != nil || code != 0 {
		e.t.Fatalf("replacing /bin/sleep in %s: exit %d, %v: %s", name, code, err, out)
	}
}

// A session container whose command exits at once is restarted with
// back-off (1s, 2s, 4s, ... by default), not in a hot loop: at most a
// handful of restarts in its first 10 seconds.
func TestDaemonCrashLoopBacksOff(t *testing.T) {
	e := newDmEnv(t, time.Hour)
	key := desired.SessionKey{User: uniq("dmcl")}
	e.graceSession(key)
	d := e.startDaemon()
	name := desired.ContainerName(key)
	e.crashOnStart(name)
	killed := time.Now()
	e.kill(name)

	// Restarts come at about 0s, 1s, 3s and 7s; waiting for the fourth
	// bounds nothing about speed, it only makes sure the window is seen.
	harness.Eventually(t, 2*time.Minute, "four restarts", func() bool { return len(d.restartTimes(key.User)) >= 4 })
	n := 0
	for _, at := range d.restartTimes(key.User) {
		if at.Before(killed.Add(10 * time.Second)) {
			n++
		}
	}
	if n > 5 {
		t.Errorf("%d restarts in the 10s after the first stop, want at most 5 (back-off 1s, 2s, 4s, ...):\n%s", n,
			strings.Join(d.lines(`"user": "`+key.User+`"`), "\n"))
	}
	s := e.row(key)
	if s == nil || s.RestartCount < 4 || s.NextRestartAt.IsZero() {
		t.Fatalf("session: %+v, want at least 4 restarts recorded and a next restart time", s)
	}
	if r := e.Run("list"); !regexp.MustCompile(`restarting \(\d+\)`).MatchString(r.Stdout) {
		t.Errorf("podspawn list: %q, want the session shown as restarting (N)", r.Stdout)
	}
	if code := d.term(); code != 0 {
		t.Errorf("exit code on SIGTERM = %d, want 0", code)
	}
}

// After cleanup.crash_loop_max_restarts restarts without staying up, the
// next stop tears the session down with reason crash-loop, and the daemon
// logs the container's exit code and last output before removing it.
func TestDaemonCrashLoopTearsDownAtTheLimit(t *testing.T) {
	e := newDmEnvCleanup(t, time.Hour, "  orphan_min_age: 30s\n  crash_loop_max_restarts: 2\n  crash_loop_backoff: 1s\n")
	key := desired.SessionKey{User: uniq("dmcx")}
	e.graceSession(key)
	d := e.startDaemon()
	name := desired.ContainerName(key)
	e.crashOnStart(name)
	e.kill(name)

	harness.Eventually(t, 2*time.Minute, "the crash-looping session to be torn down", func() bool { return e.gone(key) })
	if n := len(d.restartTimes(key.User)); n != 2 {
		t.Errorf("%d restarts, want 2 (the limit)", n)
	}
	user := `"user": "` + key.User + `"`
	want := []string{"mark-terminating", "remove-container", "remove-network", "delete-session"}
	if diff := cmp.Diff(want, d.actions(`"reason": "crash-loop"`, user)); diff != "" {
		t.Errorf("actions logged with reason crash-loop (-want +got):\n%s", diff)
	}
	if got := d.lines(`"action": "mark-terminating"`, user, "exit code 3", "after 2 restarts"); len(got) != 1 {
		t.Errorf("teardown lines naming exit code 3 and 2 restarts: %q, want one", got)
	}
	if got := d.lines("Last output of the container before its removal", user, "exit code 3", "boom: cannot start"); len(got) != 1 {
		t.Errorf("log tail lines: %q, want one with the exit code and the container's last output", got)
	}
	if code := d.term(); code != 0 {
		t.Errorf("exit code on SIGTERM = %d, want 0", code)
	}
}
