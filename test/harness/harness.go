// Package harness gives end-to-end tests a real podspawn binary, a
// temporary root with its own config, key directory and state database,
// and the local busybox test image. Every Docker object a test env creates
// carries the env's instance id and is removed when the test ends.
package harness

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"
)

// Image is the FROM-scratch busybox image built by hack/build-test-image.sh.
const Image = "podspawn-test:busybox"

// RepoRoot is the repository root.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	imageOnce sync.Once
	imageErr  error
)

// Binary builds podspawn, and the agent relay next to it, once per test
// process into a root-owned 0755 directory (sshd refuses an
// AuthorizedKeysCommand under /tmp) and returns podspawn's path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		removeStaleBuilds("/usr/local/lib/podspawn-test")
		dir := filepath.Join("/usr/local/lib/podspawn-test", fmt.Sprintf("%d", os.Getpid()))
		if buildErr = os.MkdirAll(dir, 0o755); buildErr != nil {
			return
		}
		for d := dir; d != "/"; d = filepath.Dir(d) {
			os.Chmod(d, 0o755)
		}
		binPath = filepath.Join(dir, "podspawn")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd")
		cmd.Dir = RepoRoot()
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		// The agent relay that spawn copies into session Pods, next to
		// podspawn as the install puts it; static, for any image.
		cmd = exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", filepath.Join(dir, "podspawn-agentrelay"), "./cmd/agentrelay")
		cmd.Dir, cmd.Env = RepoRoot(), append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/agentrelay: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatalf("building podspawn: %v", buildErr)
	}
	return binPath
}

// removeStaleBuilds deletes the build directories of test processes that
// have exited (each directory is named after its process id).
func removeStaleBuilds(root string) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(err) {
			os.RemoveAll(filepath.Join(root, e.Name()))
		}
	}
}

// Docker returns a client; the test fails if Docker does not answer (run
// hack/ci-setup.sh first), it is never skipped.
func Docker(t testing.TB) *client.Client {
	t.Helper()
	c, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatalf("docker client: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Ping(ctx); err != nil {
		t.Fatalf("Docker is not reachable (run hack/ci-setup.sh): %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// EnsureImage builds the busybox test image if needed.
func EnsureImage(t testing.TB) {
	t.Helper()
	imageOnce.Do(func() {
		cmd := exec.Command("bash", filepath.Join(RepoRoot(), "hack", "build-test-image.sh"), Image)
		out, err := cmd.CombinedOutput()
		if err != nil {
			imageErr = fmt.Errorf("%v\n%s", err, out)
		}
	})
	if imageErr != nil {
		t.Fatalf("building test image: %v", imageErr)
	}
}

// Env is a temporary podspawn installation.
type Env struct {
	T          testing.TB
	Root       string
	ConfigPath string
	KeyDir     string
	StateDir   string
	DBPath     string
	Bin        string
	// ExtraConfig is appended to the generated config.yaml by Options.
}

// Options tune NewEnv.
type Options struct {
	// Config is extra YAML appended to the generated config (top-level
	// sections it names must not be repeated: use Session, Cleanup, ...).
	Session string // body of the session: section, indented two spaces
	Cleanup string // body of the cleanup: section
	State   string // more lines of the state: section, indented two spaces
	Extra   string // more top-level YAML
}

// NewEnv creates a root under t.TempDir() with a config that uses the
// busybox image and /bin/sh, and registers removal of every Docker object
// of the env's state database at the end of the test.
func NewEnv(t testing.TB, o Options) *Env {
	t.Helper()
	EnsureImage(t)
	KeepHostFirewall(t)
	// A server has its host access rules from server-setup or its first
	// session; starting from them keeps a test's first cleanup from
	// reporting their installation (tests of the installation remove them
	// first).
	InstallHostFirewall(t)
	root := t.TempDir()
	os.Chmod(root, 0o755)
	e := &Env{T: t, Root: root, ConfigPath: filepath.Join(root, "etc", "config.yaml"), KeyDir: filepath.Join(root, "etc", "keys"),
		StateDir: filepath.Join(root, "state"), Bin: Binary(t)}
	e.DBPath = filepath.Join(e.StateDir, "state.db")
	for _, d := range []string{filepath.Dir(e.ConfigPath), e.KeyDir, e.StateDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(filepath.Dir(e.ConfigPath), 0o755)
	session := o.Session
	if session == "" {
		session = "  grace_period: 60s\n  max_lifetime: 8h\n  mode: grace-period\n"
	}
	cleanup := o.Cleanup
	if cleanup == "" {
		cleanup = "  orphan_min_age: 30s\n"
	}
	cfg := fmt.Sprintf(`auth:
  key_dir: %s
defaults:
  image: %s
  shell: /bin/sh
  cpus: 1
  memory: 256m
session:
%sstate:
  db_path: %s
  lock_dir: %s
  homes_dir: %s
  agent_dir: %s
  projects_dir: %s
%scleanup:
%sprojects_file: %s
%s`, e.KeyDir, Image, session, e.DBPath, filepath.Join(e.StateDir, "locks"), filepath.Join(e.StateDir, "homes"),
		filepath.Join(e.StateDir, "agent"), filepath.Join(e.StateDir, "projects"), o.State, cleanup, filepath.Join(root, "etc", "projects.yaml"), o.Extra)
	if err := os.WriteFile(e.ConfigPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.removeDockerObjects)
	return e
}

// Result of running the binary.
type Result struct {
	Stdout, Stderr string
	Code           int
}

// Run runs podspawn with --config set, and returns its output and exit code.
func (e *Env) Run(args ...string) Result {
	e.T.Helper()
	return e.RunEnv(nil, "", args...)
}

// RunEnv runs podspawn with extra environment variables and stdin.
func (e *Env) RunEnv(env []string, stdin string, args ...string) Result {
	e.T.Helper()
	cmd := exec.Command(e.Bin, append([]string{"--config", e.ConfigPath}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.T.Fatalf("running podspawn %v: %v", args, err)
	}
	return Result{Stdout: out.String(), Stderr: errb.String(), Code: code}
}

// MustRun runs podspawn and fails the test on a non-zero exit.
func (e *Env) MustRun(args ...string) Result {
	e.T.Helper()
	r := e.Run(args...)
	if r.Code != 0 {
		e.T.Fatalf("podspawn %v: exit %d\nstdout:\n%s\nstderr:\n%s", args, r.Code, r.Stdout, r.Stderr)
	}
	return r
}

// InstanceID reads the state database's instance id (opening it creates it).
func (e *Env) InstanceID() string {
	e.T.Helper()
	id, err := instanceID(e.DBPath)
	if err != nil {
		e.T.Fatalf("instance id: %v", err)
	}
	return id
}

// removeDockerObjects reports every failed removal but NotFound (someone
// else removed it first), so an object this env leaks is traced to its test.
func (e *Env) removeDockerObjects() {
	t := e.T
	if _, err := os.Stat(e.DBPath); err != nil {
		return // no database: this env never created anything
	}
	id, err := instanceID(e.DBPath)
	if err != nil {
		t.Errorf("removing the env's Docker objects: instance id: %v", err)
		return
	}
	c, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Errorf("removing the Docker objects of instance %s: %v", id, err)
		return
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	report := func(what string, err error) {
		if err != nil && !errdefs.IsNotFound(err) {
			t.Errorf("removing %s of instance %s: %v", what, id, err)
		}
	}
	f := filters.NewArgs(filters.Arg("label", "podspawn.instance="+id))
	cs, err := c.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	report("containers (list)", err)
	for _, ct := range cs {
		report("container "+containerName(ct), c.ContainerRemove(ctx, ct.ID, container.RemoveOptions{Force: true, RemoveVolumes: true}))
	}
	ns, err := c.NetworkList(ctx, network.ListOptions{Filters: f})
	report("networks (list)", err)
	for _, n := range ns {
		report("network "+n.Name, c.NetworkRemove(ctx, n.ID))
	}
	vs, err := c.VolumeList(ctx, volume.ListOptions{Filters: f})
	report("volumes (list)", err)
	for _, v := range vs.Volumes {
		report("volume "+v.Name, c.VolumeRemove(ctx, v.Name, true))
	}
}

func containerName(ct container.Summary) string {
	if len(ct.Names) > 0 {
		return strings.TrimPrefix(ct.Names[0], "/")
	}
	return ct.ID
}
