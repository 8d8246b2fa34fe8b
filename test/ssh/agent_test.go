package ssh

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/podspawn/podspawn/desired"
)

// TestAgentForwarding: with ssh.allow_agent_forwarding, 'ssh -A' puts the
// client's agent in the session container (ssh-add -l there lists its
// key) through a socket of the connection's own, owned by the container
// user; another user's container cannot reach it; it is gone once the
// connection ends. A connection without -A gets no SSH_AUTH_SOCK.
func TestAgentForwarding(t *testing.T) {
	s := newServer(t, serverOptions{Users: []string{"ssa", "ssb"}, SSH: "  allow_agent_forwarding: true\n"})
	a, b := s.user("ssa"), s.user("ssb")
	agentSock := startAgent(t, s.Dir, a.KeyPath)
	want := strings.Fields(run(t, "env", "SSH_AUTH_SOCK="+agentSock, "ssh-add", "-l"))[1] // the fingerprint

	// The first logins create both sessions; ssh-add (with its libraries)
	// is copied in, since the busybox test image has none.
	if out := s.mustSSH(a, `echo "[$SSH_AUTH_SOCK]"`); out != "[]\n" {
		t.Fatalf("without -A: SSH_AUTH_SOCK = %q, want unset", out)
	}
	s.mustSSH(b, "true")
	for _, u := range []*testUser{a, b} {
		copyBinary(t, s, desired.ContainerName(desired.SessionKey{User: u.Name}), "/usr/bin/ssh-add")
	}

	// A connection with -A that stays open while the socket is inspected.
	cmd, stdin, out, errb := s.sshHeldOpen(a, agentSock, `echo "sock=$SSH_AUTH_SOCK"; ssh-add -l; echo "rc=$?"; ls -lnd "$(dirname "$SSH_AUTH_SOCK")" "$SSH_AUTH_SOCK"; id -u; cat`)
	defer cmd.Process.Kill()
	s.waitFor("the forwarded agent's listing", 60*time.Second, func() bool { return strings.Contains(out.String(), "rc=") })
	s.waitFor("the socket listing", 20*time.Second, func() bool { return regexp.MustCompile(`(?m)^[0-9]+\n`).MatchString(out.String()) })
	got := out.String()
	if !strings.Contains(got, want) || !strings.Contains(got, "rc=0") {
		t.Fatalf("ssh-add -l in the container does not list %s:\n%s\nstderr:\n%s", want, got, errb.String())
	}
	sock := regexp.MustCompile(`sock=(\S+)`).FindStringSubmatch(got)[1]
	uid := strings.TrimSpace(regexp.MustCompile(`(?m)^([0-9]+)$`).FindString(got))
	for _, re := range []string{`(?m)^drwx------ +[0-9]+ ` + uid + ` +[0-9]+ .* ` + regexp.QuoteMeta(filepath.Dir(sock)) + `$`,
		`(?m)^srw------- +[0-9]+ ` + uid + ` .* ` + regexp.QuoteMeta(sock) + `$`} {
		if !regexp.MustCompile(re).MatchString(got) {
			t.Fatalf("socket or directory not owned by uid %s with mode 0700/0600:\n%s", uid, got)
		}
	}
	hostDir := agentHostDir(t, s, a, sock)
	if _, err := os.Stat(filepath.Join(hostDir, "agent.sock")); err != nil {
		t.Fatalf("relay socket on the host: %v", err)
	}

	// A second connection of the same session gets a socket of its own.
	second := s.ssh(a, []string{"-A"}, `echo "sock=$SSH_AUTH_SOCK"; ssh-add -l >/dev/null; echo "rc=$?"`)
	second.Env = append(os.Environ(), "SSH_AUTH_SOCK="+agentSock)
	out2, err := second.CombinedOutput()
	if err != nil || !strings.Contains(string(out2), "rc=0") || strings.Contains(string(out2), "sock="+sock+"\n") {
		t.Fatalf("second connection (first uses %s): %v\n%s", sock, err, out2)
	}

	// The other user's container has no such path and no mount of it;
	// its own agent directory is a different one.
	r := s.runSSH(b, nil, "", fmt.Sprintf(`SSH_AUTH_SOCK=%s ssh-add -l; echo "rc=$?"`, sock))
	if !strings.Contains(r.Stdout, "rc=2") || strings.Contains(r.Stdout, want) {
		t.Fatalf("user %s reached %s's agent socket:\n%s\n%s", b.Name, a.Name, r.Stdout, r.Stderr)
	}
	info, err := s.Docker.ContainerInspect(context.Background(), desired.ContainerName(desired.SessionKey{User: b.Name}))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range info.Mounts {
		if strings.HasPrefix(hostDir, m.Source+"/") {
			t.Fatalf("%s's container mounts %s, which holds %s's socket", b.Name, m.Source, a.Name)
		}
	}

	// Disconnect: the socket and its directory go.
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("ssh -A: %v\n%s", err, errb.String())
	}
	s.waitFor("the relay socket to be removed", 20*time.Second, func() bool {
		_, err := os.Lstat(hostDir)
		return os.IsNotExist(err)
	})
	// (The container user may traverse the mount, 0711, but not list it.)
	if out := s.mustSSH(a, fmt.Sprintf(`if [ -e %[1]s ]; then echo present; else echo gone; fi`, filepath.Dir(sock))); out != "gone\n" {
		t.Fatalf("agent directory %s in the container after disconnect: %q", filepath.Dir(sock), out)
	}
}

// agentHostDir is the host directory behind sock in u's container.
func agentHostDir(t *testing.T, s *server, u *testUser, sock string) string {
	t.Helper()
	info, err := s.Docker.ContainerInspect(context.Background(), desired.ContainerName(desired.SessionKey{User: u.Name}))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range info.Mounts {
		if m.Destination == desired.AgentMountTarget {
			return filepath.Join(m.Source, strings.TrimPrefix(filepath.Dir(sock), desired.AgentMountTarget+"/"))
		}
	}
	t.Fatalf("%s's container has no mount at %s", u.Name, desired.AgentMountTarget)
	return ""
}

// startAgent runs an ssh-agent on a socket in dir holding key.
func startAgent(t testing.TB, dir, key string) string {
	t.Helper()
	sock := filepath.Join(dir, "agent.sock")
	agent := exec.Command("ssh-agent", "-D", "-a", sock)
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { agent.Process.Kill(); agent.Wait() })
	if !waitUntil(10*time.Second, func() bool { _, err := os.Stat(sock); return err == nil }) {
		t.Fatal("ssh-agent did not create its socket")
	}
	run(t, "env", "SSH_AUTH_SOCK="+sock, "ssh-add", "-q", key)
	return sock
}

// copyBinary copies a dynamically linked host binary and the libraries
// ldd lists for it into a running container.
func copyBinary(t *testing.T, s *server, ctr, bin string) {
	t.Helper()
	files := []string{bin}
	for _, f := range strings.Fields(run(t, "ldd", bin)) {
		if strings.HasPrefix(f, "/") {
			files = append(files, f)
		}
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(f, "/"), Mode: 0o755, Size: int64(len(data))}); err != nil {
			t.Fatal(err)
		}
		tw.Write(data)
	}
	tw.Close()
	if err := s.Docker.CopyToContainer(context.Background(), ctr, "/", io.Reader(&buf), container.CopyToContainerOptions{}); err != nil {
		t.Fatalf("copying %s into %s: %v", bin, ctr, err)
	}
}

// sshHeldOpen starts "ssh -A" as u with the agent at agentSock, running
// script, its stdin held open (the script ends in cat) so the connection
// and its forwarded agent stay up until the caller closes stdin.
func (s *server) sshHeldOpen(u *testUser, agentSock, script string) (*exec.Cmd, io.WriteCloser, *lockedBuffer, *lockedBuffer) {
	s.t.Helper()
	cmd := s.ssh(u, []string{"-A"}, script)
	cmd.Env = append(os.Environ(), "SSH_AUTH_SOCK="+agentSock)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		s.t.Fatal(err)
	}
	out, errb := &lockedBuffer{}, &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, errb
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	return cmd, stdin, out, errb
}
