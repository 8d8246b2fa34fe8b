package daemon_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/config"
	"github.com/podspawn/podspawn/desired/sqlstore"
	"github.com/podspawn/podspawn/observed/proc"
	"github.com/podspawn/podspawn/test/harness"
)

// dmEnv is a podspawn installation whose Docker is the private dockerd.
type dmEnv struct {
	*harness.Env
	t      testing.TB
	Docker *client.Client
	Grace  time.Duration
}

func newDmEnv(t testing.TB, grace time.Duration) *dmEnv {
	t.Helper()
	dc := privateDockerd.use(t)
	env := harness.NewEnv(t, harness.Options{
		Session: fmt.Sprintf("  grace_period: %s\n  max_lifetime: 8h\n  mode: grace-period\n", grace),
	})
	return &dmEnv{Env: env, t: t, Docker: dc, Grace: grace}
}

// uniq returns prefix plus a random suffix, so that a crashed earlier run
// cannot collide with this one.
func uniq(prefix string) string {
	var b [3]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

func (e *dmEnv) store() *sqlstore.Store {
	e.t.Helper()
	st, err := sqlstore.Open(context.Background(), e.DBPath)
	if err != nil {
		e.t.Fatalf("opening state db: %v", err)
	}
	return st
}

// addUser gives user a key file, so the session is not torn down as
// belonging to a removed user. The content does not matter to the daemon.
func (e *dmEnv) addUser(user string) {
	e.t.Helper()
	if err := os.WriteFile(filepath.Join(e.KeyDir, user), []byte("# test user\n"), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

// helper is a process that holds a session's lease; killing it is the
// connection ending without a clean disconnect.
type helper struct {
	cmd   *exec.Cmd
	start uint64
}

func startHelper(t testing.TB) *helper {
	t.Helper()
	cmd := exec.Command("sleep", "3600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &helper{cmd: cmd}
	t.Cleanup(h.kill)
	st, err := proc.StartTime(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	h.start = st
	return h
}

// kill ends the helper and reaps it. Idempotent.
func (h *helper) kill() {
	if h.cmd.ProcessState != nil {
		return
	}
	h.cmd.Process.Kill()
	h.cmd.Wait()
}

// seed inserts a session in status creating with leases of the helpers, as
// spawn does before creating anything; the daemon creates the objects.
func (e *dmEnv) seed(key desired.SessionKey, helpers ...*helper) string {
	e.t.Helper()
	e.addUser(key.User)
	now := time.Now()
	sess := &desired.Session{
		Key: key, ID: sqlstore.NewSessionID(), Mode: desired.ModeGracePeriod, Status: desired.StatusCreating,
		CreatedAt: now, MaxLifetimeAt: now.Add(8 * time.Hour), GracePeriod: e.Grace,
		Spec: desired.Spec{
			Image: harness.Image, Shell: "/bin/sh",
			ContainerName: desired.ContainerName(key), NetworkName: desired.NetworkName(key),
			Security: config.Defaults().SecuritySpec(),
		},
	}
	st := e.store()
	defer st.Close()
	ctx := context.Background()
	if err := st.Create(ctx, sess, now); err != nil {
		e.t.Fatal(err)
	}
	for _, h := range helpers {
		if _, err := st.AddLease(ctx, sess.ID, h.cmd.Process.Pid, h.start, now); err != nil {
			e.t.Fatal(err)
		}
	}
	return sess.ID
}

// row loads one session (nil if absent).
func (e *dmEnv) row(key desired.SessionKey) *desired.Session {
	e.t.Helper()
	st := e.store()
	defer st.Close()
	s, err := st.LoadKey(context.Background(), key)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

func (e *dmEnv) containerRunning(name string) (exists, running bool) {
	e.t.Helper()
	c, err := e.Docker.ContainerInspect(context.Background(), name)
	if errdefs.IsNotFound(err) {
		return false, false
	}
	if err != nil {
		e.t.Fatalf("inspecting %s: %v", name, err)
	}
	return true, c.State != nil && c.State.Running
}

func (e *dmEnv) networkExists(name string) bool {
	e.t.Helper()
	_, err := e.Docker.NetworkInspect(context.Background(), name, network.InspectOptions{})
	if errdefs.IsNotFound(err) {
		return false
	}
	if err != nil {
		e.t.Fatalf("inspecting network %s: %v", name, err)
	}
	return true
}

// running reports whether key's row is running with its container up.
func (e *dmEnv) running(key desired.SessionKey) bool {
	s := e.row(key)
	_, up := e.containerRunning(desired.ContainerName(key))
	return s != nil && s.Status == desired.StatusRunning && up
}

// gone reports whether key has no row, no container and no network.
func (e *dmEnv) gone(key desired.SessionKey) bool {
	c, _ := e.containerRunning(desired.ContainerName(key))
	return e.row(key) == nil && !c && !e.networkExists(desired.NetworkName(key))
}

// daemonProc is a running `podspawn cleanup --daemon`.
type daemonProc struct {
	t      testing.TB
	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan struct{}
}

// startDaemon runs the daemon with -v (resync summaries) and --interval 1h,
// so that nothing in a test can be explained by a periodic pass.
func (e *dmEnv) startDaemon(extra ...string) *daemonProc {
	e.t.Helper()
	return e.startDaemonArgs(append([]string{"-v", "cleanup", "--daemon", "--interval", "1h"}, extra...)...)
}

// startDaemonArgs runs podspawn --config <env> args... and waits until it
// watches Docker events.
func (e *dmEnv) startDaemonArgs(args ...string) *daemonProc {
	e.t.Helper()
	cmd := exec.Command(e.Bin, append([]string{"--config", e.ConfigPath}, args...)...)
	cmd.Env = os.Environ()
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	p := &daemonProc{t: e.t, cmd: cmd, out: out, exited: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(p.exited)
	}()
	e.t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			cmd.Process.Kill()
			<-p.exited
		}
		// PODSPAWN_TEST_DAEMON_LOG=1 shows it for passing tests too.
		if e.t.Failed() || os.Getenv("PODSPAWN_TEST_DAEMON_LOG") != "" {
			e.t.Logf("daemon output:\n%s", out.String())
		}
	})
	p.waitLog(60*time.Second, "Watching Docker events")
	return p
}

// waitLog waits until the output contains s.
func (p *daemonProc) waitLog(timeout time.Duration, s string) {
	p.t.Helper()
	harness.Eventually(p.t, timeout, fmt.Sprintf("daemon output %q", s), func() bool { return strings.Contains(p.out.String(), s) })
}

// lines returns the output lines that contain every part.
func (p *daemonProc) lines(parts ...string) []string {
	var out []string
	for _, l := range strings.Split(p.out.String(), "\n") {
		all := true
		for _, s := range parts {
			all = all && strings.Contains(l, s)
		}
		if all {
			out = append(out, l)
		}
	}
	return out
}

var actionRE = regexp.MustCompile(`"action": "([a-z-]+)"`)

// actions returns, in log order, the action kinds of the lines that
// contain every part.
func (p *daemonProc) actions(parts ...string) []string {
	var out []string
	for _, l := range p.lines(parts...) {
		if m := actionRE.FindStringSubmatch(l); m != nil {
			out = append(out, m[1])
		}
	}
	return out
}

func (p *daemonProc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// term sends SIGTERM and returns the exit code.
func (p *daemonProc) term() int {
	p.t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(2 * time.Minute):
		p.t.Fatal("daemon did not exit within 2m of SIGTERM")
	}
	return p.cmd.ProcessState.ExitCode()
}

var attemptRE = regexp.MustCompile(`"attempt": (\d+)`)

// attempts returns the attempt numbers of the failure lines of user.
func (p *daemonProc) attempts(user string) []int {
	var out []int
	for _, l := range p.lines("Reconcile failed", `"user": "`+user+`"`) {
		if m := attemptRE.FindStringSubmatch(l); m != nil {
			n, _ := strconv.Atoi(m[1])
			out = append(out, n)
		}
	}
	return out
}

// blocker starts an unlabelled container on network, which Docker then
// refuses to remove. It is removed at the end of the test (the harness only
// removes labelled objects).
func (e *dmEnv) blocker(networkName string) string {
	e.t.Helper()
	ctx := context.Background()
	name := uniq("dmblocker-")
	c, err := e.Docker.ContainerCreate(ctx, &container.Config{Image: harness.Image, Cmd: []string{"sleep", "infinity"}},
		&container.HostConfig{NetworkMode: container.NetworkMode(networkName)}, nil, nil, name)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		e.Docker.ContainerRemove(context.Background(), c.ID, container.RemoveOptions{Force: true})
	})
	if err := e.Docker.ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
		e.t.Fatal(err)
	}
	return c.ID
}
