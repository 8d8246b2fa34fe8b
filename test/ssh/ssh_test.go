package ssh

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/test/harness"
)

// TestRemoteCommand: a command runs in the user's own container as the
// user, its exit code comes back, and 10 MB survive a round trip through
// cat byte for byte.
func TestRemoteCommand(t *testing.T) {
	s := newServer(t, serverOptions{Users: []string{"ssa"}})
	u := s.user("ssa")

	r := s.runSSH(u, nil, "", `echo "$(id -un) $(hostname) $(pwd) $HOME $USER $LOGNAME $SHELL"; echo oops >&2; exit 42`)
	if r.Code != 42 {
		t.Fatalf("exit code = %d, want 42\nstdout:\n%s\nstderr:\n%s", r.Code, r.Stdout, r.Stderr)
	}
	want := fmt.Sprintf("%[1]s %[1]s /home/%[1]s /home/%[1]s %[1]s %[1]s /bin/sh\n", u.Name)
	if r.Stdout != want {
		t.Fatalf("stdout = %q, want %q", r.Stdout, want)
	}
	if !strings.Contains(r.Stderr, "oops") {
		t.Fatalf("stderr %q lacks the command's stderr", r.Stderr)
	}
	// It ran in the session container, which carries the user's labels.
	info, err := s.Docker.ContainerInspect(context.Background(), desired.ContainerName(desired.SessionKey{User: u.Name}))
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Labels["podspawn.user"] != u.Name || !info.State.Running {
		t.Fatalf("session container labels %v, running %v", info.Config.Labels, info.State.Running)
	}

	data := make([]byte, 10<<20)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	cmd := s.ssh(u, nil, "cat")
	cmd.Stdin = bytes.NewReader(data)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("ssh cat: %v\n%s", err, errb.String())
	}
	if got, want := sha256.Sum256(out.Bytes()), sha256.Sum256(data); got != want {
		t.Fatalf("10 MB through cat: got %d bytes sha256 %x, want %d bytes sha256 %x", out.Len(), got, len(data), want)
	}

	// The sftp subsystem is routed to ssh.sftp_server in the container
	// (/bin/cat here: busybox has no sftp-server).
	r = s.runSSH(u, []string{"-s"}, "sftp-probe\n", "sftp")
	if r.Code != 0 || r.Stdout != "sftp-probe\n" {
		t.Fatalf("sftp subsystem: exit %d stdout %q stderr %q", r.Code, r.Stdout, r.Stderr)
	}
}

// TestInteractivePTY: a shell with a terminal gets a prompt, runs a
// command, follows window changes and exits cleanly.
func TestInteractivePTY(t *testing.T) {
	s := newServer(t, serverOptions{Users: []string{"ssa"}})
	u := s.user("ssa")
	sess, stdin, out := openShell(t, s, u, 40, 80, 1)
	// SIGWINCH travels sshd -> sudo -> spawn -> docker exec resize.
	checkTerminal(t, sess, stdin, out, "the container's terminal")
	s.waitFor("the connection to be released", 20*time.Second, func() bool {
		r := s.session(u, "")
		return r != nil && r.Connections == 0 && r.Status == string(desired.StatusGrace)
	})
}

// TestReattachWithinGrace: a reconnect inside the grace period reaches the
// same container; once the grace period is over, a new one.
func TestReattachWithinGrace(t *testing.T) {
	s := newServer(t, serverOptions{Users: []string{"ssa"}})
	u := s.user("ssa")
	name := desired.ContainerName(desired.SessionKey{User: u.Name})

	s.mustSSH(u, "touch /tmp/first")
	first := s.containerID(name)
	if r := s.session(u, ""); r == nil || r.Status != string(desired.StatusGrace) || r.Connections != 0 {
		t.Fatalf("after disconnect: %+v, want grace_period with 0 connections", r)
	}
	if out := s.mustSSH(u, "ls /tmp/first"); out != "/tmp/first\n" {
		t.Fatalf("reconnect did not see the first connection's file: %q", out)
	}
	if again := s.containerID(name); again != first {
		t.Fatalf("reconnect within grace: container %s, want %s", again, first)
	}

	// Let the grace period end by moving its expiry into the past.
	s.exec(`UPDATE sessions SET grace_expiry = ? WHERE user = ?`, time.Now().Add(-time.Second).UnixNano(), u.Name)
	if out := s.mustSSH(u, "ls /tmp/first 2>/dev/null; echo done"); out != "done\n" {
		t.Fatalf("after the grace period the old container's file is visible: %q", out)
	}
	second := s.containerID(name)
	if second == "" || second == first {
		t.Fatalf("after the grace period: container %q, want a new one (old %s)", second, first)
	}
}

// TestMaxLifetimeReplaced (G10): a session past its max lifetime is never
// re-attached: the connection gets a new generation.
func TestMaxLifetimeReplaced(t *testing.T) {
	s := newServer(t, serverOptions{Users: []string{"ssa"}})
	u := s.user("ssa")
	name := desired.ContainerName(desired.SessionKey{User: u.Name})
	s.mustSSH(u, "true")
	first := s.containerID(name)
	s.exec(`UPDATE sessions SET max_lifetime_at = ?, status = 'running', grace_expiry = NULL WHERE user = ?`, time.Now().Add(-time.Second).UnixNano(), u.Name)
	s.mustSSH(u, "true")
	second := s.containerID(name)
	if second == "" || second == first {
		t.Fatalf("past max lifetime: container %q, want a new one (old %s)", second, first)
	}
	if r := s.session(u, ""); r == nil || r.Status != string(desired.StatusGrace) {
		t.Fatalf("new generation: %+v", r)
	}
}

// TestConcurrentConnections: ten connections of one user share one
// container and are each counted while open; afterwards none is.
func TestConcurrentConnections(t *testing.T) {
	s := newServer(t, serverOptions{Users: []string{"ssa"}})
	u := s.user("ssa")
	const n = 10
	type conn struct {
		cmd   *exec.Cmd
		stdin io.WriteCloser
		out   bytes.Buffer
	}
	conns := make([]*conn, n)
	for i := range conns {
		c := &conn{cmd: s.ssh(u, nil, "cat")}
		var err error
		if c.stdin, err = c.cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		c.cmd.Stdout = &c.out
		if err := c.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	defer func() {
		for _, c := range conns {
			c.cmd.Process.Kill()
		}
	}()
	s.waitFor("10 connections in podspawn list", 2*time.Minute, func() bool {
		r := s.session(u, "")
		return r != nil && r.Connections == n
	})
	if r := s.session(u, ""); r.Status != string(desired.StatusRunning) {
		t.Fatalf("with 10 connections: %+v", r)
	}
	// The operator's view: the CONNS column of the text table.
	var row []string
	for _, line := range strings.Split(s.Env.MustRun("list").Stdout, "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[0] == u.Name {
			row = f
		}
	}
	if row == nil || row[3] != "running" || row[4] != "10" {
		t.Fatalf("podspawn list row %q, want STATUS running and CONNS 10", row)
	}
	ctrs, err := s.Docker.ContainerList(context.Background(), container.ListOptions{All: true,
		Filters: labelFilter("podspawn.user=" + u.Name)})
	if err != nil {
		t.Fatal(err)
	}
	if len(ctrs) != 1 {
		t.Fatalf("%d containers for %s, want 1 shared by all connections", len(ctrs), u.Name)
	}
	for i, c := range conns {
		fmt.Fprintf(c.stdin, "conn-%d\n", i)
		c.stdin.Close()
	}
	for i, c := range conns {
		if err := c.cmd.Wait(); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		if got := c.out.String(); got != fmt.Sprintf("conn-%d\n", i) {
			t.Fatalf("connection %d echoed %q", i, got)
		}
	}
	r := s.session(u, "")
	if r == nil || r.Connections != 0 || r.Status != string(desired.StatusGrace) {
		t.Fatalf("after all connections ended: %+v, want grace_period with 0 connections", r)
	}
	if pids := s.leasePIDs(u, ""); len(pids) != 0 {
		t.Fatalf("leases left after all connections ended: %v", pids)
	}
}

// TestAbruptDisconnects: neither a killed ssh client nor a kill -9 of the
// spawn process leaves a connection counted forever; at the latest the
// next cleanup pass releases it and starts the grace period.
func TestAbruptDisconnects(t *testing.T) {
	s := newServer(t, serverOptions{Users: []string{"ssa", "ssb", "ssc"}})

	// waitConnected starts ssh running sleep and returns it with the pid
	// of the spawn process that holds its lease, once the command runs.
	waitConnected := func(t *testing.T, u *testUser, extra ...string) (*exec.Cmd, int) {
		t.Helper()
		cmd := s.ssh(u, extra, "echo started; sleep 1000")
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		if got, err := readUntil(bufio.NewReader(stdout), "started", 2*time.Minute); err != nil {
			t.Fatalf("remote command did not start: %v (got %q)", err, got)
		}
		pids := s.leasePIDs(u, "")
		if len(pids) != 1 {
			t.Fatalf("leases of %s while connected: %v, want one", u.Name, pids)
		}
		return cmd, pids[0]
	}
	// Both helpers take the subtest's t: FailNow must run on that test's goroutine.
	settle := func(t *testing.T, u *testUser, spawnPID int) {
		t.Helper()
		s.waitFor(fmt.Sprintf("spawn process %d to end", spawnPID), time.Minute, func() bool {
			_, err := os.Stat(fmt.Sprintf("/proc/%d", spawnPID))
			return err != nil
		})
		s.cleanup(t)
		r := s.session(u, "")
		if r == nil || r.Connections != 0 || r.Status != string(desired.StatusGrace) {
			t.Fatalf("%s after the connection died and a cleanup pass: %+v, want grace_period with 0 connections", u.Name, r)
		}
		if pids := s.leasePIDs(u, ""); len(pids) != 0 {
			t.Fatalf("%s: leases left: %v", u.Name, pids)
		}
	}

	t.Run("ssh client killed", func(t *testing.T) {
		u := s.user("ssa")
		cmd, spawnPID := waitConnected(t, u)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		settle(t, u, spawnPID)
	})
	t.Run("ssh client with a pty killed", func(t *testing.T) {
		// A user of its own: the sleep of the connection without a pty
		// above outlives its shell's hangup (no terminal to take it).
		u := s.user("ssc")
		cmd, spawnPID := waitConnected(t, u, "-tt")
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		settle(t, u, spawnPID)
		// spawn sent the shell SIGHUP (through a pidfd); its terminal's
		// hangup took the sleep with it.
		name := desired.ContainerName(desired.SessionKey{User: u.Name})
		harness.Eventually(t, time.Minute, "the hung-up connection's command to end", func() bool {
			return !containerProcs(t, s.Docker, name)["sleep 1000"]
		})
	})
	t.Run("spawn killed with SIGKILL", func(t *testing.T) {
		u := s.user("ssb")
		cmd, spawnPID := waitConnected(t, u)
		if err := syscall.Kill(spawnPID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()
		settle(t, u, spawnPID)
	})
}

// TestDestroyOnDisconnect and persistent mode: the row's mode decides.
func TestModes(t *testing.T) {
	t.Run("destroy-on-disconnect", func(t *testing.T) {
		s := newServer(t, serverOptions{Users: []string{"ssa"}, Options: harness.Options{Session: "  grace_period: 60s\n  max_lifetime: 8h\n  mode: destroy-on-disconnect\n"}})
		u := s.user("ssa")
		name := desired.ContainerName(desired.SessionKey{User: u.Name})
		id := strings.TrimSpace(s.mustSSH(u, "cat /etc/hostname"))
		if id != u.Name {
			t.Fatalf("hostname %q", id)
		}
		// The teardown runs after the client got its exit code, in a
		// process spawn left behind.
		harness.Eventually(t, time.Minute, "the session's container and row to go after the only connection ended", func() bool {
			return s.containerID(name) == "" && s.session(u, "") == nil
		})
	})
	t.Run("persistent", func(t *testing.T) {
		s := newServer(t, serverOptions{Users: []string{"ssa"}, Options: harness.Options{Session: "  grace_period: 1s\n  max_lifetime: 8h\n  mode: persistent\n"}})
		u := s.user("ssa")
		name := desired.ContainerName(desired.SessionKey{User: u.Name})
		s.mustSSH(u, "echo kept > /tmp/state")
		first := s.containerID(name)
		s.cleanup(t)
		if r := s.session(u, ""); r == nil || r.Status != string(desired.StatusRunning) || r.Mode != string(desired.ModePersistent) {
			t.Fatalf("persistent session after disconnect and cleanup: %+v", r)
		}
		if out := s.mustSSH(u, "cat /tmp/state"); out != "kept\n" || s.containerID(name) != first {
			t.Fatalf("persistent session lost its container: %q", out)
		}
	})
}

// TestIsolation: two users cannot reach each other's container over the
// network, cannot reach the Docker socket or the state database, and
// cannot forward ports or sockets through their SSH connection.
func TestIsolation(t *testing.T) {
	s := newServer(t, serverOptions{Users: []string{"ssa", "ssb"}})
	a, b := s.user("ssa"), s.user("ssb")
	ctx := context.Background()
	s.mustSSH(a, "true")
	s.mustSSH(b, "true")

	infoA, err := s.Docker.ContainerInspect(ctx, desired.ContainerName(desired.SessionKey{User: a.Name}))
	if err != nil {
		t.Fatal(err)
	}
	infoB, err := s.Docker.ContainerInspect(ctx, desired.ContainerName(desired.SessionKey{User: b.Name}))
	if err != nil {
		t.Fatal(err)
	}
	netA, netB := desired.NetworkName(desired.SessionKey{User: a.Name}), desired.NetworkName(desired.SessionKey{User: b.Name})
	if len(infoA.NetworkSettings.Networks) != 1 || infoA.NetworkSettings.Networks[netA] == nil ||
		len(infoB.NetworkSettings.Networks) != 1 || infoB.NetworkSettings.Networks[netB] == nil {
		t.Fatalf("networks: %s on %v, %s on %v; want one own network each", a.Name, keysOf(infoA.NetworkSettings.Networks), b.Name, keysOf(infoB.NetworkSettings.Networks))
	}
	ipB := infoB.NetworkSettings.Networks[netB].IPAddress

	// A listener in B's container; the host reaches it (control), A does not.
	if out, err := exec.Command("docker", "exec", "-d", infoB.ID, "nc", "-ll", "-p", "8080", "-e", "echo", "hello-from-b").CombinedOutput(); err != nil {
		t.Fatalf("starting listener in %s: %v\n%s", b.Name, err, out)
	}
	s.waitFor("the listener in B's container to answer the host", 30*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(ipB, "8080"), time.Second)
		if err != nil {
			return false
		}
		defer c.Close()
		got, _ := io.ReadAll(c)
		return strings.Contains(string(got), "hello-from-b")
	})
	r := s.runSSH(a, nil, "", fmt.Sprintf("nc -w 3 %s 8080 </dev/null; echo nc=$?; ping -c 1 -W 2 %s >/dev/null 2>&1; echo ping=$?", ipB, ipB))
	if strings.Contains(r.Stdout, "hello-from-b") || !strings.Contains(r.Stdout, "ping=1") || strings.Contains(r.Stdout, "nc=0") {
		t.Fatalf("%s reached %s's container at %s:\n%s%s", a.Name, b.Name, ipB, r.Stdout, r.Stderr)
	}

	// Inside the container there is no Docker socket and no state database.
	r = s.runSSH(a, nil, "", fmt.Sprintf("test -e /var/run/docker.sock; echo sock=$?; echo x >> %s; echo db=$?", s.Env.DBPath))
	if !strings.Contains(r.Stdout, "sock=1") || !strings.Contains(r.Stdout, "db=1") {
		t.Fatalf("docker socket or state db reachable inside the container:\n%s", r.Stdout)
	}
	// On the host the account can neither read the database nor use sudo
	// for anything but spawn.
	if out, err := exec.Command("runuser", "-u", a.Name, "--", "sh", "-c", "test -r "+s.Env.DBPath+" || test -w "+s.Env.DBPath).CombinedOutput(); err == nil {
		t.Fatalf("%s can access %s on the host: %s", a.Name, s.Env.DBPath, out)
	}
	if out, err := exec.Command("runuser", "-u", a.Name, "--", "sudo", "-n", s.Env.Bin, "--config", s.Env.ConfigPath, "cleanup").CombinedOutput(); err == nil {
		t.Fatalf("%s ran podspawn cleanup through sudo: %s", a.Name, out)
	}

	// Forwarding is refused: TCP to a host loopback port, and the Docker
	// socket, through x/crypto/ssh (exact errors) and the ssh client.
	hostL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hostL.Close()
	go func() {
		for {
			c, err := hostL.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hello-from-host\n"))
			c.Close()
		}
	}()
	client := s.dial(a)
	if c, err := client.Dial("tcp", hostL.Addr().String()); err == nil {
		c.Close()
		t.Fatalf("direct-tcpip to %s was allowed", hostL.Addr())
	}
	if c, err := client.Dial("unix", "/var/run/docker.sock"); err == nil {
		c.Close()
		t.Fatal("streamlocal forwarding to /var/run/docker.sock was allowed")
	}
	if l, err := client.Listen("tcp", "127.0.0.1:0"); err == nil {
		l.Close()
		t.Fatal("remote port forwarding was allowed")
	}
	for _, target := range []string{hostL.Addr().String(), "/var/run/docker.sock"} {
		lport := freePort(t)
		fwd := fmt.Sprintf("127.0.0.1:%d:%s", lport, target)
		cmd := s.ssh(a, []string{"-N", "-L", fwd})
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var got []byte
		s.waitFor("ssh -L to listen", 30*time.Second, func() bool {
			c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", lport), time.Second)
			if err != nil {
				return false
			}
			defer c.Close()
			c.Write([]byte("GET /_ping HTTP/1.0\r\n\r\n"))
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			got, _ = io.ReadAll(c)
			return true
		})
		cmd.Process.Kill()
		cmd.Wait()
		if len(got) != 0 {
			t.Fatalf("ssh -L %s forwarded data: %q", fwd, got)
		}
	}
	r = s.runSSH(a, []string{"-N", "-o", "ExitOnForwardFailure=yes", "-R", "127.0.0.1:0:" + hostL.Addr().String()}, "")
	if r.Code == 0 {
		t.Fatalf("ssh -R was allowed: %s", r.Stderr)
	}
}

// TestProjects: the project comes from PODSPAWN_PROJECT (a trailing .pod
// stripped) and is validated (G23); max_per_user refuses a further session
// with a message saying how to free a slot, while re-attaching is allowed.
func TestProjects(t *testing.T) {
	s := newServer(t, serverOptions{Users: []string{"ssa"}, Options: harness.Options{Extra: "resources:\n  max_per_user: 1\n"}})
	u := s.user("ssa")
	for _, bad := range []string{"../x", "Bad", "x.y", "x;id"} {
		r := s.runSSH(u, []string{"-o", "SetEnv=PODSPAWN_PROJECT=" + bad}, "", "echo ran")
		if r.Code != 255 || strings.Contains(r.Stdout, "ran") || !strings.Contains(r.Stderr, "invalid project name") {
			t.Fatalf("project %q: exit %d stdout %q stderr %q; want refusal", bad, r.Code, r.Stdout, r.Stderr)
		}
	}
	if r := s.runSSH(u, []string{"-o", "SetEnv=PODSPAWN_PROJECT=nosuchproject"}, "", "echo ran"); r.Code != 255 || !strings.Contains(r.Stderr, "not registered") {
		t.Fatalf("unregistered project: exit %d stdout %q stderr %q; want refusal", r.Code, r.Stdout, r.Stderr)
	}
	if rows := s.list(); len(rows) != 0 {
		t.Fatalf("refused projects left sessions: %+v", rows)
	}

	// A registered project (a local repository whose Podfile builds on the
	// test image) is reachable as <project>.pod.
	project := fmt.Sprintf("ssweb%d", os.Getpid())
	repo := t.TempDir()
	if err := os.WriteFile(repo+"/podfile.yaml", []byte("base: "+harness.Image+"\nshell: /bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"init", "-q"}, {"add", "podfile.yaml"}, {"-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "podfile"}} {
		run(t, "git", append([]string{"-C", repo}, args...)...)
	}
	s.Env.MustRun("add-project", project, "--repo", repo)
	t.Cleanup(func() {
		// Cleanups run last-registered first, before the env removes its
		// containers: stop the session so its image is no longer in use.
		s.Env.Run("stop", u.Name+"@"+project)
		// By tag: the image id is shared with the base image's other tags.
		out, _ := exec.Command("docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", "podspawn/"+project).Output()
		for _, ref := range strings.Fields(string(out)) {
			exec.Command("docker", "image", "rm", ref).Run()
		}
	})
	r := s.runSSH(u, []string{"-o", "SetEnv=PODSPAWN_PROJECT=" + project + ".pod"}, "", "echo $PODSPAWN_PROJECT $(hostname)")
	if r.Code != 0 || r.Stdout != project+" "+project+"\n" {
		t.Fatalf("project %s: exit %d stdout %q stderr %q", project, r.Code, r.Stdout, r.Stderr)
	}
	if s.containerID(desired.ContainerName(desired.SessionKey{User: u.Name, Project: project})) == "" {
		t.Fatalf("no container for project %s", project)
	}

	// The default session would be a second one: refused, saying how to free a slot.
	r = s.runSSH(u, nil, "", "echo ran")
	want := fmt.Sprintf("user %[1]s already has 1 session(s) (max 1): %[1]s@%[2]s; to free a slot", u.Name, project)
	if r.Code != 255 || strings.Contains(r.Stdout, "ran") || !strings.Contains(r.Stderr, want) || !strings.Contains(r.Stderr, "podspawn stop "+u.Name+"@<project>") {
		t.Fatalf("second session: exit %d stderr %q; want the max_per_user refusal", r.Code, r.Stderr)
	}
	// Re-attaching to the existing session is always allowed.
	if out := s.runSSH(u, []string{"-o", "SetEnv=PODSPAWN_PROJECT=" + project}, "", "echo again"); out.Code != 0 || out.Stdout != "again\n" {
		t.Fatalf("re-attach at the limit: %+v", out)
	}
}

// TestAuthKeysAsSSHD runs auth-keys the way sshd does: as the unprivileged
// auth-keys account, which can read the 0600 key file in the 0700 key
// directory it owns.
func TestAuthKeysAsSSHD(t *testing.T) {
	s := newServer(t, serverOptions{Users: []string{"ssa"}})
	u := s.user("ssa")
	authKeys := func(config string, args ...string) (string, int) {
		cmd := exec.Command("runuser", append([]string{"-u", s.AuthUser, "--", s.Env.Bin, "--config", config, "auth-keys"}, args...)...)
		var out bytes.Buffer
		cmd.Stdout = &out
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return out.String(), code
	}
	blob := strings.Fields(u.PubLine)[1]
	want := fmt.Sprintf("command=\"/usr/bin/sudo -n %s --config %s spawn\",restrict,pty %s\n", s.Env.Bin, s.Env.ConfigPath, u.PubLine)
	for _, args := range [][]string{{u.Name}, {u.Name, "ssh-ed25519", blob}} {
		if out, code := authKeys(s.Env.ConfigPath, args...); code != 0 || out != want {
			t.Fatalf("auth-keys %v = %d %q, want 0 %q", args, code, out, want)
		}
	}
	for _, args := range [][]string{{"nosuchuser"}, {"../etc"}, {"../" + u.Name}, {u.Name, "ssh-rsa", blob}} {
		if out, code := authKeys(s.Env.ConfigPath, args...); code != 0 || out != "" {
			t.Fatalf("auth-keys %v = %d %q, want 0 and nothing", args, code, out)
		}
	}
	broken := s.Env.ConfigPath + ".broken"
	if err := os.WriteFile(broken, []byte("session:\n  mode: sometimes\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := authKeys(broken, u.Name); code != 1 || out != "" {
		t.Fatalf("auth-keys with a broken config = %d %q, want 1 and nothing", code, out)
	}
}

// TestSpawnRefusals: spawn refuses to run as a non-root user, and a user
// cannot open another user's session through sudo (the sudoers rule allows
// only the exact forced command; spawn's own SUDO_USER check is unit tested).
func TestSpawnRefusals(t *testing.T) {
	s := newServer(t, serverOptions{Users: []string{"ssa", "ssb"}})
	a, b := s.user("ssa"), s.user("ssb")
	out, err := exec.Command("runuser", "-u", a.Name, "--", s.Env.Bin, "--config", s.Env.ConfigPath, "spawn", "--user", a.Name).CombinedOutput()
	if code := exitCode(err); code != 255 || !strings.Contains(string(out), "must run as root") {
		t.Fatalf("spawn as %s: exit %d %q", a.Name, code, out)
	}
	cmd := exec.Command("runuser", "-u", a.Name, "--", "sudo", "-n", s.Env.Bin, "--config", s.Env.ConfigPath, "spawn", "--user", b.Name)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err = cmd.Output()
	if exitCode(err) == 0 {
		t.Fatalf("%s opened %s's session through sudo: %s", a.Name, b.Name, out)
	}
	// sudo itself must refuse (the sudoers rule allows only --user <self>),
	// not podspawn failing after it got root. With -n, sudo reports the rule
	// mismatch as a password it may not ask for.
	if !strings.Contains(stderr.String(), "sudo: a password is required") {
		t.Fatalf("sudo as %s for %s's session: exit %d, stderr %q; want sudo's refusal", a.Name, b.Name, exitCode(err), stderr.String())
	}
	if rows := s.list(); len(rows) != 0 {
		t.Fatalf("refused spawns left sessions: %+v", rows)
	}
}

func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

func keysOf[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func labelFilter(label string) filters.Args { return filters.NewArgs(filters.Arg("label", label)) }
