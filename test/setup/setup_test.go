// Package setup tests server-setup and add-user end to end: the real
// binary against real accounts (useradd, getent), a COPY of the host's
// sshd_config checked by the real sshd, and a sudoers file checked by the
// real visudo. Nothing outside the test's own temp root is written except
// the accounts and group, whose names start with "su" plus a random part
// and are removed when the test ends, and podspawn's host access rules
// (iptables), which are put back as they were; the host's sshd_config and
// /etc/sudoers.d are never touched.
package setup

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/test/harness"
)

type host struct {
	t          *testing.T
	bin        string
	root       string
	config     string
	keyDir     string
	stateDir   string
	sshdConfig string
	sudoers    string
	group      string
	authUser   string
	prefix     string
}

func randomSuffix(t *testing.T) string {
	const letters = "abcdefghijklmnopqrstuvwxyz"
	b := make([]byte, 5)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return string(b)
}

// newHost creates a temp root with a config whose group and auth-keys
// account are unique to this test, and a copy of /etc/ssh/sshd_config
// (plus extra lines prepended, e.g. an Include).
func newHost(t *testing.T, sshdPrefix string) *host {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the setup end-to-end tests need root (accounts, sshd -t)")
	}
	for _, tool := range []string{"/usr/sbin/sshd", "/usr/sbin/visudo", "/usr/sbin/useradd", "/usr/bin/sudo", "/usr/bin/getent"} {
		if _, err := os.Stat(tool); err != nil {
			t.Fatalf("%s is missing: run hack/ci-setup.sh (it installs openssh-server and sudo)", tool)
		}
	}
	// sshd -t refuses to run without its privilege separation directory,
	// which the ssh service creates when it starts.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	// server-setup installs the host access rules.
	harness.KeepHostFirewall(t)
	p := "su" + randomSuffix(t)
	root, err := os.MkdirTemp("", "podspawn-setup-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	// The auth-keys account must be able to reach the config.
	os.Chmod(root, 0o755)
	h := &host{t: t, bin: harness.Binary(t), root: root, config: filepath.Join(root, "etc", "config.yaml"),
		keyDir: filepath.Join(root, "etc", "keys"), stateDir: filepath.Join(root, "state"),
		sshdConfig: filepath.Join(root, "sshd_config"), sudoers: filepath.Join(root, "sudoers"),
		group: p, authUser: p + "-auth", prefix: p}
	t.Cleanup(h.removeAccounts)
	os.MkdirAll(filepath.Dir(h.config), 0o755)
	cfg := fmt.Sprintf(`auth:
  key_dir: %s
state:
  db_path: %s/state.db
  lock_dir: %s/locks
  homes_dir: %s/homes
  projects_dir: %s/projects
projects_file: %s/etc/projects.yaml
ssh:
  group: %s
  auth_keys_user: %s
`, h.keyDir, h.stateDir, h.stateDir, h.stateDir, h.stateDir, root, h.group, h.authUser)
	if err := os.WriteFile(h.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	orig, err := os.ReadFile("/etc/ssh/sshd_config")
	if err != nil {
		t.Fatalf("reading the host's sshd_config to copy it: %v", err)
	}
	if err := os.WriteFile(h.sshdConfig, append([]byte(sshdPrefix), orig...), 0o644); err != nil {
		t.Fatal(err)
	}
	return h
}

// user is a user name unique to this test.
func (h *host) user(name string) string { return h.prefix + "-" + name }

func (h *host) removeAccounts() {
	out, _ := exec.Command("getent", "passwd").Output()
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(line, ":")
		if strings.HasPrefix(name, h.prefix+"-") {
			if out, err := exec.Command("userdel", name).CombinedOutput(); err != nil {
				h.t.Logf("userdel %s: %v %s", name, err, out)
			}
		}
	}
	exec.Command("groupdel", h.group).Run()
	exec.Command("groupdel", h.authUser).Run()
}

type result struct {
	Stdout, Stderr string
	Code           int
}

func (h *host) run(args ...string) result {
	h.t.Helper()
	cmd := exec.Command(h.bin, append([]string{"--config", h.config}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{Stdout: out.String(), Stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.Code = ee.ExitCode()
	} else if err != nil {
		h.t.Fatalf("running podspawn %v: %v", args, err)
	}
	return r
}

func (h *host) mustRun(args ...string) result {
	h.t.Helper()
	r := h.run(args...)
	if r.Code != 0 {
		h.t.Fatalf("podspawn %v: exit %d\nstdout:\n%s\nstderr:\n%s", args, r.Code, r.Stdout, r.Stderr)
	}
	return r
}

func (h *host) setupArgs(extra ...string) []string {
	return append([]string{"server-setup", "--sshd-config", h.sshdConfig, "--sudoers-file", h.sudoers, "--no-reload"}, extra...)
}

// snapshot is everything server-setup may change, to prove a dry run or
// a refused run changed nothing.
type snapshot struct {
	Files    map[string]string
	Group    string
	AuthUser string
}

func (h *host) snapshot() snapshot {
	s := snapshot{Files: map[string]string{}}
	filepath.Walk(h.root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return nil
		}
		st := fi.Sys().(*syscall.Stat_t)
		v := fmt.Sprintf("%v %d:%d", fi.Mode(), st.Uid, st.Gid)
		if fi.Mode().IsRegular() {
			data, _ := os.ReadFile(p)
			v += " " + string(data)
		}
		s.Files[strings.TrimPrefix(p, h.root)] = v
		return nil
	})
	g, _ := exec.Command("getent", "group", h.group).Output()
	a, _ := exec.Command("getent", "passwd", h.authUser).Output()
	s.Group, s.AuthUser = string(g), string(a)
	return s
}

func ownerMode(t *testing.T, path string) string {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	uname, gname := lookupName("passwd", st.Uid), lookupName("group", st.Gid)
	return fmt.Sprintf("%s %s:%s", fi.Mode(), uname, gname)
}

func lookupName(db string, id uint32) string {
	out, err := exec.Command("getent", db, fmt.Sprint(id)).Output()
	if err != nil {
		return fmt.Sprint(id)
	}
	name, _, _ := strings.Cut(string(out), ":")
	return name
}

func TestServerSetupDryRunThenTwice(t *testing.T) {
	h := newHost(t, "")
	harness.RemoveHostFirewall(t)
	origSSHD, _ := os.ReadFile(h.sshdConfig)

	before := h.snapshot()
	r := h.mustRun(h.setupArgs("--dry-run")...)
	if d := cmp.Diff(before, h.snapshot()); d != "" {
		t.Fatalf("--dry-run changed something (-before +after):\n%s", d)
	}
	if fw := harness.HostFirewallState(t); len(fw) != 0 {
		t.Fatalf("--dry-run installed host access rules: %q", fw)
	}
	for _, want := range []string{"[dry-run] would create group " + h.group, "[dry-run] would create system account " + h.authUser,
		"[dry-run] would install the host access rules (IPv4: chain PODSPAWN-INPUT is missing;",
		"[dry-run] would install " + h.sudoers, "[dry-run] would update " + h.sshdConfig, "  AuthorizedKeysCommandUser " + h.authUser,
		"[dry-run] would not reload sshd (--no-reload)", "[dry-run] nothing was changed"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("dry run output lacks %q:\n%s", want, r.Stdout)
		}
	}

	r = h.mustRun(h.setupArgs()...)
	t.Logf("first run:\n%s", r.Stdout)
	want := []string{
		"group " + h.group + ": created",
		"account " + h.authUser + ": created (system account, no login)",
		"directory " + h.root + "/etc: ok",
		"directory " + h.keyDir + ": created (0750 root:" + h.authUser + ")",
		"directory " + h.stateDir + ": created (0700 root)",
		"directory " + h.stateDir + "/locks: created (0700 root)",
		"directory " + h.stateDir + "/homes: created (0700 root)",
		"config " + h.config + ": ok",
		"host access rules (PODSPAWN-INPUT): " + strings.Join(harness.HostFirewallInstalled(), "; "),
		"sudoers " + h.sudoers + ": installed (checked with visudo)",
		"sshd_config " + h.sshdConfig + ": updated (previous version in " + h.sshdConfig + ".podspawn.bak)",
		"sshd: NOT reloaded (--no-reload); reload sshd to apply the new sshd_config",
		"server-setup complete",
	}
	if d := cmp.Diff(strings.Join(want, "\n")+"\n", r.Stdout); d != "" {
		t.Errorf("first run output (-want +got):\n%s", d)
	}

	// Accounts.
	auth, err := exec.Command("getent", "passwd", h.authUser).Output()
	if err != nil {
		t.Fatalf("auth-keys account missing: %v", err)
	}
	f := strings.Split(strings.TrimSpace(string(auth)), ":")
	if d := cmp.Diff([]string{"podspawn auth-keys", "/nonexistent", "/usr/sbin/nologin"}, f[4:]); d != "" {
		t.Errorf("auth-keys account (-want +got):\n%s", d)
	}
	if _, err := exec.Command("getent", "group", h.group).Output(); err != nil {
		t.Errorf("group %s missing", h.group)
	}

	// Owners and modes of the contract.
	gotModes := map[string]string{}
	for _, p := range []string{h.root + "/etc", h.keyDir, h.stateDir, h.stateDir + "/locks", h.stateDir + "/homes", h.sudoers, h.config} {
		gotModes[p] = ownerMode(t, p)
	}
	wantModes := map[string]string{
		h.root + "/etc": "drwxr-xr-x root:root", h.keyDir: "drwxr-x--- root:" + h.authUser,
		h.stateDir: "drwx------ root:root", h.stateDir + "/locks": "drwx------ root:root", h.stateDir + "/homes": "drwx------ root:root",
		h.sudoers: "-r--r----- root:root", h.config: "-rw-r--r-- root:root",
	}
	if d := cmp.Diff(wantModes, gotModes); d != "" {
		t.Errorf("owners and modes (-want +got):\n%s", d)
	}

	// sudoers: exactly the contract, accepted by visudo.
	sud, _ := os.ReadFile(h.sudoers)
	// The contract's rules; the alias carries the group's name because
	// this is not the default group "podspawn" (see setup.SudoersAlias).
	alias := "PODSPAWN_SPAWN_" + strings.ToUpper(h.group)
	wantSudoers := "Cmnd_Alias " + alias + " = " + h.bin + " --config " + h.config + " spawn\n" +
		"Defaults!" + alias + ` env_keep += "SSH_ORIGINAL_COMMAND PODSPAWN_PROJECT SSH_AUTH_SOCK SSH_CONNECTION SSH_CLIENT TERM"` + "\n" +
		"Defaults!" + alias + " !requiretty\n" +
		"%" + h.group + " ALL=(root) NOPASSWD: " + alias + "\n"
	if d := cmp.Diff(wantSudoers, string(sud)); d != "" {
		t.Errorf("sudoers (-want +got):\n%s", d)
	}
	if out, err := exec.Command("visudo", "-c", "-f", h.sudoers).CombinedOutput(); err != nil {
		t.Errorf("visudo -cf %s: %v\n%s", h.sudoers, err, out)
	}

	// sshd_config: the original, then the block; sshd accepts it and
	// uses podspawn's AuthorizedKeysCommand.
	first, _ := os.ReadFile(h.sshdConfig)
	wantBlock := "# BEGIN podspawn\n" +
		"# Managed by 'podspawn server-setup': this block is rewritten on every run; keep it last in the file.\n" +
		"AuthorizedKeysCommand " + h.bin + " --config " + h.config + " auth-keys %u %t %k\n" +
		"AuthorizedKeysCommandUser " + h.authUser + "\n" +
		"Match Group " + h.group + "\n" +
		"    AuthorizedKeysFile none\n    PasswordAuthentication no\n    KbdInteractiveAuthentication no\n" +
		"    AuthenticationMethods publickey\n    DisableForwarding yes\n    PermitTunnel no\n    X11Forwarding no\n" +
		"    PermitUserRC no\n    AcceptEnv PODSPAWN_PROJECT\n# END podspawn\n"
	if d := cmp.Diff(string(origSSHD)+wantBlock, string(first)); d != "" {
		t.Errorf("sshd_config (-want +got):\n%s", d)
	}
	if bak, _ := os.ReadFile(h.sshdConfig + ".podspawn.bak"); !bytes.Equal(bak, origSSHD) {
		t.Errorf("the backup is not the original sshd_config")
	}
	out, err := exec.Command("sshd", "-T", "-f", h.sshdConfig).CombinedOutput()
	if err != nil {
		t.Fatalf("sshd -T: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "authorizedkeyscommand "+h.bin+" --config "+h.config+" auth-keys %u %t %k\n") {
		t.Errorf("sshd -T does not show podspawn's AuthorizedKeysCommand:\n%s", out)
	}

	// The rules are in place: INPUT's first rule sends the session bridges
	// to the chain.
	fw := harness.HostFirewallState(t)
	for _, want := range []string{"IPv4 INPUT rule 1: -A INPUT -i psp+ -j PODSPAWN-INPUT", "IPv4 -A PODSPAWN-INPUT -j DROP"} {
		if !slices.Contains(fw, want) {
			t.Errorf("host access rules after server-setup lack %q: %q", want, fw)
		}
	}

	// Second run: every step ok, nothing rewritten.
	before = h.snapshot()
	r = h.mustRun(h.setupArgs()...)
	for _, line := range strings.Split(strings.TrimSpace(r.Stdout), "\n") {
		if !strings.HasSuffix(line, ": ok") && line != "server-setup complete" && line != "sshd: ok (sshd_config unchanged, no reload needed)" {
			t.Errorf("second run did something: %q", line)
		}
	}
	if d := cmp.Diff(before, h.snapshot()); d != "" {
		t.Errorf("second run changed files or accounts (-before +after):\n%s", d)
	}
	if d := cmp.Diff(fw, harness.HostFirewallState(t)); d != "" {
		t.Errorf("second run changed the host access rules (-before +after):\n%s", d)
	}
	second, _ := os.ReadFile(h.sshdConfig)
	if !bytes.Equal(first, second) {
		t.Errorf("sshd_config is not byte-identical after the second run")
	}
}

func TestServerSetupWritesDefaultConfigOnlyInDryRunHere(t *testing.T) {
	// A missing config means the defaults, whose group and account are
	// the real podspawn ones: only a dry run is safe here. It must say it
	// would create the config and change nothing.
	h := newHost(t, "")
	missing := filepath.Join(h.root, "fresh", "config.yaml")
	before := h.snapshot()
	cmd := exec.Command(h.bin, "--config", missing, "server-setup", "--sshd-config", h.sshdConfig, "--sudoers-file", h.sudoers, "--dry-run", "--no-reload")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("dry run with a missing config: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "[dry-run] would create "+missing+" with the defaults") {
		t.Errorf("dry run does not announce the default config:\n%s", out)
	}
	if d := cmp.Diff(before, h.snapshot()); d != "" {
		t.Errorf("dry run changed something (-before +after):\n%s", d)
	}
}

func TestServerSetupRestoresWhenAnIncludeWins(t *testing.T) {
	// The copy includes a file that sets another AuthorizedKeysCommand
	// first: sshd accepts the changed file, but would never ask podspawn.
	root := t.TempDir()
	os.Chmod(root, 0o755)
	conflict := filepath.Join(root, "conflict.conf")
	os.WriteFile(conflict, []byte("AuthorizedKeysCommand /usr/bin/true %u\nAuthorizedKeysCommandUser nobody\n"), 0o644)
	h := newHost(t, "Include "+conflict+"\n")
	orig, _ := os.ReadFile(h.sshdConfig)

	r := h.run(h.setupArgs()...)
	if r.Code == 0 {
		t.Fatalf("server-setup succeeded with a conflicting Include:\n%s", r.Stdout)
	}
	for _, want := range []string{"Error: sshd rejected the changed config, so " + h.sshdConfig + " was restored from " + h.sshdConfig + ".podspawn.bak (byte for byte)",
		`sshd would use AuthorizedKeysCommand "/usr/bin/true %u"`} {
		if !strings.Contains(r.Stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.Stderr)
		}
	}
	after, _ := os.ReadFile(h.sshdConfig)
	if !bytes.Equal(orig, after) {
		t.Errorf("sshd_config was not restored byte for byte:\n%s", cmp.Diff(string(orig), string(after)))
	}
	if bak, _ := os.ReadFile(h.sshdConfig + ".podspawn.bak"); !bytes.Equal(orig, bak) {
		t.Errorf("the backup is not the original")
	}
	if fi, _ := os.Stat(h.sshdConfig); fi.Mode().Perm() != 0o644 {
		t.Errorf("restored file mode %o, want 644", fi.Mode().Perm())
	}
}

func TestServerSetupRefusesAnInvalidConfig(t *testing.T) {
	h := newHost(t, "ThisIsNotAnOption yes\n")
	orig, _ := os.ReadFile(h.sshdConfig)
	r := h.run(h.setupArgs()...)
	if r.Code == 0 || !strings.Contains(r.Stderr, "is invalid; fix it before running server-setup (nothing was changed)") ||
		!strings.Contains(r.Stderr, "ThisIsNotAnOption") {
		t.Fatalf("want a refusal naming the bad option, got exit %d\nstderr:\n%s", r.Code, r.Stderr)
	}
	after, _ := os.ReadFile(h.sshdConfig)
	if !bytes.Equal(orig, after) {
		t.Errorf("an invalid sshd_config was modified")
	}
	if _, err := os.Stat(h.sshdConfig + ".podspawn.bak"); err == nil {
		t.Errorf("a backup was written for a refused file")
	}
}

func TestServerSetupRefusesAForeignAuthorizedKeysCommand(t *testing.T) {
	h := newHost(t, "AuthorizedKeysCommand /usr/bin/sss_ssh_authorizedkeys %u\nAuthorizedKeysCommandUser nobody\n")
	orig, _ := os.ReadFile(h.sshdConfig)
	r := h.run(h.setupArgs()...)
	if r.Code == 0 || !strings.Contains(r.Stderr, "line 1 sets its own AuthorizedKeysCommand (/usr/bin/sss_ssh_authorizedkeys %u)") {
		t.Fatalf("want a refusal naming line 1, got exit %d\nstderr:\n%s", r.Code, r.Stderr)
	}
	after, _ := os.ReadFile(h.sshdConfig)
	if !bytes.Equal(orig, after) {
		t.Errorf("sshd_config was modified")
	}
}

// TestServerSetupWithoutSudoSaysWhatIsLeft: with ssh.use_sudo false there
// is no sudoers rule, and spawn runs as each user, who then needs the
// database and the Docker socket. server-setup keeps both root-only and
// must say so rather than leave a setup whose every connection fails.
func TestServerSetupWithoutSudoSaysWhatIsLeft(t *testing.T) {
	h := newHost(t, "")
	f, err := os.OpenFile(h.config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("  use_sudo: false\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()

	r := h.mustRun(h.setupArgs()...)
	for _, want := range []string{
		"sudoers " + h.sudoers + ": skipped (ssh.use_sudo is false)",
		"warning: with ssh.use_sudo false, spawn runs as each SSH user, who needs write access to " + h.stateDir,
		"set ssh.use_sudo: true",
	} {
		if !strings.Contains(r.Stdout, want) {
			t.Fatalf("server-setup output lacks %q:\n%s", want, r.Stdout)
		}
	}
	if _, err := os.Stat(h.sudoers); err == nil {
		t.Errorf("a sudoers file was written with ssh.use_sudo false")
	}
	if fi, err := os.Stat(h.stateDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("state directory: %v, %v; want it kept root-only (0700)", fi, err)
	}
}
