package setup

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	gossh "golang.org/x/crypto/ssh"
)

// These tests put server-setup's block in front of a real sshd (its own
// config, host key, loopback port; the machine's sshd is not involved)
// and connect with golang.org/x/crypto/ssh. No command is run, so they
// need auth-keys but not spawn or Docker: they prove the privilege chain
// (account unlocked, Match block, auth-keys as the auth-keys account
// reading the root-owned 0640 key file through its group) and what
// forwarding the block allows.

type sshdServer struct {
	addr string
	log  string
}

// startSSHD writes a minimal sshd_config on a free loopback port, runs
// server-setup on it and starts sshd in the foreground (killed at the end).
func (h *host) startSSHD() *sshdServer {
	t := h.t
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	hostKey := filepath.Join(h.root, "ssh_host_ed25519_key")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostKey).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v %s", err, out)
	}
	// UsePAM no makes sshd itself refuse accounts locked with "!".
	cfg := fmt.Sprintf("Port %d\nListenAddress 127.0.0.1\nHostKey %s\nPidFile %s\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nLogLevel DEBUG1\n",
		port, hostKey, filepath.Join(h.root, "sshd.pid"))
	if err := os.WriteFile(h.sshdConfig, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	h.mustRun(h.setupArgs()...)
	s := &sshdServer{addr: fmt.Sprintf("127.0.0.1:%d", port), log: filepath.Join(h.root, "sshd.log")}
	cmd := exec.Command("/usr/sbin/sshd", "-D", "-f", h.sshdConfig, "-E", s.log)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			log, _ := os.ReadFile(s.log)
			t.Logf("sshd log:\n%s", log)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", s.addr)
		if err == nil {
			c.Close()
			return s
		}
		select {
		case werr := <-exited:
			exited <- werr
			log, _ := os.ReadFile(s.log)
			t.Fatalf("sshd exited (%v) before listening on %s (port taken meanwhile?):\n%s", werr, s.addr, log)
		default:
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(s.log)
			t.Fatalf("sshd did not listen on %s: %v\n%s", s.addr, err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// newSigner returns a key pair and the public key line.
func newSigner(t *testing.T, comment string) (gossh.Signer, string) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := gossh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s, strings.TrimSpace(string(gossh.MarshalAuthorizedKey(s.PublicKey()))) + " " + comment
}

func (s *sshdServer) dial(user string, signer gossh.Signer) (*gossh.Client, error) {
	return gossh.Dial("tcp", s.addr, &gossh.ClientConfig{
		User: user, Auth: []gossh.AuthMethod{gossh.PublicKeys(signer)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey(), Timeout: 10 * time.Second,
	})
}

func TestSSHDAcceptsAddedUsersOnlyWhenUnlocked(t *testing.T) {
	h := newHost(t, "")
	srv := h.startSSHD()
	signer, pub := newSigner(t, "k")

	// An account locked with "!" whose keys were added with --no-account:
	// sshd refuses it although auth-keys offers the key.
	locked := h.user("locked")
	if out, err := exec.Command("useradd", "--no-create-home", "--shell", "/bin/sh", "--groups", h.group, locked).CombinedOutput(); err != nil {
		t.Fatalf("useradd: %v %s", err, out)
	}
	h.mustRun("add-user", locked, "--no-account", "--key", pub)
	if c, err := srv.dial(locked, signer); err == nil {
		c.Close()
		t.Fatalf("sshd let a locked account in")
	}
	// add-user adopts and unlocks it: now the key works.
	h.mustRun("add-user", locked, "--key", pub)
	c, err := srv.dial(locked, signer)
	if err != nil {
		t.Fatalf("an unlocked podspawn user cannot log in: %v", err)
	}
	c.Close()

	// A key that is not in the user's file is refused.
	other, _ := newSigner(t, "other")
	if c, err := srv.dial(locked, other); err == nil {
		c.Close()
		t.Errorf("sshd accepted a key that was never added")
	}
}

func TestForwarding(t *testing.T) {
	// A loopback service on the host that a forward must not reach.
	svc, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	go func() {
		for {
			c, err := svc.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "host-secret\n")
			c.Close()
		}
	}()
	// A unix socket standing in for /var/run/docker.sock.
	// Reachable by the user, so only sshd's policy can stop the forward.
	sockDir, err := os.MkdirTemp("", "podspawn-setup-sock-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(sockDir)
	os.Chmod(sockDir, 0o755)
	sock := filepath.Join(sockDir, "docker.sock")
	us, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer us.Close()
	os.Chmod(sock, 0o666)

	cases := map[string]struct {
		tcpAllowed bool
	}{
		"default: no forwarding":     {tcpAllowed: false},
		"allow_tcp_forwarding: true": {tcpAllowed: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			h := newHost(t, "")
			if tc.tcpAllowed {
				f, _ := os.OpenFile(h.config, os.O_APPEND|os.O_WRONLY, 0)
				io.WriteString(f, "  allow_tcp_forwarding: true\n")
				f.Close()
			}
			srv := h.startSSHD()
			signer, pub := newSigner(t, "k")
			user := h.user("fwd")
			h.mustRun("add-user", user, "--key", pub)
			c, err := srv.dial(user, signer)
			if err != nil {
				t.Fatalf("login: %v", err)
			}
			defer c.Close()

			conn, err := c.Dial("tcp", svc.Addr().String())
			if tc.tcpAllowed {
				if err != nil {
					t.Fatalf("TCP forwarding is enabled but the forward failed: %v", err)
				}
				got, _ := io.ReadAll(conn)
				conn.Close()
				if string(got) != "host-secret\n" {
					t.Errorf("forwarded connection read %q", got)
				}
			} else {
				if err == nil {
					conn.Close()
					t.Fatalf("a TCP forward to the host's loopback (%s) was allowed", svc.Addr())
				}
				if !strings.Contains(err.Error(), "administratively prohibited") {
					t.Errorf("TCP forward refused with %v, want 'administratively prohibited'", err)
				}
			}
			// Unix sockets (the Docker socket) are never reachable.
			if conn, err := c.Dial("unix", sock); err == nil {
				conn.Close()
				t.Errorf("a unix-socket forward to %s was allowed", sock)
			} else if log, _ := os.ReadFile(srv.log); !strings.Contains(string(log), "refused streamlocal port forward") {
				// sshd answers "open failed" whatever the cause; its log says
				// whether the policy refused the forward.
				t.Errorf("unix-socket forward failed with %v, but sshd did not log a refusal", err)
			}
			// Remote forwards (listening on the host) are never allowed.
			if l, err := c.Listen("tcp", "127.0.0.1:0"); err == nil {
				l.Close()
				t.Errorf("a remote forward (a listener on the host) was allowed")
			}
		})
	}
}

// TestServerSetupMigratesTheKeyDirectory takes a key directory of the
// older model (the auth-keys account owned it 0700 and the files 0600,
// and could plant links for root) to root with the account's group,
// leaves a planted link alone, and sshd still lets the user in.
func TestServerSetupMigratesTheKeyDirectory(t *testing.T) {
	h := setUp(t)
	alice := h.user("alice")
	signer, pub := newSigner(t, "alice")
	h.mustRun("add-user", alice, "--key", pub)
	keyFile := filepath.Join(h.keyDir, alice)
	secret := filepath.Join(h.root, "secret")
	if err := os.WriteFile(secret, []byte("root's secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	before := h.snapshotOf(secret)
	uid, gid := uidOf(t, h.authUser), gidOf(t, h.authUser)
	for p, mode := range map[string]os.FileMode{h.keyDir: 0o700, keyFile: 0o600} {
		if err := os.Chown(p, uid, gid); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	link := filepath.Join(h.keyDir, h.user("zqc"))
	if out, err := exec.Command("setpriv", "--reuid", h.authUser, "--regid", h.authUser, "--clear-groups", "ln", "-s", secret, link).CombinedOutput(); err != nil {
		t.Fatalf("planting the link as %s: %v %s", h.authUser, err, out)
	}

	r := h.mustRun(h.setupArgs()...)
	for _, want := range []string{
		fmt.Sprintf("directory %s: fixed owner %d:%d -> root:%s, mode 0700 -> 0750\n", h.keyDir, uid, gid, h.authUser),
		fmt.Sprintf("key files in %s (2): fixed owner and mode of 1 file(s): [%s]\n", h.keyDir, alice),
		fmt.Sprintf("  note: key file %s is a symbolic link; podspawn never follows or changes such an entry as root: inspect it, remove it (rm %s) and run again; it was left as it is\n", link, link),
	} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("server-setup output lacks %q:\n%s", want, r.Stdout)
		}
	}
	if d := cmp.Diff(before, h.snapshotOf(secret)); d != "" {
		t.Errorf("server-setup changed the link's target (-before +after):\n%s", d)
	}
	for p, want := range map[string]string{h.keyDir: "drwxr-x--- root:" + h.authUser, keyFile: "-rw-r----- root:" + h.authUser} {
		if got := ownerMode(t, p); got != want {
			t.Errorf("%s: %s, want %s", p, got, want)
		}
	}

	// Again: nothing to do (the link is still reported).
	snap := h.snapshot()
	r = h.mustRun(h.setupArgs()...)
	for _, want := range []string{"directory " + h.keyDir + ": ok\n", "key files in " + h.keyDir + " (2): ok\n"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("second run lacks %q:\n%s", want, r.Stdout)
		}
	}
	if d := cmp.Diff(snap, h.snapshot()); d != "" {
		t.Errorf("second run changed something (-before +after):\n%s", d)
	}

	// auth-keys, as the auth-keys account, reads the migrated file.
	srv := h.startSSHD()
	c, err := srv.dial(alice, signer)
	if err != nil {
		t.Fatalf("%s cannot log in after the migration: %v", alice, err)
	}
	c.Close()
}
