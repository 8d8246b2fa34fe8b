package projects_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/test/harness"
)

// blockingOnCreate counts its starts and then waits for /tmp/release,
// which the test creates, so the test decides when it finishes.
const blockingOnCreate = `on_create: |
  echo x >> /tmp/oncreate-starts
  while [ ! -e /tmp/release ]; do sleep 0.1; done
  echo ready > $HOME/setup-done
  echo created >> $HOME/hooks.log
on_start: echo started >> $HOME/hooks.log
`

// waitOnCreateStarted waits until on_create runs in ctr.
func waitOnCreateStarted(t *testing.T, e *env, ctr string) {
	t.Helper()
	harness.Eventually(t, time.Minute, "on_create to start in "+ctr, func() bool {
		code, _, err := e.tryExec(ctr, "root", "test", "-e", "/tmp/oncreate-starts")
		return err == nil && code == 0
	})
}

func TestOnCreateRunsOnceAndOtherConnectionsWaitForIt(t *testing.T) {
	e := newEnv(t, harness.Options{})
	user := harness.Uniq("pjhook")
	e.AddUser(user)
	e.addProject("backend", e.newRepo(map[string]string{"podfile.yaml": e.servicePodfile(blockingOnCreate)}))
	ctr := desired.ContainerName(desired.SessionKey{User: user, Project: "backend"})

	first := e.startSpawn(user, "backend", "cat setup-done")
	waitOnCreateStarted(t, e, ctr)
	// The second connection must wait on the user's lock, which the first
	// holds while on_create runs (G22), and not attach to a half-set-up session.
	second := e.startSpawn(user, "backend", "cat setup-done")
	lockFile := filepath.Join(e.StateDir, "locks", user+".lock")
	harness.Eventually(t, time.Minute, "the second connection to wait for "+lockFile, func() bool { return holdsOpen(second.cmd.Process.Pid, lockFile) })
	select {
	case <-second.done:
		t.Fatalf("the second connection finished while on_create was still running: %+v", second.wait(t))
	default:
	}
	e.dockerExec(ctr, "root", "touch", "/tmp/release")

	for i, a := range []*asyncSpawn{first, second} {
		r := a.wait(t)
		if r.Code != 0 || r.Stdout != "ready\n" || r.Stderr != "" {
			t.Errorf("connection %d: exit %d, stdout %q, stderr %q; want 0, the setup's result, no warnings", i+1, r.Code, r.Stdout, r.Stderr)
		}
	}
	if got := e.mustSpawn(user, "backend", "cat hooks.log").Stdout; got != "created\nstarted\nstarted\nstarted\n" {
		t.Errorf("hooks.log after three connections = %q, want on_create once and on_start three times", got)
	}
	if _, out := e.dockerExec(ctr, "root", "cat", "/tmp/oncreate-starts"); out != "x\n" {
		t.Errorf("on_create started %d times, want once", strings.Count(out, "x"))
	}
}

func TestInterruptedOnCreateIsNotRunAgain(t *testing.T) {
	e := newEnv(t, harness.Options{})
	user := harness.Uniq("pjkill")
	e.AddUser(user)
	e.addProject("backend", e.newRepo(map[string]string{"podfile.yaml": e.servicePodfile(blockingOnCreate)}))
	key := desired.SessionKey{User: user, Project: "backend"}
	ctr := desired.ContainerName(key)

	first := e.startSpawn(user, "backend", "true")
	waitOnCreateStarted(t, e, ctr)
	// spawn dies in the middle of on_create (kill -9: no cleanup at all).
	first.cmd.Process.Kill()
	first.wait(t)

	r := e.mustSpawn(user, "backend", "echo attached")
	if r.Stdout != "attached\n" {
		t.Errorf("stdout = %q", r.Stdout)
	}
	want := "podspawn: warning: on_create was started by an earlier connection and never finished (a crash or timeout); it is not run twice. " +
		"Run the setup yourself, or ask an admin for a fresh container: podspawn stop " + key.String() + "\n"
	if r.Stderr != want {
		t.Errorf("stderr = %q, want %q", r.Stderr, want)
	}
	if _, out := e.dockerExec(ctr, "root", "cat", "/tmp/oncreate-starts"); out != "x\n" {
		t.Errorf("on_create started %d times, want once", strings.Count(out, "x"))
	}
	// The orphaned hook finishes; nothing waits for it.
	e.dockerExec(ctr, "root", "touch", "/tmp/release")
}

func TestHookFailuresAreWarnings(t *testing.T) {
	e := newEnv(t, harness.Options{})
	user := harness.Uniq("pjfail")
	e.AddUser(user)
	hooks := `on_create: echo setting-up; echo oops >&2; exit 3
on_start: echo on-start-says-hi; exit 4
`
	e.addProject("backend", e.newRepo(map[string]string{"podfile.yaml": e.servicePodfile(hooks)}))

	r := e.spawn(user, "backend", "echo out; exit 7")
	if r.Code != 7 || r.Stdout != "out\n" {
		t.Fatalf("exit %d, stdout %q; want the command's exit 7 and only its output on stdout (stderr %q)", r.Code, r.Stdout, r.Stderr)
	}
	for _, line := range []string{
		"setting-up", "oops",
		"podspawn: warning: on_create failed with exit code 3; the session starts anyway",
		"on-start-says-hi",
		"podspawn: warning: on_start failed with exit code 4",
	} {
		if countLines(r.Stderr, line) != 1 {
			t.Errorf("stderr lacks the line %q:\n%s", line, r.Stderr)
		}
	}
	if i, j := strings.Index(r.Stderr, "on_create failed"), strings.Index(r.Stderr, "on-start-says-hi"); i > j {
		t.Errorf("on_start ran before on_create's report:\n%s", r.Stderr)
	}

	// A failed on_create is not retried; on_start runs (and fails) again.
	r = e.spawn(user, "backend", "echo again")
	if want := "on-start-says-hi\npodspawn: warning: on_start failed with exit code 4\n"; r.Code != 0 || r.Stdout != "again\n" || r.Stderr != want {
		t.Errorf("second connection: exit %d, stdout %q, stderr %q; want 0, %q, %q", r.Code, r.Stdout, r.Stderr, "again\n", want)
	}
}
