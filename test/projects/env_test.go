// Package projects_test runs projects end to end against the real Docker
// daemon: add/update/remove-project from a local git repository, project
// sessions through spawn (run as root with --user, no sshd), companion
// services, hooks and teardown.
package projects_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podspawn/podspawn/actions/dockeract"

	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/projects"
	"github.com/podspawn/podspawn/test/harness"
)

// env is a harness env plus what these tests need around it.
type env struct {
	*harness.Env
	t        *testing.T
	dc       *client.Client
	instance string
	proxy    *harness.ScopeProxy
	// nonce goes into every Podfile, so image tags are unique to this run
	// and removing them at the end never hits another test's image.
	nonce string

	mu     sync.Mutex
	images map[string]bool
}

func newEnv(t *testing.T, o harness.Options) *env {
	t.Helper()
	e := &env{t: t, dc: harness.Docker(t), nonce: harness.Uniq(""), images: map[string]bool{}}
	// Registered before the harness env, so it runs after its containers
	// (which use the images) are removed.
	t.Cleanup(e.removeImages)
	e.Env = harness.NewEnv(t, o)
	st := e.OpenStore() // creates the database and its instance id
	e.instance = st.InstanceID()
	st.Close()
	e.proxy = harness.NewScopeProxy(t)
	e.proxy.AddInstance(e.instance)
	return e
}

func (e *env) trackImage(tag string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.images[tag] = true
}

func (e *env) removeImages() {
	e.mu.Lock()
	defer e.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for tag := range e.images {
		if _, err := e.dc.ImageRemove(ctx, tag, image.RemoveOptions{PruneChildren: true}); err != nil && !strings.Contains(err.Error(), "No such image") {
			e.t.Logf("removing test image %s: %v", tag, err)
		}
	}
}

// gitRun runs git in dir and returns its trimmed output.
func gitRun(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-c", "user.name=podspawn test", "-c", "user.email=test@podspawn.invalid", "-c", "init.defaultBranch=main"}, args...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// newRepo makes a local git repository holding files, committed.
func (e *env) newRepo(files map[string]string) string {
	e.t.Helper()
	dir := filepath.Join(e.Root, "repos", harness.Uniq("repo"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		e.t.Fatal(err)
	}
	gitRun(e.t, dir, "init", "--quiet")
	e.commit(dir, files)
	return dir
}

// commit writes files into the repository and commits them.
func (e *env) commit(dir string, files map[string]string) {
	e.t.Helper()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			e.t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			e.t.Fatal(err)
		}
	}
	gitRun(e.t, dir, "add", "-A")
	gitRun(e.t, dir, "commit", "--quiet", "-m", "change")
}

// servicePodfile is the Podfile most tests use: the busybox image, an env
// with the user and project expanded, a db service answering "pong <user>"
// on 5432 with a named volume, and hooks that append to ~/hooks.log.
func (e *env) servicePodfile(extra string) string {
	return fmt.Sprintf(`# test run %s
base: %s
env:
  GREETING: "hello ${PODSPAWN_USER} from ${PODSPAWN_PROJECT}"
services:
  - name: db
    image: %s
    env:
      WHO: "${PODSPAWN_USER}"
    command: ["sh", "-c", "while true; do echo pong $WHO | nc -l -p 5432; done"]
    volumes: ["data:/var/lib/db"]
%s`, e.nonce, harness.Image, harness.Image, extra)
}

// askDB prints what the db service answers, retrying while it is still
// starting to listen.
const askDB = `for i in $(seq 100); do out=$(nc -w 2 db 5432 </dev/null) && [ -n "$out" ] && break; sleep 0.1; done; echo "$out"`

const defaultHooks = `on_create: echo "created $(id -un) $(pwd) $GREETING" >> $HOME/hooks.log
on_start: echo started >> $HOME/hooks.log
`

// addProject registers name from repo and returns its image tag.
func (e *env) addProject(name, repo string) string {
	e.t.Helper()
	r := e.MustRun("add-project", name, "--repo", repo)
	reg := e.registry()
	p, ok := reg[name]
	if !ok {
		e.t.Fatalf("add-project %s succeeded but %s has no entry: %+v", name, e.registryPath(), reg)
	}
	e.trackImage(p.ImageTag)
	if want := fmt.Sprintf("project %s registered, image: %s\n", name, p.ImageTag); r.Stdout != want {
		e.t.Fatalf("add-project stdout = %q, want %q", r.Stdout, want)
	}
	return p.ImageTag
}

func (e *env) registryPath() string { return filepath.Join(e.Root, "etc", "projects.yaml") }
func (e *env) projectsDir() string  { return filepath.Join(e.StateDir, "projects") }

func (e *env) registry() projects.Registry {
	e.t.Helper()
	reg, err := projects.Load(e.registryPath())
	if err != nil {
		e.t.Fatal(err)
	}
	return reg
}

// spawnEnv is the environment of a connection: the command as sshd
// passes it, and no sudo identity (the test runs spawn as root).
func spawnEnv(cmd string) []string {
	return []string{"SSH_ORIGINAL_COMMAND=" + cmd, "SUDO_USER=", "SUDO_UID=", "PODSPAWN_PROJECT="}
}

// spawn runs one connection of user to project running cmd.
func (e *env) spawn(user, project, cmd string) harness.Result {
	e.t.Helper()
	return e.RunEnv(spawnEnv(cmd), "", "spawn", "--user", user, "--project", project)
}

// mustSpawn runs a connection and fails the test unless it exits 0.
func (e *env) mustSpawn(user, project, cmd string) harness.Result {
	e.t.Helper()
	r := e.spawn(user, project, cmd)
	if r.Code != 0 {
		e.t.Fatalf("spawn %s@%s %q: exit %d\nstdout:\n%s\nstderr:\n%s", user, project, cmd, r.Code, r.Stdout, r.Stderr)
	}
	return r
}

// startSpawn starts a connection in the background.
func (e *env) startSpawn(user, project, cmd string) *asyncSpawn {
	e.t.Helper()
	c := exec.Command(e.Bin, "--config", e.ConfigPath, "spawn", "--user", user, "--project", project)
	c.Env = append(os.Environ(), spawnEnv(cmd)...)
	a := &asyncSpawn{cmd: c, done: make(chan struct{})}
	c.Stdout, c.Stderr = &a.stdout, &a.stderr
	if err := c.Start(); err != nil {
		e.t.Fatal(err)
	}
	go func() {
		defer close(a.done)
		err := c.Wait()
		if ee, ok := err.(*exec.ExitError); ok {
			a.code = ee.ExitCode()
		} else if err != nil {
			a.code = -1
		}
	}()
	e.t.Cleanup(func() {
		c.Process.Kill()
		<-a.done
	})
	return a
}

type asyncSpawn struct {
	cmd            *exec.Cmd
	stdout, stderr strings.Builder
	code           int
	done           chan struct{}
}

func (a *asyncSpawn) wait(t *testing.T) harness.Result {
	t.Helper()
	select {
	case <-a.done:
	case <-time.After(3 * time.Minute):
		t.Fatalf("spawn did not finish within 3m\nstdout:\n%s\nstderr:\n%s", a.stdout.String(), a.stderr.String())
	}
	return harness.Result{Stdout: a.stdout.String(), Stderr: a.stderr.String(), Code: a.code}
}

// cleanup runs podspawn cleanup through the scope proxy.
func (e *env) cleanup() harness.Result {
	e.t.Helper()
	r := e.RunEnv([]string{"DOCKER_HOST=" + e.proxy.Host()}, "", "cleanup")
	if r.Code != 0 {
		e.t.Fatalf("podspawn cleanup: exit %d\nstdout:\n%s\nstderr:\n%s", r.Code, r.Stdout, r.Stderr)
	}
	return r
}

// keyObjects lists the objects of a session key.
func (e *env) keyObjects(key desired.SessionKey) []harness.Object {
	e.t.Helper()
	return harness.ListObjects(e.t, e.dc, e.instance, "podspawn.user="+key.User, "podspawn.project="+key.Project)
}

// sessionObjectNames is what a project session with the db service owns.
func sessionObjectNames(key desired.SessionKey) []string {
	c := desired.ContainerName(key)
	return []string{"container " + c, "container " + c + "-db", "network " + c + "-net", "volume " + c + "-db-data"}
}

// dockerExec runs cmd in a container as user and returns its exit code and output.
func (e *env) dockerExec(ctr, user string, cmd ...string) (int, string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	code, out, err := dockeract.Exec(ctx, e.dc, ctr, cmd, user)
	if err != nil {
		e.t.Fatalf("docker exec %s %v: %v", ctr, cmd, err)
	}
	return code, out
}

// tryExec is dockerExec for a container that may not exist yet.
func (e *env) tryExec(ctr, user string, cmd ...string) (int, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return dockeract.Exec(ctx, e.dc, ctr, cmd, user)
}

// holdsOpen reports whether process pid has path open.
func holdsOpen(pid int, path string) bool {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join(dir, fd.Name())); err == nil && target == path {
			return true
		}
	}
	return false
}

// containerImage is the image reference a container was created from.
func (e *env) containerImage(name string) string {
	e.t.Helper()
	info, err := e.dc.ContainerInspect(context.Background(), name)
	if err != nil {
		e.t.Fatal(err)
	}
	return info.Config.Image
}

// imageExists reports whether ref is present.
func (e *env) imageExists(ref string) bool {
	e.t.Helper()
	ok, err := dockeract.ImageExists(context.Background(), e.dc, ref)
	if err != nil {
		e.t.Fatal(err)
	}
	return ok
}

// countLines counts lines of text equal to line.
func countLines(text, line string) int {
	n := 0
	for _, l := range strings.Split(text, "\n") {
		if l == line {
			n++
		}
	}
	return n
}
