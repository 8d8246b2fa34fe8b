package doctor

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/system"
	"github.com/docker/docker/client"
	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/desired/config"
	"github.com/podspawn/podspawn/desired/lock"
	"github.com/podspawn/podspawn/desired/sqlstore"
	"github.com/podspawn/podspawn/reconcile"
	"github.com/podspawn/podspawn/test/doctor/fakedocker"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

const (
	testImage   = "podspawn-test:busybox"
	testImageID = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	gib         = 1 << 30
)

// fixture is a healthy podspawn installation in a temporary root: every
// check passes until a test case breaks one thing.
type fixture struct {
	t       *testing.T
	root    string
	binDir  string
	sock    string
	env     Env
	statfsd []string // paths Statfs was asked about
	daemon  *lock.Daemon
}

const fakeSSHD = `#!/bin/sh
case "$1" in
-V)
	echo "OpenSSH_9.2p1 Debian-2+deb12u3, OpenSSL 3.0.15 3 Sep 2024" >&2
	exit 0 ;;
-t)
	cfg="$3"
	if [ ! -r "$cfg" ]; then echo "$cfg: No such file or directory" >&2; exit 255; fi
	if grep -q BADKEYWORD "$cfg"; then
		echo "$cfg: line 9: Bad configuration option: BADKEYWORD" >&2
		echo "$cfg: terminating, 1 bad configuration options" >&2
		exit 255
	fi
	exit 0 ;;
esac
exit 1
`

const fakeSSH = `#!/bin/sh
echo "OpenSSH_9.2p1 Debian-2+deb12u3, OpenSSL 3.0.15 3 Sep 2024" >&2
`

func newFixture(t *testing.T) *fixture {
	t.Helper()
	root := t.TempDir()
	f := &fixture{t: t, root: root, binDir: filepath.Join(root, "bin")}
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{"etc", 0o755}, {"etc/keys", 0o750}, {"state", 0o700}, {"state/locks", 0o700}, {"bin", 0o755}} {
		p := filepath.Join(root, d.path)
		if err := os.MkdirAll(p, d.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, d.mode); err != nil {
			t.Fatal(err)
		}
	}
	f.script("sshd", fakeSSHD)
	f.script("ssh", fakeSSH)
	f.write("etc/keys/alice", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGSRt6j1Ap1Y1o9Nwv3M3aJNEj9LzJKeyKxQmv8MfJ4F alice\n")
	if err := os.Chmod(f.path("etc/keys/alice"), 0o640); err != nil {
		t.Fatal(err)
	}
	f.write("etc/sshd_config", fmt.Sprintf("# test sshd_config\nPort 22\n\nAuthorizedKeysCommand /usr/local/bin/podspawn --config %s/etc/config.yaml auth-keys %%u %%t %%k\nAuthorizedKeysCommandUser root\n", root))
	f.write("etc/config.yaml", strings.ReplaceAll(`auth:
  key_dir: ROOT/etc/keys
defaults:
  image: podspawn-test:busybox
  shell: /bin/sh
state:
  db_path: ROOT/state/state.db
  lock_dir: ROOT/state/locks
  homes_dir: ROOT/state/homes
  projects_dir: ROOT/state/projects
ssh:
  sshd_config: ROOT/etc/sshd_config
  auth_keys_user: root
projects_file: ROOT/etc/projects.yaml
`, "ROOT", root))
	st, err := sqlstore.Open(context.Background(), filepath.Join(root, "state", "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	f.holdDaemonLock()

	f.sock = fakedocker.Start(t, healthyDocker(fixturePools, fixtureNets))
	if err := os.Chmod(f.sock, 0o660); err != nil {
		t.Fatal(err)
	}
	f.env = Env{
		DockerHost: "unix://" + f.sock,
		Path:       f.binDir,
		Binary:     "/usr/local/bin/podspawn",
		Euid:       0,
		Statfs: func(p string) (uint64, error) {
			f.statfsd = append(f.statfsd, p)
			return 20 * gib, nil
		},
		LookupAccount: func(name string) (int, int, error) {
			if name == "root" {
				return 0, 0, nil
			}
			return 0, 0, fmt.Errorf("user: unknown user %s", name)
		},
		Timeout: 2 * time.Second,
		GuardPlan: func(context.Context) (GuardView, error) {
			return GuardView{Sessions: 1, Users: 1}, nil
		},
		HostFirewall: installedRules(),
	}
	f.loadConfig()
	f.useDocker("unix://" + f.sock)
	return f
}

// The fixture's Docker has room for 255 more session networks: daemon.json
// sets one /16 pool of /24s, and the default bridge took the first.
var (
	fixturePools = []system.NetworkAddressPool{{Base: "10.200.0.0/16", Size: 24}}
	fixtureNets  = []fakedocker.Network{{Name: "bridge", Subnets: []string{"10.200.0.0/24"}}, {Name: "host"}, {Name: "none"}}
)

func healthyDocker(pools []system.NetworkAddressPool, nets []fakedocker.Network) fakedocker.FakeDocker {
	return fakedocker.FakeDocker{ServerVersion: "28.5.2", Images: map[string]string{testImage: testImageID},
		AddressPools: pools, Networks: nets}
}

// useNetworks points the client at a fake Docker with these address pools
// (none: Docker's built-in ones) and networks.
func (f *fixture) useNetworks(pools []system.NetworkAddressPool, nets []fakedocker.Network) {
	f.t.Helper()
	f.useDocker("unix://" + fakedocker.Start(f.t, healthyDocker(pools, nets)))
}

// subnets is one network per subnet.
func subnets(subs ...string) []fakedocker.Network {
	nets := []fakedocker.Network{}
	for i, s := range subs {
		nets = append(nets, fakedocker.Network{Name: fmt.Sprintf("net%d", i), Subnets: []string{s}})
	}
	return nets
}

// defaultPoolSubnets is the first n of the 31 ranges in Docker's built-in
// pools, in allocation order.
func defaultPoolSubnets(n int) []string {
	var subs []string
	for i := 17; i <= 31; i++ {
		subs = append(subs, fmt.Sprintf("172.%d.0.0/16", i))
	}
	for i := 0; i < 16; i++ {
		subs = append(subs, fmt.Sprintf("192.168.%d.0/20", 16*i))
	}
	return subs[:n]
}

// poolSubnets is the first n /24s of 10.200.0.0/16.
func poolSubnets(n int) []string {
	var subs []string
	for i := range n {
		subs = append(subs, fmt.Sprintf("10.200.%d.0/24", i))
	}
	return subs
}

func (f *fixture) path(rel string) string { return filepath.Join(f.root, rel) }

func (f *fixture) write(rel, content string) {
	f.t.Helper()
	if err := os.WriteFile(f.path(rel), []byte(f.expand(content)), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) script(name, content string) {
	f.t.Helper()
	if err := os.WriteFile(filepath.Join(f.binDir, name), []byte(content), 0o755); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) loadConfig() {
	f.env.ConfigPath = f.path("etc/config.yaml")
	f.env.Config, f.env.ConfigErr = config.Load(f.env.ConfigPath)
}

// useDocker points both the client and DOCKER_HOST at host.
func (f *fixture) useDocker(host string) {
	f.t.Helper()
	c, err := client.NewClientWithOpts(client.WithHost(host), client.WithAPIVersionNegotiation())
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { c.Close() })
	f.env.Docker, f.env.DockerErr, f.env.DockerHost = c, nil, host
}

// holdDaemonLock starts a "cleanup daemon": this test process takes the
// daemon lock the real daemon takes.
func (f *fixture) holdDaemonLock() {
	f.t.Helper()
	l, err := lock.AcquireDaemon(lock.DaemonPath(f.path("state")))
	if err != nil {
		f.t.Fatal(err)
	}
	f.daemon = l
	f.t.Cleanup(l.Release)
}

func (f *fixture) run() []Result {
	return Run(context.Background(), f.env)
}

func (f *fixture) result(name string) Result {
	f.t.Helper()
	for _, r := range f.run() {
		if r.Name == name {
			return r
		}
	}
	f.t.Fatalf("no check named %q", name)
	return Result{}
}

// want describes a result; Detail is a regular expression (with ROOT for
// the fixture root) because some details carry error text from Docker or
// the OS.
type want struct {
	Status Status
	Detail string
	Fix    string
}

func (f *fixture) expand(s string) string {
	return strings.ReplaceAll(s, "ROOT", f.root)
}

func TestHealthyRootPassesEverything(t *testing.T) {
	f := newFixture(t)
	got := f.run()
	r := f.root
	wantResults := []Result{
		{Name: "Docker daemon", Status: Pass, Detail: "server version 28.5.2"},
		{Name: "Docker socket", Status: Pass, Detail: f.sock + " mode 0660"},
		{Name: "OpenSSH version", Status: Pass, Detail: "OpenSSH_9.2p1 Debian-2+deb12u3, OpenSSL 3.0.15 3 Sep 2024"},
		{Name: "sshd config valid", Status: Pass, Detail: r + "/etc/sshd_config"},
		{Name: "AuthorizedKeysCommand", Status: Pass, Detail: r + "/etc/sshd_config:4"},
		{Name: "podspawn config dir", Status: Pass, Detail: r + "/etc"},
		{Name: "key directory", Status: Pass, Detail: r + "/etc/keys"},
		{Name: "state directory", Status: Pass, Detail: r + "/state"},
		{Name: "lock directory", Status: Pass, Detail: r + "/state/locks"},
		{Name: "disk space", Status: Pass, Detail: "20.0 GB free"},
		{Name: "disk limit", Status: Pass, Detail: "no limit set (defaults.disk); one session can fill Docker's data root"},
		{Name: "home size", Status: Pass, Detail: "no cap set (state.home_size); one user's persistent home can fill the filesystem of " + r + "/state/homes"},
		{Name: "default image", Status: Pass, Detail: "podspawn-test:busybox cached (0123456789ab)"},
		{Name: "session networks", Status: Pass, Detail: "room for 255 more session networks (1 of 256 address ranges in use)"},
		{Name: "host access rules", Status: Pass, Detail: "PODSPAWN-INPUT drops what session networks (-i psp+) send to the host (IPv4, IPv6); allowed ports: none"},
		{Name: "config file", Status: Pass, Detail: r + "/etc/config.yaml"},
		{Name: "state database", Status: Pass, Detail: r + "/state/state.db: quick_check ok, schema version 4"},
		{Name: "cleanup daemon", Status: Pass, Detail: fmt.Sprintf("running (pid %d)", os.Getpid())},
		{Name: "removal guard", Status: Pass, Detail: "nothing held (1 session(s), 1 user(s) with keys)"},
		{Name: "audit log", Status: Pass, Detail: "disabled (log.audit_log is not set)"},
	}
	if diff := cmp.Diff(wantResults, got); diff != "" {
		t.Errorf("results (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{r + "/state"}, f.statfsd); diff != "" {
		t.Errorf("statfs paths (-want +got):\n%s", diff)
	}
	if _, err := os.Stat(f.path("state/state.db-journal")); err == nil {
		t.Error("doctor left a journal behind")
	}
}

const keySetupFix = "sudo podspawn server-setup (it gives the key directory and its files to root, readable by the auth-keys account's group, without following links)"

func TestChecks(t *testing.T) {
	dockerHang := "Docker accepted the connection but did not answer; check it with: sudo systemctl status docker"
	poolsFix := `add larger "default-address-pools" to /etc/docker/daemon.json, e.g. {"base":"10.200.0.0/16","size":24}, and restart Docker`
	badPoolFix := `correct that entry of "default-address-pools" in /etc/docker/daemon.json and restart Docker`
	pool := func(base string, size int) system.NetworkAddressPool {
		return system.NetworkAddressPool{Base: base, Size: size}
	}
	custom := []system.NetworkAddressPool{pool("10.200.0.0/16", 24)}
	cases := []struct {
		check string
		name  string
		setup func(f *fixture)
		want  want
	}{
		// Docker daemon
		{"Docker daemon", "unreachable socket", func(f *fixture) { f.useDocker("unix://" + f.path("missing.sock")) },
			want{Fail, `^Docker is not reachable at unix://ROOT/missing\.sock: .*`, "install Docker and start it: sudo systemctl start docker"}},
		{"Docker daemon", "no client", func(f *fixture) {
			f.env.Docker, f.env.DockerErr, f.env.DockerHost = nil, errors.New("unable to parse docker host `bogus`"), "bogus"
		}, want{Fail, "^cannot create a Docker client: unable to parse docker host `bogus`$", `fix DOCKER_HOST (now "bogus") or unset it to use /var/run/docker.sock`}},
		{"Docker daemon", "hanging daemon", func(f *fixture) {
			f.useDocker("unix://" + fakedocker.Start(f.t, fakedocker.FakeDocker{Hang: true}))
			f.env.Timeout = 300 * time.Millisecond
		}, want{Fail, `^no answer within 300ms$`, dockerHang}},

		// Docker socket
		{"Docker socket", "world-accessible", func(f *fixture) { os.Chmod(f.sock, 0o666) },
			want{Warn, `^\S+/docker\.sock is accessible to every local account \(mode 0666\); Docker access is root access$`,
				"sudo chmod 660 " + "SOCK" + " (podspawn users do not need it: spawn runs as root through sudo)"}},
		{"Docker socket", "use_sudo off and group-only", func(f *fixture) { f.env.Config.SSH.UseSudo = false },
			want{Warn, `^\S+/docker\.sock not world-accessible \(mode 0660\); with ssh.use_sudo off, spawn runs as each SSH user, who needs docker group membership$`,
				"set ssh.use_sudo: true (recommended), or add each podspawn user to the socket's group: sudo usermod -aG docker <user>"}},
		{"Docker socket", "missing", func(f *fixture) { f.env.DockerHost = "unix://" + f.path("missing.sock") },
			want{Fail, `^ROOT/missing\.sock not found$`, "start Docker (sudo systemctl start docker), or point DOCKER_HOST at its socket"}},
		{"Docker socket", "not a socket", func(f *fixture) {
			f.write("fake.sock", "")
			f.env.DockerHost = "unix://" + f.path("fake.sock")
		}, want{Fail, `^ROOT/fake\.sock exists but is not a socket \(mode -rw-r--r--\)$`, "remove it and restart Docker: sudo systemctl restart docker"}},
		{"Docker socket", "tcp host", func(f *fixture) { f.env.DockerHost = "tcp://10.0.0.1:2376" },
			want{Pass, `^DOCKER_HOST is tcp://10\.0\.0\.1:2376; no local socket to check$`, ""}},

		// OpenSSH version
		{"OpenSSH version", "client only", func(f *fixture) { os.Remove(filepath.Join(f.binDir, "sshd")) },
			want{Pass, `^OpenSSH_9\.2p1 Debian`, ""}},
		{"OpenSSH version", "neither", func(f *fixture) { f.env.Path = f.path("empty") + ":" },
			want{Fail, `^sshd not found in PATH; install openssh-server$`, "sudo apt-get install openssh-server (and make sure /usr/sbin is in PATH)"}},
		{"OpenSSH version", "too old", func(f *fixture) {
			f.script("sshd", "#!/bin/sh\necho 'OpenSSH_7.2p2 Ubuntu-4ubuntu2.10, OpenSSL 1.0.2g  1 Mar 2016' >&2\n")
		}, want{Fail, `^OpenSSH_7\.2p2 .* is too old; podspawn needs OpenSSH 7\.4\+ for the restrict key option$`, "upgrade openssh-server: sudo apt-get install openssh-server"}},
		{"OpenSSH version", "not OpenSSH", func(f *fixture) {
			f.script("sshd", "#!/bin/sh\necho 'Dropbear v2022.83' >&2\n")
			os.Remove(filepath.Join(f.binDir, "ssh"))
		}, want{Fail, `^ROOT/bin/sshd -V printed no OpenSSH version: "Dropbear v2022\.83"$`, "podspawn needs OpenSSH 7.4+: sudo apt-get install openssh-server"}},

		// sshd config valid
		{"sshd config valid", "bad keyword", func(f *fixture) { appendFile(f, "etc/sshd_config", "BADKEYWORD yes\n") },
			want{Fail, `^sshd -t -f ROOT/etc/sshd_config failed: ROOT/etc/sshd_config: line 9: Bad configuration option: BADKEYWORD;`,
				"correct the errors sshd -t reports in ROOT/etc/sshd_config (duplicate directives, unknown keywords, bad Match blocks)"}},
		{"sshd config valid", "no sshd", func(f *fixture) { os.Remove(filepath.Join(f.binDir, "sshd")) },
			want{Fail, `^sshd not found in PATH; cannot validate ROOT/etc/sshd_config$`, "sudo apt-get install openssh-server (and make sure /usr/sbin is in PATH)"}},
		{"sshd config valid", "not root, host keys unreadable", func(f *fixture) {
			f.script("sshd", "#!/bin/sh\necho 'Could not load host key: /etc/ssh/ssh_host_ed25519_key' >&2\nexit 1\n")
			f.env.Euid = 1000
		}, want{Warn, `^sshd -t needs root to read host keys; re-run with sudo to fully validate$`, "sudo podspawn doctor"}},

		// AuthorizedKeysCommand
		{"AuthorizedKeysCommand", "not configured", func(f *fixture) {
			f.write("etc/sshd_config", "Port 22\n#AuthorizedKeysCommand /usr/local/bin/podspawn auth-keys %u\n")
		},
			want{Warn, `^not configured; sshd will not ask podspawn for keys$`,
				"sudo podspawn server-setup, or add to ROOT/etc/sshd_config: AuthorizedKeysCommand /usr/local/bin/podspawn --config ROOT/etc/config.yaml auth-keys %u %t %k, then AuthorizedKeysCommandUser root"}},
		{"AuthorizedKeysCommand", "unreadable", func(f *fixture) { os.Remove(f.path("etc/sshd_config")) },
			want{Fail, `^cannot read ROOT/etc/sshd_config: no such file or directory$`, "run doctor as root, or fix ssh.sshd_config in ROOT/etc/config.yaml to name the real sshd_config"}},
		{"AuthorizedKeysCommand", "another command first", func(f *fixture) {
			f.write("etc/sshd_config", "AuthorizedKeysCommand /usr/bin/sss_ssh_authorizedkeys %u\nAuthorizedKeysCommand /usr/local/bin/podspawn --config ROOT/etc/config.yaml auth-keys %u %t %k\nAuthorizedKeysCommandUser root\n")
		}, want{Warn, `^sshd uses the first AuthorizedKeysCommand, at ROOT/etc/sshd_config:1 \(/usr/bin/sss_ssh_authorizedkeys %u\), not podspawn's at ROOT/etc/sshd_config:2$`,
			"remove or comment out the line at ROOT/etc/sshd_config:1"}},
		{"AuthorizedKeysCommand", "no command user", func(f *fixture) {
			f.write("etc/sshd_config", "AuthorizedKeysCommand /usr/local/bin/podspawn --config ROOT/etc/config.yaml auth-keys %u %t %k\n")
		}, want{Warn, `^AuthorizedKeysCommandUser is not set; sshd ignores AuthorizedKeysCommand without it$`, "add 'AuthorizedKeysCommandUser root' to ROOT/etc/sshd_config"}},
		{"AuthorizedKeysCommand", "other config file", func(f *fixture) {
			f.write("etc/sshd_config", "AuthorizedKeysCommand /usr/local/bin/podspawn auth-keys %u %t %k\nAuthorizedKeysCommandUser root\n")
		}, want{Warn, `^AuthorizedKeysCommand at ROOT/etc/sshd_config:1 uses config /etc/podspawn/config\.yaml, but doctor checked ROOT/etc/config\.yaml$`,
			"re-run doctor with --config /etc/podspawn/config.yaml, or re-run server-setup with --config ROOT/etc/config.yaml"}},
		{"AuthorizedKeysCommand", "in an Include, inside Match", func(f *fixture) {
			os.MkdirAll(f.path("etc/sshd_config.d"), 0o755)
			f.write("etc/sshd_config.d/podspawn.conf", "Match Group podspawn\n  AuthorizedKeysCommand=\"/usr/local/bin/podspawn\" --config=ROOT/etc/config.yaml auth-keys %u %t %k\n  AuthorizedKeysCommandUser root\n")
			f.write("etc/sshd_config", "Include ROOT/etc/sshd_config.d/*.conf\nAuthorizedKeysCommand /usr/bin/other %u\n")
		}, want{Pass, `^ROOT/etc/sshd_config\.d/podspawn\.conf:2$`, ""}},

		// podspawn config dir
		{"podspawn config dir", "missing", func(f *fixture) { f.env.ConfigPath = f.path("nope/config.yaml") },
			want{Fail, `^ROOT/nope does not exist; run 'podspawn server-setup'$`, "sudo podspawn server-setup (it creates every directory podspawn needs)"}},
		{"podspawn config dir", "not a directory", func(f *fixture) {
			f.write("plain", "")
			f.env.ConfigPath = f.path("plain/config.yaml")
		}, want{Fail, `^ROOT/plain exists but is not a directory$`, "move ROOT/plain aside, then: sudo podspawn server-setup (it creates every directory podspawn needs)"}},
		{"podspawn config dir", "group-writable", func(f *fixture) { os.Chmod(f.path("etc"), 0o775) },
			want{Warn, `^ROOT/etc is writable by group or others \(mode 0775\); whoever can write it decides images and keys$`, "sudo chmod 755 ROOT/etc"}},

		// key directory
		{"key directory", "mode 0755", func(f *fixture) { os.Chmod(f.path("etc/keys"), 0o755) },
			want{Warn, `^ROOT/etc/keys has mode 0755, should be 0750$`, keySetupFix}},
		{"key directory", "missing", func(f *fixture) { os.RemoveAll(f.path("etc/keys")) },
			want{Fail, `^ROOT/etc/keys does not exist; run 'podspawn server-setup'$`, keySetupFix}},
		{"key directory", "a file", func(f *fixture) { os.RemoveAll(f.path("etc/keys")); f.write("etc/keys", "") },
			want{Fail, `^ROOT/etc/keys exists but is not a directory$`, "move ROOT/etc/keys aside, then: " + keySetupFix}},
		{"key directory", "the older model: owned by the auth-keys account", func(f *fixture) {
			os.Chown(f.path("etc/keys"), 4321, 4321)
			os.Chmod(f.path("etc/keys"), 0o700)
			os.Chown(f.path("etc/keys/alice"), 4321, 4321)
			os.Chmod(f.path("etc/keys/alice"), 0o600)
			f.env.LookupAccount = func(string) (int, int, error) { return 4321, 4321, nil }
			f.env.Config.SSH.AuthKeysUser = "podspawn-auth"
		}, want{Warn, `^ROOT/etc/keys is owned by uid 4321, not root: that account could plant links for root to follow; ROOT/etc/keys has mode 0700, should be 0750; ` +
			`key files should be plain files, mode 0640, owner root and the group of podspawn-auth: alice \(0600 4321:4321\)$`, keySetupFix}},
		{"key directory", "group is not the auth-keys account's", func(f *fixture) {
			f.env.LookupAccount = func(string) (int, int, error) { return 4321, 999, nil }
			f.env.Config.SSH.AuthKeysUser = "podspawn-auth"
		}, want{Warn, `^ROOT/etc/keys has group 0, not the group of podspawn-auth \(gid 999\) that sshd runs auth-keys as; ` +
			`key files should be plain files, mode 0640, owner root and the group of podspawn-auth: alice \(0640 0:0\)$`, keySetupFix}},
		{"key directory", "a planted link and a setgid file", func(f *fixture) {
			os.Symlink("/etc/shadow", f.path("etc/keys/zqc"))
			f.write("etc/keys/bob", "")
			syscall.Chmod(f.path("etc/keys/bob"), 0o2640)
			os.Mkdir(f.path("etc/keys/.hidden"), 0o700)
		}, want{Warn, `^key files should be plain files, mode 0640, owner root and the group of root: bob \(2640 0:0\), zqc \(a symbolic link\)$`, keySetupFix}},
		{"key directory", "many bad files", func(f *fixture) {
			for _, u := range []string{"a1", "a2", "a3", "a4", "a5", "a6", "a7"} {
				f.write("etc/keys/"+u, "")
			}
		}, want{Warn, `: a1 \(0644 0:0\), a2 \(0644 0:0\), a3 \(0644 0:0\), a4 \(0644 0:0\), a5 \(0644 0:0\) and 2 more$`, keySetupFix}},
		{"key directory", "auth-keys account missing", func(f *fixture) { f.env.Config.SSH.AuthKeysUser = "podspawn-auth" },
			want{Warn, `^account podspawn-auth \(ssh\.auth_keys_user\) does not exist, so sshd cannot run auth-keys$`, keySetupFix}},

		// state directory
		{"state directory", "missing", func(f *fixture) { f.env.Config.State.DBPath = f.path("gone/state.db") },
			want{Fail, `^ROOT/gone does not exist; run 'podspawn server-setup'$`, "sudo mkdir -p -m 700 ROOT/gone && sudo chown root:root ROOT/gone"}},
		{"state directory", "under a regular file", func(f *fixture) {
			f.write("plain", "")
			f.env.Config.State.DBPath = f.path("plain/state/state.db")
		}, want{Fail, `^cannot stat ROOT/plain/state: .*not a directory$`, "check the permissions of the directories above ROOT/plain/state"}},
		{"state directory", "is a regular file", func(f *fixture) {
			f.write("plain", "")
			f.env.Config.State.DBPath = f.path("plain/state.db")
		}, want{Fail, `^ROOT/plain exists but is not a directory$`, "move ROOT/plain aside, then: sudo mkdir -p -m 700 ROOT/plain && sudo chown root:root ROOT/plain"}},
		{"state directory", "group-writable", func(f *fixture) { os.Chmod(f.path("state"), 0o770) },
			want{Warn, `^ROOT/state is writable by group or others \(mode 0770\); other accounts could tamper with podspawn state$`, "sudo chmod 700 ROOT/state"}},

		// lock directory
		{"lock directory", "missing", func(f *fixture) { os.Remove(f.path("state/locks")) },
			want{Fail, `^ROOT/state/locks does not exist; run 'podspawn server-setup'$`, "sudo mkdir -p -m 700 ROOT/state/locks && sudo chown root:root ROOT/state/locks"}},
		{"lock directory", "a file", func(f *fixture) { os.Remove(f.path("state/locks")); f.write("state/locks", "") },
			want{Fail, `^ROOT/state/locks exists but is not a directory$`, "move ROOT/state/locks aside, then: sudo mkdir -p -m 700 ROOT/state/locks && sudo chown root:root ROOT/state/locks"}},

		// default image
		{"default image", "not cached", func(f *fixture) { f.env.Config.Defaults.Image = "ubuntu:24.04" },
			want{Warn, `^ubuntu:24\.04 not cached; first connection will pull it \(slow\)$`, "sudo docker pull ubuntu:24.04"}},
		{"default image", "docker unreachable", func(f *fixture) { f.useDocker("unix://" + f.path("missing.sock")) },
			want{Fail, `^cannot check podspawn-test:busybox: .*`, "fix the Docker daemon check first"}},
		{"default image", "docker hangs", func(f *fixture) {
			f.useDocker("unix://" + fakedocker.Start(f.t, fakedocker.FakeDocker{Hang: true}))
			f.env.Timeout = 300 * time.Millisecond
		}, want{Fail, `^no answer within 300ms$`, dockerHang}},

		// session networks
		{"session networks", "default pools, fresh daemon", func(f *fixture) { f.useNetworks(nil, nil) },
			want{Warn, `^room for only 30 more session networks \(1 of 31 address ranges in use\); every session needs one$`, poolsFix}},
		{"session networks", "default pools, a few sessions", func(f *fixture) {
			f.useNetworks(nil, append(subnets(defaultPoolSubnets(4)...), fakedocker.Network{Name: "host"}, fakedocker.Network{Name: "none"}))
		}, want{Warn, `^room for only 27 more session networks \(4 of 31 address ranges in use\); every session needs one$`, poolsFix}},
		{"session networks", "default pools exhausted", func(f *fixture) { f.useNetworks(nil, subnets(defaultPoolSubnets(31)...)) },
			want{Fail, `^no address range left for a session network \(31 of 31 in use\); new sessions cannot start$`, poolsFix}},
		{"session networks", "custom pool with room", func(f *fixture) { f.useNetworks(custom, subnets(poolSubnets(3)...)) },
			want{Pass, `^room for 253 more session networks \(3 of 256 address ranges in use\)$`, ""}},
		{"session networks", "exactly 50 free", func(f *fixture) {
			f.useNetworks([]system.NetworkAddressPool{pool("10.200.0.0/18", 24)}, subnets(poolSubnets(14)...))
		}, want{Pass, `^room for 50 more session networks \(14 of 64 address ranges in use\)$`, ""}},
		{"session networks", "49 free", func(f *fixture) {
			f.useNetworks([]system.NetworkAddressPool{pool("10.200.0.0/18", 24)}, subnets(poolSubnets(15)...))
		}, want{Warn, `^room for only 49 more session networks \(15 of 64 address ranges in use\); every session needs one$`, poolsFix}},
		{"session networks", "custom pool exhausted", func(f *fixture) {
			f.useNetworks([]system.NetworkAddressPool{pool("10.200.0.0/23", 24)}, subnets(poolSubnets(2)...))
		}, want{Fail, `^no address range left for a session network \(2 of 2 in use\); new sessions cannot start$`, poolsFix}},
		{"session networks", "networks outside the pools, IPv6 and broken subnets not counted", func(f *fixture) {
			f.useNetworks(custom, []fakedocker.Network{
				{Name: "bridge", Subnets: []string{"172.17.0.0/16"}},
				{Name: "v6only", Subnets: []string{"fd00:1::/64"}},
				{Name: "dual", Subnets: []string{"fd00:2::/64", "10.200.3.0/24"}},
				{Name: "junk", Subnets: []string{"", "not-a-subnet"}},
				{Name: "host"}, {Name: "none"},
			})
		}, want{Pass, `^room for 255 more session networks \(1 of 256 address ranges in use\)$`, ""}},
		{"session networks", "hand-made subnets count the ranges they cover", func(f *fixture) {
			f.useNetworks(custom, []fakedocker.Network{
				{Name: "a", Subnets: []string{"10.200.5.0/28"}},
				{Name: "b", Subnets: []string{"10.200.5.16/28"}}, // same /24 as a
				{Name: "c", Subnets: []string{"10.200.8.0/23"}},  // two /24s
				{Name: "d", Subnets: []string{"10.200.9.0/24", "10.200.5.32/28"}},
				{Name: "outside", Subnets: []string{"10.201.0.0/16"}},
			})
		}, want{Pass, `^room for 253 more session networks \(3 of 256 address ranges in use\)$`, ""}},
		{"session networks", "a network covering the whole pool", func(f *fixture) { f.useNetworks(custom, subnets("10.0.0.0/8")) },
			want{Fail, `^no address range left for a session network \(256 of 256 in use\); new sessions cannot start$`, poolsFix}},
		{"session networks", "nested and IPv6 pools", func(f *fixture) {
			f.useNetworks([]system.NetworkAddressPool{pool("fd00::/104", 112), pool("10.200.128.0/17", 28), pool("10.200.0.0/16", 24), pool("192.168.0.0/24", 26)},
				subnets("10.200.0.0/24", "192.168.0.64/26"))
		}, want{Pass, `^room for 258 more session networks \(2 of 260 address ranges in use\)$`, ""}},
		{"session networks", "only IPv6 pools", func(f *fixture) { f.useNetworks([]system.NetworkAddressPool{pool("fd00::/104", 112)}, nil) },
			want{Fail, `^"default-address-pools" in Docker's daemon\.json has no IPv4 pool; new sessions cannot get a network$`, poolsFix}},
		{"session networks", "unparsable pool", func(f *fixture) {
			f.useNetworks([]system.NetworkAddressPool{pool("10.200.0.0/16", 24), pool("10.300.0.0/16", 24)}, nil)
		}, want{Fail, `^address pool \{"base":"10\.300\.0\.0/16","size":24\} in Docker's "default-address-pools": base is not an address range: .+$`, badPoolFix}},
		{"session networks", "pool size shorter than its base", func(f *fixture) { f.useNetworks([]system.NetworkAddressPool{pool("10.200.0.0/16", 8)}, nil) },
			want{Fail, `^address pool \{"base":"10\.200\.0\.0/16","size":8\} in Docker's "default-address-pools": size must be between 16 \(the base's prefix length\) and 32$`, badPoolFix}},
		{"session networks", "docker unreachable", func(f *fixture) { f.useDocker("unix://" + f.path("missing.sock")) },
			want{Fail, `^cannot check Docker's address pools: .*missing\.sock`, "fix the Docker daemon check first"}},
		{"session networks", "no client", func(f *fixture) {
			f.env.Docker, f.env.DockerErr, f.env.DockerHost = nil, errors.New("unable to parse docker host `bogus`"), "bogus"
		}, want{Fail, "^cannot check Docker's address pools: no Docker client: unable to parse docker host `bogus`$", "fix the Docker daemon check first"}},
		{"session networks", "docker hangs", func(f *fixture) {
			f.useDocker("unix://" + fakedocker.Start(f.t, fakedocker.FakeDocker{Hang: true}))
			f.env.Timeout = 300 * time.Millisecond
		}, want{Fail, `^no answer within 300ms$`, dockerHang}},

		// config file
		{"config file", "missing", func(f *fixture) {
			os.Remove(f.path("etc/config.yaml"))
			f.loadConfig()
		}, want{Warn, `^ROOT/etc/config\.yaml does not exist; using built-in defaults$`, "sudo podspawn server-setup writes one, or pass --config with the right path"}},
		{"config file", "broken", func(f *fixture) {
			f.write("etc/config.yaml", "session:\n  grace_period: 60\n")
			f.loadConfig()
		}, want{Fail, `^config ROOT/etc/config\.yaml: .*grace_period.*60`, "fix ROOT/etc/config.yaml as the message above says; commands other than doctor refuse to run until it loads"}},
		{"config file", "only comments", func(f *fixture) {
			f.write("etc/config.yaml", "# auth:\n#   key_dir: /srv/keys\n")
			f.loadConfig()
		}, want{Fail, `^config ROOT/etc/config\.yaml exists but sets nothing \(it is empty or holds only comments\): uncomment or add the settings you mean, or delete the file to run on the built-in defaults$`,
			"fix ROOT/etc/config.yaml as the message above says; commands other than doctor refuse to run until it loads"}},

		// state database
		{"state database", "missing", func(f *fixture) { os.Remove(f.path("state/state.db")) },
			want{Warn, `^ROOT/state/state\.db does not exist yet; no session has been created$`, "nothing to do if this is a new server: the first connection (or sudo podspawn cleanup) creates it"}},
		{"state database", "not a database", func(f *fixture) { f.write("state/state.db", strings.Repeat("not sqlite ", 500)) },
			want{Fail, `^state db ROOT/state/state\.db: quick_check: file is not a database$`, "stop podspawn cleanup, copy ROOT/state/state.db and its -wal file aside, and restore a good backup"}},
		{"state database", "newer schema", func(f *fixture) {
			st, err := sqlstore.Open(context.Background(), f.path("state/state.db"))
			if err != nil {
				f.t.Fatal(err)
			}
			st.DB().Exec(`INSERT INTO schema_migrations (version, applied_at) VALUES (99, 0)`)
			st.Close()
		}, want{Fail, `^schema version 99 is newer than this podspawn supports \(4\)$`, "install the podspawn release that wrote it: sudo podspawn update"}},

		// cleanup daemon
		{"cleanup daemon", "stopped daemon", func(f *fixture) { f.daemon.Release() },
			want{Warn, `^not running; grace periods are enforced only at connect time$`, "if the unit is not installed yet: sudo cp hack/systemd/podspawn-cleanup.service /etc/systemd/system/ (from the podspawn source); then sudo systemctl daemon-reload && sudo systemctl enable --now podspawn-cleanup.service"}},
		{"cleanup daemon", "no lock file", func(f *fixture) {
			f.daemon.Release()
			os.Remove(lock.DaemonPath(f.path("state")))
		},
			want{Warn, `^not running; grace periods are enforced only at connect time$`, "if the unit is not installed yet: sudo cp hack/systemd/podspawn-cleanup.service /etc/systemd/system/ (from the podspawn source); then sudo systemctl daemon-reload && sudo systemctl enable --now podspawn-cleanup.service"}},

		// removal guard
		{"removal guard", "removals held", func(f *fixture) {
			f.env.GuardPlan = func(context.Context) (GuardView, error) {
				return GuardView{Held: 12, Sessions: 6, Holds: []reconcile.Hold{{Reason: reconcile.HoldMassRemoval, Detail: "6 of 6 session containers would be removed"}}}, nil
			}
		}, want{Fail, `^12 removal\(s\) held: mass-removal: 6 of 6 session containers would be removed$`, reconcile.HoldFix}},
		{"removal guard", "empty key directory beside sessions", func(f *fixture) {
			f.env.GuardPlan = func(context.Context) (GuardView, error) { return GuardView{Sessions: 2}, nil }
		}, want{Warn, `^the key directory ROOT/etc/keys holds no key file while 2 session\(s\) exist; a cleanup pass removes sessions whose user has no key file$`,
			"check that auth.key_dir is right and mounted; podspawn cleanup --dry-run shows what a pass would remove"}},
		{"removal guard", "no database yet", func(f *fixture) {
			f.env.GuardPlan = func(context.Context) (GuardView, error) { return GuardView{NoDatabase: true}, nil }
		}, want{Pass, `^no state database yet$`, ""}},
		{"removal guard", "cannot plan", func(f *fixture) {
			f.env.GuardPlan = func(context.Context) (GuardView, error) { return GuardView{}, errors.New("Docker is down") }
		}, want{Warn, `^cannot plan a cleanup pass: Docker is down$`, "fix the Docker daemon or state database checks above, then re-run podspawn doctor"}},
	}
	for _, tc := range cases {
		t.Run(tc.check+"/"+tc.name, func(t *testing.T) {
			f := newFixture(t)
			tc.setup(f)
			got := f.result(tc.check)
			wantFix := strings.ReplaceAll(f.expand(tc.want.Fix), "SOCK", f.sock)
			if got.Status != tc.want.Status || got.Fix != wantFix || !regexp.MustCompile(f.expand(tc.want.Detail)).MatchString(got.Detail) {
				t.Errorf("%s:\n got  %+v\n want status %s, detail =~ %s, fix %q", tc.check, got, tc.want.Status, f.expand(tc.want.Detail), wantFix)
			}
		})
	}
}

func TestDiskSpaceThresholds(t *testing.T) {
	fix := "free space on the filesystem of ROOT/state; unused images are usually the largest: sudo docker image prune -a"
	cases := []struct {
		name    string
		free    uint64
		err     error // for the state dir only
		rootErr error
		want    Result
		paths   []string
	}{
		{"plenty", 20 * gib, nil, nil, Result{Name: "disk space", Status: Pass, Detail: "20.0 GB free"}, []string{"ROOT/state"}},
		{"exactly 5 GB", 5 * gib, nil, nil, Result{Name: "disk space", Status: Pass, Detail: "5.0 GB free"}, []string{"ROOT/state"}},
		{"just under 5 GB", 5*gib - 1<<20, nil, nil, Result{Name: "disk space", Status: Warn, Detail: "5.0 GB free (recommend 5+ GB for image cache)", Fix: fix}, []string{"ROOT/state"}},
		{"3.5 GB", 3*gib + gib/2, nil, nil, Result{Name: "disk space", Status: Warn, Detail: "3.5 GB free (recommend 5+ GB for image cache)", Fix: fix}, []string{"ROOT/state"}},
		{"exactly 1 GB", gib, nil, nil, Result{Name: "disk space", Status: Warn, Detail: "1.0 GB free (recommend 5+ GB for image cache)", Fix: fix}, []string{"ROOT/state"}},
		{"0.4 GB", gib * 4 / 10, nil, nil, Result{Name: "disk space", Status: Fail, Detail: "0.4 GB free (need at least 1 GB for images)", Fix: fix}, []string{"ROOT/state"}},
		{"state dir missing: falls back to /", 0, errors.New("statfs ROOT/state: no such file or directory"), nil,
			Result{Name: "disk space", Status: Fail, Detail: "0.0 GB free (need at least 1 GB for images)",
				Fix: "free space on the filesystem of /; unused images are usually the largest: sudo docker image prune -a"}, []string{"ROOT/state", "/"}},
		{"both fail", 0, errors.New("statfs ROOT/state: no such file or directory"), errors.New("statfs /: input/output error"),
			Result{Name: "disk space", Status: Warn, Detail: "could not check disk space: statfs /: input/output error", Fix: "check free space by hand: df -h ROOT/state"}, []string{"ROOT/state", "/"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			var paths []string
			f.env.Statfs = func(p string) (uint64, error) {
				paths = append(paths, p)
				if p == "/" {
					return tc.free, tc.rootErr
				}
				return tc.free, tc.err
			}
			got := f.result("disk space")
			want := tc.want
			want.Detail, want.Fix = f.expand(want.Detail), f.expand(want.Fix)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("result (-want +got):\n%s", diff)
			}
			var wantPaths []string
			for _, p := range tc.paths {
				wantPaths = append(wantPaths, f.expand(p))
			}
			if diff := cmp.Diff(wantPaths, paths); diff != "" {
				t.Errorf("statfs paths (-want +got):\n%s", diff)
			}
		})
	}
}

// A config that does not load fails every check that depends on it instead
// of silently checking the defaults.
func TestBrokenConfigChecksNothingFromDefaults(t *testing.T) {
	f := newFixture(t)
	f.write("etc/config.yaml", "state:\n  db_path: relative.db\n")
	f.loadConfig()
	var got []string
	for _, r := range f.run() {
		got = append(got, fmt.Sprintf("%s %s: %s", r.Status, r.Name, r.Detail))
	}
	notChecked := "not checked: the config file does not load (see the config file check)"
	want := []string{
		"pass Docker daemon: server version 28.5.2",
		"pass Docker socket: " + f.sock + " mode 0660",
		"pass OpenSSH version: OpenSSH_9.2p1 Debian-2+deb12u3, OpenSSL 3.0.15 3 Sep 2024",
		"fail sshd config valid: " + notChecked,
		"fail AuthorizedKeysCommand: " + notChecked,
		"pass podspawn config dir: " + f.path("etc"),
		"fail key directory: " + notChecked,
		"fail state directory: " + notChecked,
		"fail lock directory: " + notChecked,
		"fail disk space: " + notChecked,
		"fail disk limit: " + notChecked,
		"fail home size: " + notChecked,
		"fail default image: " + notChecked,
		"pass session networks: room for 255 more session networks (1 of 256 address ranges in use)",
		"fail host access rules: " + notChecked,
		"fail config file: config " + f.path("etc/config.yaml") + `: invalid state.db_path "relative.db": must be an absolute path`,
		"fail state database: " + notChecked,
		"fail cleanup daemon: " + notChecked,
		"fail removal guard: " + notChecked,
		"fail audit log: " + notChecked,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("results (-want +got):\n%s", diff)
	}
}

// A check that ignores its context is abandoned at its timeout.
func TestRunOneAbandonsAStuckCheck(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	c := check{name: "stuck", run: func(context.Context, *Env) Result {
		<-release
		return pass("late")
	}}
	got := runOne(context.Background(), &Env{Timeout: 50 * time.Millisecond}, c)
	want := Result{Name: "stuck", Status: Fail, Detail: "no answer within 50ms",
		Fix: "look for a hung mount or process; this check ran longer than 50ms"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("result (-want +got):\n%s", diff)
	}
}

func TestRunOneRecoversPanics(t *testing.T) {
	c := check{name: "boom", run: func(context.Context, *Env) Result { panic("nil map") }}
	got := runOne(context.Background(), &Env{Timeout: time.Second}, c)
	want := Result{Name: "boom", Status: Fail, Detail: "internal error: nil map", Fix: "report this as a podspawn bug"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("result (-want +got):\n%s", diff)
	}
}

func TestSplitDirective(t *testing.T) {
	cases := []struct {
		line string
		kw   string
		args []string
	}{
		{"", "", nil},
		{"   # AuthorizedKeysCommand x", "", nil},
		{"Port 22", "port", []string{"22"}},
		{"AuthorizedKeysCommand /bin/podspawn auth-keys %u %t %k", "authorizedkeyscommand", []string{"/bin/podspawn", "auth-keys", "%u", "%t", "%k"}},
		{"\tAuthorizedKeysCommand=\"/opt/my tools/podspawn\" auth-keys", "authorizedkeyscommand", []string{"/opt/my tools/podspawn", "auth-keys"}},
		{"AuthorizedKeysCommand = /bin/podspawn  auth-keys", "authorizedkeyscommand", []string{"/bin/podspawn", "auth-keys"}},
		{"PermitRootLogin", "permitrootlogin", nil},
	}
	for _, tc := range cases {
		kw, args := splitDirective(tc.line)
		if diff := cmp.Diff(struct {
			KW   string
			Args []string
		}{tc.kw, tc.args}, struct {
			KW   string
			Args []string
		}{kw, args}); diff != "" {
			t.Errorf("splitDirective(%q) (-want +got):\n%s", tc.line, diff)
		}
	}
}

// The whole output of a run with four warnings and a failure, byte for
// byte.
func TestGoldenRun(t *testing.T) {
	f := newFixture(t)
	// Docker's built-in address pools, as on a server nobody tuned.
	f.sock = fakedocker.Start(t, healthyDocker(nil, nil))
	if err := os.Chmod(f.sock, 0o660); err != nil {
		t.Fatal(err)
	}
	f.useDocker("unix://" + f.sock)
	f.env.Statfs = func(string) (uint64, error) { return 3*gib + gib/2, nil }
	f.env.Config.Defaults.Image = "ubuntu:24.04"
	os.Chmod(f.path("etc/keys"), 0o755)
	os.Remove(f.path("state/locks"))

	results := f.run()
	var text, js bytes.Buffer
	RenderText(&text, results)
	if err := RenderJSON(&js, results); err != nil {
		t.Fatal(err)
	}
	normalize := func(b []byte) []byte {
		s := strings.ReplaceAll(string(b), f.sock, "/run/docker.sock")
		s = strings.ReplaceAll(s, fmt.Sprintf("(pid %d)", os.Getpid()), "(pid PID)")
		return []byte(strings.ReplaceAll(s, f.root, "/ROOT"))
	}
	golden(t, "run.txt", normalize(text.Bytes()))
	golden(t, "run.json", normalize(js.Bytes()))
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./observed/doctor/ -run TestGoldenRun -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s (-want +got):\n%s", path, diff)
	}
}

func appendFile(f *fixture, rel, s string) {
	f.t.Helper()
	fd, err := os.OpenFile(f.path(rel), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		f.t.Fatal(err)
	}
	defer fd.Close()
	fd.WriteString(s)
}

// TestDiskLimit: defaults.disk is checked against the storage driver; an
// unsupported driver fails with refuse and warns with warn.
func TestDiskLimit(t *testing.T) {
	overlay := func(backing string) system.Info {
		return system.Info{Driver: "overlay2", DriverStatus: [][2]string{{"Backing Filesystem", backing}, {"Supports d_type", "true"}}}
	}
	fix := "put Docker's data root on xfs mounted with pquota (overlay2), or use btrfs or zfs; or unset defaults.disk"
	for name, tc := range map[string]struct {
		disk, policy string
		info         system.Info
		want         Result
	}{
		"no limit": {"", config.DiskRefuse, overlay("extfs"), Result{Status: Pass, Detail: "no limit set (defaults.disk); one session can fill Docker's data root"}},
		"overlay2 on xfs": {"10g", config.DiskRefuse, overlay("xfs"),
			Result{Status: Pass, Detail: "10g per container through the storage driver overlay2 on xfs (needs the pquota mount option)"}},
		"btrfs": {"10g", config.DiskRefuse, system.Info{Driver: "btrfs"}, Result{Status: Pass, Detail: "10g per container through the storage driver btrfs"}},
		"overlay2 on ext4, refuse": {"10g", config.DiskRefuse, overlay("extfs"), Result{Status: Fail,
			Detail: "storage driver overlay2 on extfs cannot limit a container's size: every session is refused (defaults.disk 10g, defaults.disk_unsupported: refuse)",
			Fix:    fix + ", or set defaults.disk_unsupported: warn"}},
		"overlay2 on ext4, warn": {"10g", config.DiskWarn, overlay("extfs"), Result{Status: Warn,
			Detail: "storage driver overlay2 on extfs cannot limit a container's size: sessions start without the 10g limit (defaults.disk_unsupported: warn)", Fix: fix}},
	} {
		t.Run(name, func(t *testing.T) {
			var e Env
			e.Config.Defaults.Disk, e.Config.Defaults.DiskUnsupported = tc.disk, tc.policy
			e.Config.Defaults.DiskBytes, _ = config.ParseMemory(tc.disk)
			e.Docker = infoDocker{tc.info}
			if diff := cmp.Diff(tc.want, checkDiskLimit(context.Background(), &e)); diff != "" {
				t.Fatalf("result (-want +got):\n%s", diff)
			}
		})
	}
}

// infoDocker answers Info only.
type infoDocker struct{ info system.Info }

func (d infoDocker) Info(context.Context) (system.Info, error) { return d.info, nil }
func (infoDocker) ImageInspect(context.Context, string, ...client.ImageInspectOption) (image.InspectResponse, error) {
	return image.InspectResponse{}, nil
}
func (infoDocker) NetworkList(context.Context, network.ListOptions) ([]network.Summary, error) {
	return nil, nil
}

// TestCheckHomeSize: with state.home_size set, the check needs mkfs.ext4
// in PATH and the loop control device.
func TestCheckHomeSize(t *testing.T) {
	bin := t.TempDir()
	cfg := config.Defaults()
	cfg.State.HomeSize, cfg.State.HomeSizeBytes = "2g", 2<<30
	e := &Env{Config: cfg, Path: bin, LoopControl: "/dev/null", Euid: 1000}
	fixLoop := "sudo modprobe loop (and list loop in /etc/modules); in a container, give it the loop devices"
	if got := checkHomeSize(context.Background(), e); got != fail("state.home_size is 2g but mkfs.ext4 is not in PATH: new persistent homes cannot be made", "sudo apt-get install e2fsprogs") {
		t.Errorf("without mkfs.ext4: %+v", got)
	}
	if err := os.WriteFile(filepath.Join(bin, "mkfs.ext4"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	want := pass("2g per user: ext4 images (" + bin + "/mkfs.ext4) on loop devices (/dev/null), below /var/lib/podspawn/homes")
	if got := checkHomeSize(context.Background(), e); got != want {
		t.Errorf("with both: %+v, want %+v", got, want)
	}
	// Sparse images that may grow past the free space: a warning.
	homes := t.TempDir()
	e.Config.State.HomesDir = homes
	if err := os.Mkdir(filepath.Join(homes, ".images"), 0o700); err != nil {
		t.Fatal(err)
	}
	small := filepath.Join(homes, ".images", "alice.ext4")
	if err := os.WriteFile(small, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(small, 16<<20); err != nil {
		t.Fatal(err)
	}
	if got := checkHomeSize(context.Background(), e); got.Status != Pass {
		t.Errorf("with a small image: %+v", got)
	}
	if err := os.Truncate(small, 1<<43); err != nil { // 8 TiB, sparse
		t.Fatal(err)
	}
	if got := checkHomeSize(context.Background(), e); got.Status != Warn || !strings.Contains(got.Detail, "may still grow by 8192.0 GiB, more than the") {
		t.Errorf("with images past the free space: %+v", got)
	}
	e.Config.State.HomesDir = config.Defaults().State.HomesDir
	e.LoopControl = filepath.Join(bin, "mkfs.ext4") // not a device
	if got := checkHomeSize(context.Background(), e); got != fail("state.home_size is 2g but "+e.LoopControl+" is missing or no device: persistent homes cannot be mounted", fixLoop) {
		t.Errorf("without loop devices: %+v", got)
	}
	// On Kubernetes a home is a claim of that size: neither is needed.
	e.Config.Runtime = config.RuntimeKubernetes
	if got := checkHomeSize(context.Background(), e); got != pass("runtime: kubernetes: a user's persistent homes are one PersistentVolumeClaim of 2g (state.home_size); whether a write past it is refused depends on the storage class") {
		t.Errorf("on kubernetes: %+v", got)
	}
}
