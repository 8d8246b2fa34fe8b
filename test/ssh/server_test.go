// Package ssh holds the end-to-end tests of podspawn behind a real sshd:
// the test starts its own sshd (own config, host key and pid file on a
// loopback port), creates host accounts, a group and a sudoers drop-in
// exactly as the SSH contract describes, and connects with the real ssh
// client and golang.org/x/crypto/ssh. Everything it creates carries this
// process's pid in its name and is removed at the end of each test.
package ssh

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/docker/docker/client"
	gossh "golang.org/x/crypto/ssh"

	"github.com/podspawn/podspawn/actions/hostsetup"
	"github.com/podspawn/podspawn/desired/sqlstore"
	"github.com/podspawn/podspawn/test/harness"
)

var serverSeq atomic.Int32

type testUser struct {
	Name    string
	KeyPath string
	Signer  gossh.Signer
	PubLine string
}

type server struct {
	t          testing.TB
	Env        *harness.Env
	Group      string
	AuthUser   string
	Sudoers    string
	Port       int
	Dir        string
	Users      map[string]*testUser
	Docker     *client.Client
	LogPath    string
	SSHDConfig string
	// Plain is the account outside podspawn (serverOptions.PlainUser).
	Plain    *testUser
	sshdLog  *lockedBuffer
	spawnEnv []string
}

type serverOptions struct {
	harness.Options
	// Users are name prefixes (ssa, ssb, ...); the real names get the pid.
	Users []string
	// SSH is extra lines of the ssh: config section, indented two spaces.
	SSH string
	// Log is extra lines of the log: config section, indented two spaces.
	Log string
	// PlainUser adds an account outside podspawn (its own authorized_keys
	// file, a real shell on the host) to measure sshd's own cost.
	PlainUser bool
	// SpawnEnv are NAME=value pairs in spawn's environment: sshd sets them
	// (SetEnv) and this server's sudoers drop-in keeps them.
	SpawnEnv []string
	// Kubernetes is extra lines of the kubernetes: section of k8sServer,
	// indented two spaces.
	Kubernetes string
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// newServer provisions a podspawn installation behind its own sshd with
// podspawn's own commands: 'server-setup' (group, auth-keys account,
// directories, sudoers drop-in, the sshd_config block) against this
// server's sshd_config and drop-in path, then 'add-user' per account.
// Group, accounts and drop-in carry the pid and a sequence number.
func newServer(t testing.TB, o serverOptions) *server {
	t.Helper()
	for _, tool := range []string{"/usr/sbin/sshd", "/usr/bin/ssh", "/usr/bin/sudo", "/usr/sbin/visudo", "/usr/sbin/useradd", "/usr/bin/git"} {
		if _, err := os.Stat(tool); err != nil {
			t.Fatalf("%s is missing: run hack/ci-setup.sh (it installs openssh-server, openssh-client, sudo and git)", tool)
		}
	}
	if os.Geteuid() != 0 {
		t.Fatal("the sshd end-to-end tests need root (accounts, sudoers, sshd)")
	}
	sweepStale(t)
	pid := os.Getpid()
	n := serverSeq.Add(1)
	suffix := fmt.Sprintf("%dn%d", pid, n)
	s := &server{t: t, Group: "sst" + suffix, AuthUser: "ssauth" + suffix, Users: map[string]*testUser{},
		Sudoers: fmt.Sprintf("/etc/sudoers.d/podspawn-sstest-%d-%d", pid, n), Docker: harness.Docker(t), sshdLog: &lockedBuffer{}}

	s.spawnEnv = o.SpawnEnv
	s.Dir = t.TempDir()
	s.LogPath = filepath.Join(s.Dir, "spawn.log")
	s.SSHDConfig = filepath.Join(s.Dir, "sshd_config")
	sftp := "  sftp_server: /bin/cat\n"
	o.Extra += fmt.Sprintf("ssh:\n  group: %s\n  auth_keys_user: %s\n  use_sudo: true\n  sshd_config: %s\n%s%slog:\n  file: %s\n%s",
		s.Group, s.AuthUser, s.SSHDConfig, sftp, o.SSH, s.LogPath, o.Log)
	s.Env = harness.NewEnv(t, o.Options)
	t.Cleanup(func() {
		if t.Failed() {
			log, _ := os.ReadFile(s.LogPath)
			t.Logf("sshd log:\n%s\nspawn log:\n%s", s.sshdLog.String(), log)
		}
	})
	// The auth-keys account must reach the config and the key directory.
	for d := filepath.Dir(s.Env.Root); d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}

	run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(s.Dir, "host_ed25519"))
	s.Port = freePort(t)
	if err := os.WriteFile(s.SSHDConfig, []byte(s.baseSSHDConfig()), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.Remove(s.Sudoers)
		removeAccount(t, s.AuthUser)
		exec.Command("groupdel", s.Group).Run()
	})
	s.Env.MustRun("server-setup", "--sudoers-file", s.Sudoers, "--no-reload")
	s.keepSpawnEnv()
	for _, prefix := range o.Users {
		s.addUser(prefix + suffix)
	}
	if o.PlainUser {
		s.addPlainUser("ssp" + suffix)
	}
	s.startSSHD()
	return s
}

func (s *server) addUser(name string) *testUser {
	t := s.t
	t.Cleanup(func() { removeAccount(t, name) })
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := gossh.MarshalPrivateKey(priv, name+"@test")
	if err != nil {
		t.Fatal(err)
	}
	u := &testUser{Name: name, KeyPath: filepath.Join(s.Dir, name+".key")}
	if err := os.WriteFile(u.KeyPath, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	if u.Signer, err = gossh.NewSignerFromKey(priv); err != nil {
		t.Fatal(err)
	}
	u.PubLine = strings.TrimSpace(string(gossh.MarshalAuthorizedKey(u.Signer.PublicKey()))) + " " + name + "@test"
	s.Env.MustRun("add-user", name, "--key", u.PubLine)
	s.Users[name] = u
	return u
}

// addPlainUser creates an account that sshd serves itself: a key in an
// authorized_keys file of its own (a Match User block after podspawn's),
// a host shell, no podspawn. Only the benchmark uses it.
func (s *server) addPlainUser(name string) {
	t := s.t
	t.Cleanup(func() { removeAccount(t, name) })
	run(t, "useradd", "--no-create-home", "--home-dir", "/", "--shell", "/bin/sh", name)
	run(t, "usermod", "-p", "*", name)
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := gossh.MarshalPrivateKey(priv, name+"@test")
	if err != nil {
		t.Fatal(err)
	}
	u := &testUser{Name: name, KeyPath: filepath.Join(s.Dir, name+".key")}
	if err := os.WriteFile(u.KeyPath, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	if u.Signer, err = gossh.NewSignerFromKey(priv); err != nil {
		t.Fatal(err)
	}
	u.PubLine = strings.TrimSpace(string(gossh.MarshalAuthorizedKey(u.Signer.PublicKey())))
	keys := filepath.Join(s.Env.Root, "plain_authorized_keys")
	if err := os.WriteFile(keys, []byte(u.PubLine+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(s.SSHDConfig)
	if err != nil {
		t.Fatal(err)
	}
	// The key file lives under the test's temporary directory, below the
	// world-writable /tmp, which StrictModes would refuse.
	data = bytes.Replace(data, []byte("AllowGroups "+s.Group+"\n"), []byte("AllowGroups "+s.Group+" "+name+"\nStrictModes no\n"), 1)
	data = append(data, fmt.Sprintf("Match User %s\n    AuthorizedKeysFile %s\n", name, keys)...)
	if err := os.WriteFile(s.SSHDConfig, data, 0o600); err != nil {
		t.Fatal(err)
	}
	s.Plain = u
}

// testPubKey returns a fresh public key line.
func testPubKey(t testing.TB) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := gossh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(gossh.MarshalAuthorizedKey(sshPub)))
}

// user returns the account made from prefix.
func (s *server) user(prefix string) *testUser {
	for name, u := range s.Users {
		if strings.HasPrefix(name, prefix) && strings.TrimPrefix(name, prefix)[0] >= '0' && strings.TrimPrefix(name, prefix)[0] <= '9' {
			return u
		}
	}
	s.t.Fatalf("no test user with prefix %s", prefix)
	return nil
}

// baseSSHDConfig is this server's sshd_config before server-setup appends
// the podspawn block.
func (s *server) baseSSHDConfig() string {
	return fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s/host_ed25519
PidFile %s/sshd.pid
UsePAM no
PermitRootLogin no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile none
PrintMotd no
PrintLastLog no
MaxStartups 100:30:200
AllowGroups %s
LogLevel VERBOSE
Subsystem sftp /usr/lib/openssh/sftp-server
%s`, s.Port, s.Dir, s.Dir, s.Group, s.setEnvLine())
}

func (s *server) setEnvLine() string {
	if len(s.spawnEnv) == 0 {
		return ""
	}
	return "SetEnv " + strings.Join(s.spawnEnv, " ") + "\n"
}

// keepSpawnEnv lets spawn's sudo rule keep the names of serverOptions.SpawnEnv
// (only this server's rule: the line is in its own drop-in).
func (s *server) keepSpawnEnv() {
	if len(s.spawnEnv) == 0 {
		return
	}
	var names []string
	for _, kv := range s.spawnEnv {
		names = append(names, strings.SplitN(kv, "=", 2)[0])
	}
	f, err := os.OpenFile(s.Sudoers, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		s.t.Fatal(err)
	}
	defer f.Close()
	if _, err := fmt.Fprintf(f, "Defaults!%s env_keep += \"%s\"\n", hostsetup.SudoersAlias(s.Group), strings.Join(names, " ")); err != nil {
		s.t.Fatal(err)
	}
	run(s.t, "/usr/sbin/visudo", "-c", "-f", s.Sudoers)
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

var portLine = regexp.MustCompile(`(?m)^Port [0-9]+$`)

func (s *server) startSSHD() {
	t := s.t
	os.MkdirAll("/run/sshd", 0o755)
	// The port was free when picked but may be taken before sshd binds it;
	// sshd then exits and another port is tried.
	for attempt := 0; attempt < 5; attempt++ {
		if attempt > 0 {
			s.Port = freePort(t)
			data, err := os.ReadFile(s.SSHDConfig)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(s.SSHDConfig, portLine.ReplaceAll(data, []byte(fmt.Sprintf("Port %d", s.Port))), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		run(t, "/usr/sbin/sshd", "-t", "-f", s.SSHDConfig)
		cmd := exec.Command("/usr/sbin/sshd", "-D", "-e", "-f", s.SSHDConfig)
		cmd.Stdout, cmd.Stderr = s.sshdLog, s.sshdLog
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		addr := fmt.Sprintf("127.0.0.1:%d", s.Port)
		up := waitUntil(10*time.Second, func() bool {
			select {
			case <-exited:
				return true
			default:
			}
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
				return true
			}
			return false
		})
		select {
		case <-exited:
			continue
		default:
		}
		if !up {
			cmd.Process.Kill()
			t.Fatalf("sshd did not listen on %s:\n%s", addr, s.sshdLog.String())
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			<-exited
		})
		return
	}
	t.Fatalf("sshd did not start:\n%s", s.sshdLog.String())
}

// Names this package creates: sst<pid>n<seq> (group), ss<letters><pid>n<seq>
// (accounts, each with a group of its name) and the sudoers drop-in.
var (
	staleName    = regexp.MustCompile(`^ss[a-z]*([0-9]+)n[0-9]+$`)
	staleSudoers = regexp.MustCompile(`^podspawn-sstest-([0-9]+)-[0-9]+$`)
)

// sweepStale removes accounts, groups and sudoers drop-ins left by test
// processes of this package that no longer run (a crashed or killed run).
func sweepStale(t testing.TB) {
	dead := func(re *regexp.Regexp, name string) bool {
		m := re.FindStringSubmatch(name)
		if m == nil {
			return false
		}
		_, err := os.Stat("/proc/" + m[1])
		return err != nil
	}
	for _, file := range []string{"/etc/passwd", "/etc/group"} {
		data, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			name := strings.Split(line, ":")[0]
			if !dead(staleName, name) {
				continue
			}
			if file == "/etc/passwd" {
				exec.Command("userdel", name).Run()
			} else {
				exec.Command("groupdel", name).Run()
			}
		}
	}
	files, _ := filepath.Glob("/etc/sudoers.d/podspawn-sstest-*")
	for _, f := range files {
		if dead(staleSudoers, filepath.Base(f)) {
			os.Remove(f)
		}
	}
}

// removeAccount deletes a test account and its group. userdel refuses
// while a process of the account runs, and after a test kills an ssh
// client its sshd child or spawn's agent-dial may still be on the way out:
// they get a few seconds to end, then, being this test's, are killed.
func removeAccount(t testing.TB, name string) {
	t.Helper()
	var failure string
	busy := func() bool {
		out, err := exec.Command("userdel", name).CombinedOutput()
		failure = ""
		var exit *exec.ExitError
		switch {
		case err == nil, errors.As(err, &exit) && exit.ExitCode() == 6: // 6: no such user
			return false
		case errors.As(err, &exit) && exit.ExitCode() == 8: // 8: in use
			failure = string(out)
			return true
		}
		failure = fmt.Sprintf("%v %s", err, out)
		return false
	}
	if !waitUntil(5*time.Second, func() bool { return !busy() }) {
		exec.Command("pkill", "-KILL", "-U", name).Run()
		waitUntil(5*time.Second, func() bool { return !busy() })
	}
	if failure != "" {
		t.Errorf("userdel %s left the account behind: %s", name, failure)
	}
	exec.Command("groupdel", name).Run() // userdel removes it unless USERGROUPS_ENAB is off
}

// waitUntil polls cond until it holds or the deadline passes.
func waitUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	delay := 5 * time.Millisecond
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(delay)
		if delay < 200*time.Millisecond {
			delay *= 2
		}
	}
}

// cleanup runs podspawn cleanup through a scope proxy: on the shared Docker
// daemon an unscoped pass would also reap other tests' managed-by=podspawn
// objects that carry no instance label. t is the (sub)test calling it.
func (s *server) cleanup(t testing.TB) harness.Result {
	t.Helper()
	proxy := harness.NewScopeProxy(t)
	proxy.AddInstance(s.Env.InstanceID())
	r := s.Env.RunEnv([]string{"DOCKER_HOST=" + proxy.Host()}, "", "cleanup")
	if r.Code != 0 {
		t.Fatalf("podspawn cleanup: exit %d\nstdout:\n%s\nstderr:\n%s", r.Code, r.Stdout, r.Stderr)
	}
	return r
}

func (s *server) waitFor(what string, timeout time.Duration, cond func() bool) {
	s.t.Helper()
	if !waitUntil(timeout, cond) {
		s.t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
}

// sshArgs are the ssh client options for u; extra go before the host.
func (s *server) sshArgs(u *testUser, extra ...string) []string {
	args := []string{"-F", "/dev/null", "-i", u.KeyPath, "-p", strconv.Itoa(s.Port),
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes",
		"-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=20"}
	args = append(args, extra...)
	return append(args, u.Name+"@127.0.0.1")
}

// ssh returns an ssh client command running remote (empty: a shell).
func (s *server) ssh(u *testUser, opts []string, remote ...string) *exec.Cmd {
	return exec.Command("ssh", append(s.sshArgs(u, opts...), remote...)...)
}

type sshResult struct {
	Stdout, Stderr string
	Code           int
}

// runSSH runs remote over ssh with stdin and returns the outcome.
func (s *server) runSSH(u *testUser, opts []string, stdin string, remote ...string) sshResult {
	s.t.Helper()
	cmd := s.ssh(u, opts, remote...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		s.t.Fatalf("ssh: %v", err)
	}
	return sshResult{Stdout: out.String(), Stderr: errb.String(), Code: code}
}

func (s *server) mustSSH(u *testUser, remote string) string {
	s.t.Helper()
	r := s.runSSH(u, nil, "", remote)
	if r.Code != 0 {
		s.t.Fatalf("ssh %s %q: exit %d\nstdout:\n%s\nstderr:\n%s", u.Name, remote, r.Code, r.Stdout, r.Stderr)
	}
	return r.Stdout
}

// dial opens an x/crypto/ssh client connection as u.
func (s *server) dial(u *testUser) *gossh.Client {
	s.t.Helper()
	c, err := gossh.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", s.Port), &gossh.ClientConfig{
		User: u.Name, Auth: []gossh.AuthMethod{gossh.PublicKeys(u.Signer)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey(), Timeout: 20 * time.Second,
	})
	if err != nil {
		s.t.Fatalf("ssh dial as %s: %v\nsshd log:\n%s", u.Name, err, s.sshdLog.String())
	}
	s.t.Cleanup(func() { c.Close() })
	return c
}

// listRow is one row of 'podspawn list -o json'.
type listRow struct {
	User        string `json:"user"`
	Project     string `json:"project"`
	Container   string `json:"container"`
	Status      string `json:"status"`
	Mode        string `json:"mode"`
	Connections int    `json:"connections"`
}

func (s *server) list() []listRow {
	s.t.Helper()
	r := s.Env.MustRun("list", "-o", "json")
	var rows []listRow
	if err := json.Unmarshal([]byte(r.Stdout), &rows); err != nil {
		s.t.Fatalf("podspawn list -o json: %v\n%s", err, r.Stdout)
	}
	return rows
}

// session returns the list row of user (and project), or nil.
func (s *server) session(u *testUser, project string) *listRow {
	s.t.Helper()
	for _, r := range s.list() {
		if r.User == u.Name && r.Project == project {
			r := r
			return &r
		}
	}
	return nil
}

// containerID returns the id of the running or stopped container name, or "".
func (s *server) containerID(name string) string {
	s.t.Helper()
	info, err := s.Docker.ContainerInspect(context.Background(), name)
	if errdefs.IsNotFound(err) {
		return ""
	}
	if err != nil {
		s.t.Fatal(err)
	}
	return info.ID
}

// exec runs SQL on the state database, standing in for the passage of time
// (moving a deadline into the past) so that no test sleeps.
func (s *server) exec(query string, args ...any) {
	s.t.Helper()
	st, err := sqlstore.Open(context.Background(), s.Env.DBPath)
	if err != nil {
		s.t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.DB().Exec(query, args...); err != nil {
		s.t.Fatalf("%s: %v", query, err)
	}
}

// leases returns the lease rows (pid) of user's session.
func (s *server) leasePIDs(u *testUser, project string) []int {
	s.t.Helper()
	st, err := sqlstore.Open(context.Background(), s.Env.DBPath)
	if err != nil {
		s.t.Fatal(err)
	}
	defer st.Close()
	var pids []int
	if err := st.DB().Select(&pids, `SELECT l.pid FROM leases l JOIN sessions s ON s.id = l.session_id WHERE s.user = ? AND s.project = ? ORDER BY l.id`,
		u.Name, project); err != nil {
		s.t.Fatal(err)
	}
	return pids
}

// readUntil reads r until the accumulated output contains want.
func readUntil(r *bufio.Reader, want string, timeout time.Duration) (string, error) {
	var buf bytes.Buffer
	done := make(chan error, 1)
	go func() {
		b := make([]byte, 1)
		for {
			if _, err := r.Read(b); err != nil {
				done <- err
				return
			}
			buf.WriteByte(b[0])
			if strings.Contains(buf.String(), want) {
				done <- nil
				return
			}
		}
	}()
	select {
	case err := <-done:
		return buf.String(), err
	case <-time.After(timeout):
		return "", fmt.Errorf("timed out waiting for %q", want)
	}
}
