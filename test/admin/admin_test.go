package admin_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/test/harness"
)

func checkResult(t *testing.T, r harness.Result, code int, stdout, stderr string) {
	t.Helper()
	if r.Code != code || r.Stdout != stdout || r.Stderr != stderr {
		t.Errorf("got exit %d\nstdout:\n%s\nstderr:\n%s\nwant exit %d\nstdout:\n%s\nstderr:\n%s", r.Code, r.Stdout, r.Stderr, code, stdout, stderr)
	}
}

func TestStopDestroysEverything(t *testing.T) {
	e := newAdminEnv(t)
	user := harness.Uniq("adstop")
	e.AddUser(user)
	key := desired.SessionKey{User: user, Project: "web"}
	other := desired.SessionKey{User: user}
	e.startSession(key, cacheService())
	e.startSession(other)
	base := "podspawn-" + user
	want := []string{
		"container " + base, "container " + base + "-web", "container " + base + "-web-cache",
		"network " + base + "-net", "network " + base + "-web-net", "volume " + base + "-web-cache-data",
	}
	if diff := cmp.Diff(want, e.objectNames()); diff != "" {
		t.Fatalf("objects after creation (-want +got):\n%s", diff)
	}

	// On success stop prints the seed's line and nothing else: its
	// progress is logged only with -v.
	r := e.Run("stop", key.String())
	checkResult(t, r, 0, "Destroyed session: "+key.String()+" (container "+base+"-web)\n", "")
	// Only the other session's objects are left, and its record.
	if diff := cmp.Diff([]string{"container " + base, "network " + base + "-net"}, e.objectNames()); diff != "" {
		t.Errorf("objects after stop (-want +got):\n%s", diff)
	}
	if s := e.Row(key); s != nil {
		t.Errorf("record of %s still there: %+v", key, s)
	}
	if s := e.Row(other); s == nil || s.Status != desired.StatusRunning {
		t.Errorf("other session touched: %+v", s)
	}

	// The default session, named without a project.
	r = e.Run("stop", user)
	checkResult(t, r, 0, "Destroyed session: "+user+" (container "+base+")\n", "")
	if got := e.objectNames(); len(got) != 0 {
		t.Errorf("objects left: %v", got)
	}
	checkResult(t, e.Run("list"), 0, "No active sessions.\n", "")
}

func TestStopUnknownAndMalformed(t *testing.T) {
	e := newAdminEnv(t)
	user := harness.Uniq("adnone")
	checkResult(t, e.Run("stop", user+"@proj"), 1, "", "Error: no active session for "+user+"@proj\n")
	checkResult(t, e.Run("stop", user), 1, "", "Error: no active session for "+user+"\n")
	checkResult(t, e.Run("stop", "@x"), 1, "", "Error: invalid session \"@x\": user is required (expected user or user@project)\n")
	checkResult(t, e.Run("stop", "alice@"), 1, "", "Error: invalid session \"alice@\": project is empty after '@' (use alice for the default session)\n")
}

// G11: when Docker refuses a removal, stop says which and fails; the
// record stays terminating until the teardown can finish.
func TestStopReportsDockerRefusal(t *testing.T) {
	e := newAdminEnv(t)
	user := harness.Uniq("adfail")
	e.AddUser(user)
	key := desired.SessionKey{User: user, Project: "web"}
	e.startSession(key)
	netName := desired.NetworkName(key)
	blocker := e.foreignContainer(harness.Uniq("adblocker-"), netName)

	r := e.Run("stop", key.String())
	if r.Code != 1 || r.Stdout != "" {
		t.Fatalf("stop with a foreign endpoint on %s: exit %d, stdout %q; want exit 1 and no success line", netName, r.Code, r.Stdout)
	}
	// Only the error: no progress lines before it.
	errLine := r.Stderr
	if !strings.HasPrefix(errLine, "Error: ") {
		t.Errorf("stderr does not start with the error:\n%s", errLine)
	}
	for _, want := range []string{"Error: could not destroy session " + key.String() + ": remove-network " + netName + ": ",
		"active endpoints", "already done: removed container " + desired.ContainerName(key), "status terminating"} {
		if !strings.Contains(errLine, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errLine)
		}
	}
	s := e.Row(key)
	if s == nil || s.Status != desired.StatusTerminating || s.TerminateReason != "user-requested" {
		t.Fatalf("record after the failed stop: %+v, want terminating for user-requested", s)
	}

	// Once the endpoint is gone, running stop again finishes the job.
	if err := e.Docker.ContainerRemove(context.Background(), blocker, container.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	r = e.Run("stop", key.String())
	checkResult(t, r, 0, "Destroyed session: "+key.String()+" (container "+desired.ContainerName(key)+")\n", "")
	if got := e.objectNames(); len(got) != 0 {
		t.Errorf("objects left: %v", got)
	}
	if s := e.Row(key); s != nil {
		t.Errorf("record still there: %+v", s)
	}
}

func TestRemoveUser(t *testing.T) {
	e := newAdminEnv(t)
	user := harness.Uniq("adrm")
	e.AddUser(user)
	e.startSession(desired.SessionKey{User: user})
	e.startSession(desired.SessionKey{User: user, Project: "api"}, cacheService())
	keyFile := filepath.Join(e.KeyDir, user)

	// Without --force: refused, nothing changed.
	db, objs := e.DBDump(), e.objects()
	checkResult(t, e.Run("remove-user", user), 1, "", "Error: user "+user+" has 2 active session(s); use --force to destroy them\n")
	if diff := cmp.Diff(db, e.DBDump()); diff != "" {
		t.Errorf("state database changed (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff(objs, e.objects()); diff != "" {
		t.Errorf("Docker objects changed (-before +after):\n%s", diff)
	}
	if _, err := os.Stat(keyFile); err != nil {
		t.Errorf("key file: %v", err)
	}

	// With --force: every session destroyed, then the user.
	r := e.Run("remove-user", user, "--force")
	base := "podspawn-" + user
	checkResult(t, r, 0, "Destroyed session: "+user+" (container "+base+")\n"+
		"Destroyed session: "+user+"@api (container "+base+"-api)\n"+
		"removed user "+user+" (2 session(s) destroyed)\n", "")
	if got := e.objectNames(); len(got) != 0 {
		t.Errorf("objects left: %v", got)
	}
	if _, err := os.Stat(keyFile); !os.IsNotExist(err) {
		t.Errorf("key file still there: %v", err)
	}
	checkResult(t, e.Run("list"), 0, "No active sessions.\n", "")
	checkResult(t, e.Run("remove-user", user), 1, "", "Error: user \""+user+"\" is not registered (no key file in "+e.KeyDir+")\n")
}

func TestRemoveUserWithoutSessions(t *testing.T) {
	e := newAdminEnv(t)
	user := harness.Uniq("adrm")
	e.AddUser(user)
	checkResult(t, e.Run("remove-user", user), 0, "removed user "+user+" (0 session(s) destroyed)\n", "")
	if _, err := os.Stat(filepath.Join(e.KeyDir, user)); !os.IsNotExist(err) {
		t.Errorf("key file still there: %v", err)
	}
}

// G17: a name that is a path is refused before any path is built.
func TestRemoveUserPathTraversal(t *testing.T) {
	e := newAdminEnv(t)
	victim := filepath.Join(filepath.Dir(e.KeyDir), "x")
	if err := os.WriteFile(victim, []byte("precious\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	checkResult(t, e.Run("remove-user", "../x"), 1, "",
		"Error: invalid username \"../x\": must be 1-32 chars, start with a lowercase letter, and contain only [a-z0-9_-]\n")
	checkResult(t, e.Run("remove-user", "../x", "--force"), 1, "",
		"Error: invalid username \"../x\": must be 1-32 chars, start with a lowercase letter, and contain only [a-z0-9_-]\n")
	if data, err := os.ReadFile(victim); err != nil || string(data) != "precious\n" {
		t.Errorf("%s was touched: %q, %v", victim, data, err)
	}
}

func TestDryRunChangesNothing(t *testing.T) {
	e := newAdminEnv(t)
	user := harness.Uniq("addry")
	e.AddUser(user)
	key := desired.SessionKey{User: user, Project: "web"}
	e.startSession(key, cacheService())
	e.startSession(desired.SessionKey{User: user})
	db, objs := e.DBDump(), e.objects()
	base := "podspawn-" + user

	r := e.MustRun("stop", key.String(), "--dry-run")
	for _, want := range []string{
		"mark-terminating  " + key.String(), "remove-container  " + key.String() + "  " + base + "-web ",
		base + "-web-cache ", "remove-network    " + key.String() + "  " + base + "-web-net ",
		"remove-volume     " + key.String() + "  " + base + "-web-cache-data ", "delete-session    " + key.String(),
		"Plan: 0 to create, 1 to change, 5 to remove.",
	} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("stop --dry-run output lacks %q:\n%s", want, r.Stdout)
		}
	}
	r = e.MustRun("remove-user", user, "--force", "--dry-run")
	for _, want := range []string{
		"Plan: 0 to create, 2 to change, 8 to remove.",
		"Key file " + filepath.Join(e.KeyDir, user) + " would be removed",
	} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("remove-user --dry-run output lacks %q:\n%s", want, r.Stdout)
		}
	}
	e.MustRun("remove-user", user, "--force", "--dry-run", "-o", "json")

	if diff := cmp.Diff(db, e.DBDump()); diff != "" {
		t.Errorf("state database changed (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff(objs, e.objects()); diff != "" {
		t.Errorf("Docker objects changed (-before +after):\n%s", diff)
	}
	if _, err := os.Stat(filepath.Join(e.KeyDir, user)); err != nil {
		t.Errorf("key file: %v", err)
	}
}

func TestStatusDockerUnreachable(t *testing.T) {
	e := newAdminEnv(t)
	user := harness.Uniq("adstat")
	e.AddUser(user)
	e.startSession(desired.SessionKey{User: user})
	env := []string{"DOCKER_HOST=unix:///nonexistent/docker.sock"}

	r := e.RunEnv(env, "", "status")
	// The session's age depends on how long its creation took (past a
	// minute it reads like 1m5s).
	oldest := regexp.MustCompile(`(?m)^Oldest:      [0-9hms]+$`)
	checkResult(t, harness.Result{Code: r.Code, Stdout: oldest.ReplaceAllString(r.Stdout, "Oldest:      AGE"), Stderr: r.Stderr}, 0,
		"Sessions:    1 total (1 running, 0 grace)\n"+
			"Connections: 1 active\n"+
			"Containers:  unknown (Docker unreachable: Cannot connect to the Docker daemon at unix:///nonexistent/docker.sock. Is the docker daemon running?)\n"+
			"Oldest:      AGE\n", "")

	r = e.RunEnv(env, "", "status", "--prometheus")
	if r.Code != 0 || r.Stderr != "" {
		t.Fatalf("status --prometheus: exit %d, stderr %q", r.Code, r.Stderr)
	}
	if strings.Contains(r.Stdout, "podspawn_containers_docker") {
		t.Errorf("an unreachable Docker must not be reported as a container count:\n%s", r.Stdout)
	}
	for _, want := range []string{"podspawn_sessions_total 1\n", "podspawn_connections_total 1\n", "# TYPE podspawn_docker_up gauge\npodspawn_docker_up 0\n"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r.Stdout)
		}
	}
}
