// Package daemon_test runs `podspawn cleanup --daemon` as a subprocess
// against a private dockerd that this package starts, restarts and removes.
//
// Why a private dockerd for every test here, not only the restart test: the
// daemon reconciles everything labelled managed-by=podspawn, and objects
// without an instance label count as its own, so a daemon on the shared
// dockerd could reap other engineers' test objects; the restart test must
// stop dockerd, which nobody else may see; and the benchmark needs hundreds
// of networks, more than the shared daemon's address pools hold.
//
// The private dockerd runs in a network namespace of its own. In the host's
// namespace it would share the host's links with the host's dockerd: with
// --bridge=none, dockerd deletes docker0 at start, which broke `docker run`
// on the host's default network until the host's Docker was restarted, and
// its session networks' bridges would sit beside the host's.
package daemon_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"golang.org/x/sys/unix"

	"github.com/podspawn/podspawn/test/harness"
)

// Fixed paths of the private dockerd. The unix socket path must stay short.
const (
	dmRunDir   = "/run/podspawn-dmtest"
	dmDataRoot = "/var/lib/podspawn-dmtest"
	dmHost     = "unix://" + dmRunDir + "/docker.sock"
	// A pool of /28 subnets: thousands of session networks fit. They live
	// in the private daemon's own network namespace, so they cannot meet
	// the host's routes or the shared daemon's 172.x ranges.
	dmAddressPool = "base=10.123.0.0/16,size=28"
)

func TestMain(m *testing.M) {
	// One run of this package at a time per host: the private dockerd has
	// fixed paths, and a second run would take it over.
	lock, err := os.OpenFile(dmRunDir+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		fmt.Fprintf(os.Stderr, "opening %s.lock: %v\n", dmRunDir, err)
		os.Exit(1)
	}
	if unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
		fmt.Fprintf(os.Stderr, "another run of test/daemon holds %s.lock; waiting for it\n", dmRunDir)
		if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
			fmt.Fprintf(os.Stderr, "locking %s.lock: %v\n", dmRunDir, err)
			os.Exit(1)
		}
	}
	// Before anything here starts a dockerd: TestPrivateDockerdLeavesHostNetworkAlone
	// checks that the host's default bridge outlives the private daemon.
	_, err = net.InterfaceByName(hostBridge)
	hostBridgeBefore = err == nil
	// Everything in this package, the harness's end-of-test removal and
	// harness.EnsureImage included, talks to the private dockerd only.
	hostDockerHost = os.Getenv("DOCKER_HOST")
	os.Setenv("DOCKER_HOST", dmHost)
	code := m.Run()
	if err := privateDockerd.shutdown(); err != nil {
		fmt.Fprintf(os.Stderr, "stopping the private dockerd: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	os.Setenv("DOCKER_HOST", hostDockerHost)
	lock.Close()
	os.Exit(code)
}

// The host's default bridge, and whether it existed when this package
// started; the DOCKER_HOST of the host's dockerd ("" for the default).
const hostBridge = "docker0"

var (
	hostBridgeBefore bool
	hostDockerHost   string
)

// dockerd is the private daemon. Tests call use(t) to have it running.
type dockerd struct {
	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	started bool
	log     string
	// netns holds the daemon's network namespace open from its first start
	// to shutdown: a dockerd restarted under live-restore must find its
	// containers' bridges and veths, and containerd's shims, where it left
	// them.
	netns *os.File
}

var privateDockerd = &dockerd{}

func (d *dockerd) args() []string {
	return []string{
		"--config-file", filepath.Join(dmRunDir, "daemon.json"),
		"--host", dmHost,
		"--data-root", dmDataRoot,
		"--exec-root", filepath.Join(dmRunDir, "exec"),
		"--pidfile", filepath.Join(dmRunDir, "docker.pid"),
		// No default bridge: the sessions get their own networks. In its
		// own namespace, the docker0 that --bridge=none deletes is not the
		// host's. No iptables: nothing needs NAT, and it keeps the host's
		// (and the namespace's) tables untouched.
		"--bridge=none", "--iptables=false", "--ip-masq=false",
		"--default-address-pool", dmAddressPool,
		"--shutdown-timeout", "2",
		// Containers outlive a dockerd restart, as on hosts that enable
		// live-restore: the restart test then shows the daemon enforcing a
		// deadline, not reacting to containers that died with dockerd.
		"--live-restore",
	}
}

// use starts the private dockerd if it is not running, with the test
// image loaded, and returns a client for it.
func (d *dockerd) use(t testing.TB) *client.Client {
	t.Helper()
	d.mu.Lock()
	if d.cmd == nil {
		if err := d.start(); err != nil {
			d.mu.Unlock()
			t.Fatalf("starting the private dockerd (run hack/ci-setup.sh if dockerd is missing): %v", err)
		}
	}
	first := !d.started
	d.started = true
	d.mu.Unlock()
	if first {
		// Builds into the private daemon (DOCKER_HOST points there): the
		// image is FROM scratch, so no registry is needed.
		harness.EnsureImage(t)
	}
	return harness.Docker(t)
}

// killStale stops a dockerd left by an earlier, crashed run of this package.
func killStale() {
	data, err := os.ReadFile(filepath.Join(dmRunDir, "docker.pid"))
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return
	}
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if strings.TrimSpace(string(comm)) != "dockerd" {
		return
	}
	syscall.Kill(pid, syscall.SIGTERM)
	for i := 0; i < 600 && syscall.Kill(pid, 0) == nil; i++ {
		time.Sleep(100 * time.Millisecond) // waiting for a foreign process to exit
	}
}

func (d *dockerd) start() error {
	if _, err := exec.LookPath("dockerd"); err != nil {
		if _, err2 := os.Stat("/usr/sbin/dockerd"); err2 != nil {
			return err
		}
	}
	killStale()
	if err := os.MkdirAll(dmRunDir, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dmRunDir, "daemon.json"), []byte("{}\n"), 0o600); err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(dmRunDir, "dockerd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	bin := "dockerd"
	if _, err := exec.LookPath(bin); err != nil {
		bin = "/usr/sbin/dockerd"
	}
	if d.netns == nil {
		if d.netns, err = newNetns(); err != nil {
			logf.Close()
			return fmt.Errorf("creating the private dockerd's network namespace: %w", err)
		}
	}
	// nsenter joins the namespace through this process's descriptor and
	// execs dockerd (same pid), which holds no descriptor of its own to it.
	nsPath := fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), d.netns.Fd())
	cmd := exec.Command("nsenter", append([]string{"--net=" + nsPath, "--", bin}, d.args()...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: a ^C on the test must not reach it directly;
	// shutdown() stops it in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	logf.Close()
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	d.cmd, d.exited, d.log = cmd, exited, filepath.Join(dmRunDir, "dockerd.log")
	c, err := client.NewClientWithOpts(client.WithHost(dmHost), client.WithAPIVersionNegotiation())
	if err != nil {
		return err
	}
	defer c.Close()
	deadline := time.Now().Add(90 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := c.Ping(ctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			d.cmd = nil
			return fmt.Errorf("dockerd exited during startup; see %s:\n%s", d.log, tail(d.log))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("dockerd did not answer within 90s: %v\n%s", err, tail(d.log))
		}
		time.Sleep(100 * time.Millisecond) // polling a starting daemon
	}
}

// stop stops dockerd gracefully (as systemctl stop docker would) and waits
// for it to exit.
func (d *dockerd) stop(t testing.TB) {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.stopLocked(); err != nil {
		t.Fatal(err)
	}
}

func (d *dockerd) stopLocked() error {
	if d.cmd == nil {
		return nil
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(2 * time.Minute):
		d.cmd.Process.Kill()
		<-d.exited
		d.cmd = nil
		return fmt.Errorf("dockerd did not stop within 2m after SIGTERM; killed it")
	}
	d.cmd = nil
	return nil
}

// restart starts dockerd again after stop.
func (d *dockerd) restart(t testing.TB) {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.start(); err != nil {
		t.Fatal(err)
	}
}

// ensureRunning starts dockerd again if a test stopped it.
func (d *dockerd) ensureRunning() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd != nil {
		return nil
	}
	return d.start()
}

// newNetns creates a network namespace and returns a descriptor that keeps
// it alive; it goes away once that is closed and no process is left in it.
func newNetns() (*os.File, error) {
	type result struct {
		f   *os.File
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// unshare moves only this thread. It stays locked to the goroutine,
		// which then ends: the runtime ends the thread with it instead of
		// running other goroutines in the new namespace.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ch <- result{nil, err}
			return
		}
		f, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		ch <- result{f, err}
	}()
	r := <-ch
	return r.f, r.err
}

// shutdown stops dockerd and removes everything it stored.
func (d *dockerd) shutdown() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.started {
		return nil
	}
	// With live-restore, containers outlive dockerd: a test that left it
	// stopped would leave them running. Everything in this daemon belongs
	// to this package.
	if d.cmd == nil {
		if err := d.start(); err != nil {
			return err
		}
	}
	if err := removeAll(); err != nil {
		return err
	}
	if err := d.stopLocked(); err != nil {
		return err
	}
	// Nothing is left in the namespace: closing it removes it.
	if d.netns != nil {
		d.netns.Close()
		d.netns = nil
	}
	// dockerd leaves its data root bind-mounted onto itself under live-restore.
	for _, m := range mountsUnder(dmDataRoot, dmRunDir) {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmounting %s: %w", m, err)
		}
	}
	if err := os.RemoveAll(dmDataRoot); err != nil {
		return err
	}
	return os.RemoveAll(dmRunDir)
}

// removeAll removes every container and network of the private dockerd.
func removeAll() error {
	c, err := client.NewClientWithOpts(client.WithHost(dmHost), client.WithAPIVersionNegotiation())
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cs, err := c.ContainerList(ctx, container.ListOptions{All: true})
	if err != nil {
		return fmt.Errorf("listing containers of the private dockerd: %w", err)
	}
	for _, ct := range cs {
		if err := c.ContainerRemove(ctx, ct.ID, container.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil {
			return err
		}
	}
	ns, err := c.NetworkList(ctx, network.ListOptions{})
	if err != nil {
		return err
	}
	for _, n := range ns {
		if n.Name != "none" && n.Name != "host" && n.Name != "bridge" {
			c.NetworkRemove(ctx, n.ID)
		}
	}
	return nil
}

// mountsUnder returns the mount points at or below the given directories,
// deepest first.
func mountsUnder(dirs ...string) []string {
	data, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		for _, d := range dirs {
			if f[1] == d || strings.HasPrefix(f[1], d+"/") {
				out = append(out, f[1])
			}
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(out)))
	return out
}

func tail(path string) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return strings.Join(lines, "\n")
}

// syncBuffer is a bytes.Buffer safe for a writing subprocess and a
// reading test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
