package setup

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	gossh "golang.org/x/crypto/ssh"
)

// newKey returns a fresh public key line with comment.
func newKey(t *testing.T, comment string) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := gossh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(gossh.MarshalAuthorizedKey(pk))) + " " + comment
}

func (h *host) writeFile(name, content string) string {
	p := filepath.Join(h.root, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		h.t.Fatal(err)
	}
	return p
}

func getent(t *testing.T, db, key string) string {
	out, err := exec.Command("getent", db, key).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

func field(line string, i int) string {
	f := strings.Split(line, ":")
	if i >= len(f) {
		return ""
	}
	return f[i]
}

// setUp runs server-setup so that the group and the auth-keys account exist.
func setUp(t *testing.T) *host {
	h := newHost(t, "")
	h.mustRun(h.setupArgs()...)
	return h
}

func TestAddUser(t *testing.T) {
	h := setUp(t)
	alice := h.user("alice")
	k1, k2 := newKey(t, "alice@laptop"), newKey(t, "alice@desktop, with a comma")
	file := h.writeFile("alice.pub", "# alice's keys\n"+k1+"\n\n")

	r := h.mustRun("add-user", alice, "--key-file", file, "--key", k2, "--key", k1)
	want := "created host account " + alice + " (group " + h.group + ", shell /bin/sh, no home, key logins only)\n" +
		"added 2 key(s) for " + alice + "\n" +
		"skipped 1 duplicate key(s)\n"
	if d := cmp.Diff(want, r.Stdout); d != "" {
		t.Errorf("output (-want +got):\n%s", d)
	}
	keyFile := filepath.Join(h.keyDir, alice)
	data, _ := os.ReadFile(keyFile)
	if d := cmp.Diff(k2+"\n"+k1+"\n", string(data)); d != "" {
		t.Errorf("key file (-want +got):\n%s", d)
	}
	if d := cmp.Diff("-rw-r----- root:"+h.authUser, ownerMode(t, keyFile)); d != "" {
		t.Errorf("key file owner/mode (-want +got):\n%s", d)
	}
	if d := cmp.Diff("drwxr-x--- root:"+h.authUser, ownerMode(t, h.keyDir)); d != "" {
		t.Errorf("key dir owner/mode (-want +got):\n%s", d)
	}

	// The host account: in the group, shell /bin/sh, no home, password "*"
	// (not locked with "!", so sshd accepts key logins even with UsePAM no).
	pw := getent(t, "passwd", alice)
	if d := cmp.Diff([]string{"podspawn user", "/", "/bin/sh"}, strings.Split(pw, ":")[4:]); d != "" {
		t.Errorf("account (-want +got):\n%s", d)
	}
	if got := field(getent(t, "shadow", alice), 1); got != "*" {
		t.Errorf("password field %q, want * (unlocked for keys, no password)", got)
	}
	// passwd -S prints L for both "!" and "*"; it cannot tell them apart,
	// so the shadow field above is the real check. Logged for the record.
	st, _ := exec.Command("passwd", "-S", alice).CombinedOutput()
	t.Logf("passwd -S: %s", st)
	groups, _ := exec.Command("id", "-nG", alice).Output()
	if !strings.Contains(" "+strings.TrimSpace(string(groups))+" ", " "+h.group+" ") {
		t.Errorf("%s is not in group %s: %s", alice, h.group, groups)
	}

	// Again: nothing new, nothing rewritten.
	r = h.mustRun("add-user", alice, "--key", k1, "--key-file", file)
	want = "host account " + alice + ": ok\nadded 0 key(s) for " + alice + "\nskipped 2 duplicate key(s)\n"
	if d := cmp.Diff(want, r.Stdout); d != "" {
		t.Errorf("second run output (-want +got):\n%s", d)
	}
	if again, _ := os.ReadFile(keyFile); string(again) != string(data) {
		t.Errorf("second run changed the key file")
	}

	// A new key is appended; stdin works as a key file.
	k3 := newKey(t, "alice@phone")
	cmd := exec.Command(h.bin, "--config", h.config, "add-user", alice, "--key-file", "-")
	cmd.Stdin = strings.NewReader(k3 + "\n")
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "added 1 key(s) for "+alice) {
		t.Fatalf("add-user from stdin: %v\n%s", err, out)
	}
	data, _ = os.ReadFile(keyFile)
	if d := cmp.Diff(k2+"\n"+k1+"\n"+k3+"\n", string(data)); d != "" {
		t.Errorf("key file after stdin (-want +got):\n%s", d)
	}
}

func TestAddUserRefusesInvalidKeysAndWritesNothing(t *testing.T) {
	h := setUp(t)
	bob, carol := h.user("bob"), h.user("carol")
	good := newKey(t, "good")
	bad := h.writeFile("bad.pub", good+"\nssh-ed25519 AAAAnotbase64!! broken\n# comment\nhello world\n")

	// A new user: no account, no key file.
	r := h.run("add-user", bob, "--key-file", bad, "--key", newKey(t, "fine"))
	if r.Code != 1 {
		t.Fatalf("exit %d, want 1\n%s", r.Code, r.Stderr)
	}
	for _, want := range []string{"refusing to add keys for " + bob + ", nothing was written", bad + ":2: not a valid SSH public key", bad + ":4: not a valid SSH public key"} {
		if !strings.Contains(r.Stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.Stderr)
		}
	}
	if strings.Contains(r.Stderr, bad+":1:") || strings.Contains(r.Stderr, bad+":3:") {
		t.Errorf("valid or comment lines reported as invalid:\n%s", r.Stderr)
	}
	if _, err := os.Stat(filepath.Join(h.keyDir, bob)); err == nil {
		t.Errorf("a key file was written for %s", bob)
	}
	if getent(t, "passwd", bob) != "" {
		t.Errorf("an account was created for %s", bob)
	}

	// An existing user: the key file stays byte for byte.
	h.mustRun("add-user", carol, "--key", good)
	before, _ := os.ReadFile(filepath.Join(h.keyDir, carol))
	r = h.run("add-user", carol, "--key", newKey(t, "new"), "--key", "ssh-rsa AAAA")
	if r.Code != 1 || !strings.Contains(r.Stderr, "--key #2: not a valid SSH public key") {
		t.Fatalf("want --key #2 refused, got exit %d\n%s", r.Code, r.Stderr)
	}
	after, _ := os.ReadFile(filepath.Join(h.keyDir, carol))
	if string(before) != string(after) {
		t.Errorf("a refused add-user changed the key file")
	}

	// A file name passed to --key gets a hint.
	r = h.run("add-user", carol, "--key", bad)
	if r.Code != 1 || !strings.Contains(r.Stderr, "use --key-file") {
		t.Errorf("no --key-file hint: exit %d\n%s", r.Code, r.Stderr)
	}
	r = h.run("add-user", carol, "--key-file", filepath.Join(h.root, "missing.pub"))
	if r.Code != 1 || !strings.Contains(r.Stderr, "missing.pub: no such file or directory") {
		t.Errorf("missing key file: exit %d\n%s", r.Code, r.Stderr)
	}
	r = h.run("add-user", carol, "--key-file", h.writeFile("empty.pub", "# nothing\n"))
	if r.Code != 1 || !strings.Contains(r.Stderr, "empty.pub: no public keys in the file") {
		t.Errorf("empty key file: exit %d\n%s", r.Code, r.Stderr)
	}
}

func TestAddUserRefusesBadNames(t *testing.T) {
	h := setUp(t)
	key := newKey(t, "x")
	cases := map[string]string{
		"../x":     `invalid username "../x"`,
		"Alice":    `invalid username "Alice"`,
		"a b":      `invalid username "a b"`,
		"root":     "refusing to make root a podspawn user",
		"daemon":   "refusing to make daemon a podspawn user: it is a system account (uid 1 < 1000)",
		h.authUser: "refusing to make " + h.authUser + " a podspawn user: it is a system account",
	}
	for name, want := range cases {
		r := h.run("add-user", name, "--key", key)
		if r.Code != 1 || !strings.Contains(r.Stderr, want) {
			t.Errorf("add-user %q: exit %d, want an error containing %q:\n%s", name, r.Code, want, r.Stderr)
		}
	}
	if r := h.run("add-user", h.user("dan")); r.Code != 1 || !strings.Contains(r.Stderr, "at least one --key or --key-file is required") {
		t.Errorf("no key source: exit %d\n%s", r.Code, r.Stderr)
	}
	ents, _ := os.ReadDir(h.keyDir)
	if len(ents) != 0 {
		t.Errorf("key files were written: %v", ents)
	}
	if _, err := os.Stat(filepath.Join(h.root, "etc", "x")); err == nil {
		t.Errorf("../x escaped the key directory")
	}
}

func TestAddUserNoAccount(t *testing.T) {
	h := setUp(t)
	erin := h.user("erin")
	r := h.mustRun("add-user", erin, "--no-account", "--key", newKey(t, "erin"))
	if d := cmp.Diff("added 1 key(s) for "+erin+"\n", r.Stdout); d != "" {
		t.Errorf("output (-want +got):\n%s", d)
	}
	if getent(t, "passwd", erin) != "" {
		t.Errorf("--no-account created an account")
	}
}

func TestAddUserAdoptsExistingAccounts(t *testing.T) {
	h := setUp(t)
	key := newKey(t, "k")

	// Locked with "!" and no password (plain useradd), not in the group.
	bob := h.user("bob")
	if out, err := exec.Command("useradd", "--no-create-home", "--shell", "/bin/sh", bob).CombinedOutput(); err != nil {
		t.Fatalf("useradd: %v %s", err, out)
	}
	if got := field(getent(t, "shadow", bob), 1); got != "!" {
		t.Fatalf("precondition: password field %q, want !", got)
	}
	r := h.mustRun("add-user", bob, "--key", key)
	want := "adopted host account " + bob + ": added to group " + h.group + ", unlocked for key logins\n" +
		"note: " + bob + " is an existing host account: as a member of group " + h.group +
		" it now logs in over SSH only into its podspawn container (no host shell, no ~/.ssh/authorized_keys, no password)\n" +
		"added 1 key(s) for " + bob + "\n"
	if d := cmp.Diff(want, r.Stdout); d != "" {
		t.Errorf("output (-want +got):\n%s", d)
	}
	if got := field(getent(t, "shadow", bob), 1); got != "*" {
		t.Errorf("password field %q, want *", got)
	}
	groups, _ := exec.Command("id", "-nG", bob).Output()
	if !strings.Contains(string(groups), h.group) {
		t.Errorf("%s not in %s: %s", bob, h.group, groups)
	}
	// The account itself is otherwise untouched.
	if got := strings.Split(getent(t, "passwd", bob), ":")[4:]; got[0] != "" || got[2] != "/bin/sh" {
		t.Errorf("adoption changed the account: %v", got)
	}

	// A real password that is locked: never changed, the operator is told.
	carol := h.user("carol")
	exec.Command("useradd", "--no-create-home", "--shell", "/bin/bash", carol).Run()
	const hash = "!$6$saltsalt$QmVhFCWZBsBLe6OmcRc3Y5YMrHxSlUcjTNmlNX7wbpdXXqV3dkKtzJ6dKHF3xnKZHxwVhPBTDuzFeUPlrHHQ6."
	if out, err := exec.Command("usermod", "-p", hash, carol).CombinedOutput(); err != nil {
		t.Fatalf("usermod: %v %s", err, out)
	}
	r = h.mustRun("add-user", carol, "--key", key)
	if !strings.Contains(r.Stdout, "adopted host account "+carol+": added to group "+h.group+"\n") ||
		!strings.Contains(r.Stdout, "note: "+carol+" has a locked password (passwd -l); podspawn never changes a real password") {
		t.Errorf("output:\n%s", r.Stdout)
	}
	if got := field(getent(t, "shadow", carol), 1); got != hash {
		t.Errorf("the real password was changed to %q", got)
	}
}

// TestAddUserNeverFollowsALinkInTheKeyDir is the attack of issue 12: the
// auth-keys account plants a symlink to a root-only file where a user's
// key file goes, then root runs add-user for that name. Root must neither
// read nor change the target.
func TestAddUserNeverFollowsALinkInTheKeyDir(t *testing.T) {
	h := setUp(t)
	zqc := h.user("zqc")
	secret := filepath.Join(h.root, "secret")
	if err := os.WriteFile(secret, []byte("root's secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	before := h.snapshotOf(secret)
	link := filepath.Join(h.keyDir, zqc)
	// As the auth-keys account, which could write the directory before
	// podspawn took it back.
	plant := exec.Command("setpriv", "--reuid", h.authUser, "--regid", h.authUser, "--clear-groups", "ln", "-s", secret, link)
	if err := os.Chown(h.keyDir, uidOf(t, h.authUser), gidOf(t, h.authUser)); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(h.keyDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := plant.CombinedOutput(); err != nil {
		t.Fatalf("planting the link as %s: %v %s", h.authUser, err, out)
	}

	r := h.run("add-user", zqc, "--no-account", "--key-file", h.writeFile("zqc.pub", newKey(t, "zqc")+"\n"))
	if d := cmp.Diff(before, h.snapshotOf(secret)); d != "" {
		t.Errorf("add-user changed the link's target (-before +after):\n%s", d)
	}
	if r.Code != 1 || !strings.Contains(r.Stderr, "is a symbolic link") {
		t.Errorf("add-user through a planted link: exit %d, want 1 and a refusal naming the link\nstdout:\n%s\nstderr:\n%s", r.Code, r.Stdout, r.Stderr)
	}
	if strings.Contains(r.Stdout+r.Stderr, "root's secret") {
		t.Errorf("the target's content reached the output")
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the link was not left for the operator to inspect: %v %v", fi, err)
	}
	// The directory was taken back from the auth-keys account all the same.
	if d := cmp.Diff("drwxr-x--- root:"+h.authUser, ownerMode(t, h.keyDir)); d != "" {
		t.Errorf("key dir owner/mode (-want +got):\n%s", d)
	}

	// Removing the link by hand lets add-user proceed.
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	h.mustRun("add-user", zqc, "--no-account", "--key", newKey(t, "zqc"))
	if d := cmp.Diff("-rw-r----- root:"+h.authUser, ownerMode(t, link)); d != "" {
		t.Errorf("key file owner/mode (-want +got):\n%s", d)
	}
}

// snapshotOf is a file's mode, owner and content.
func (h *host) snapshotOf(p string) string {
	h.t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		h.t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	data, err := os.ReadFile(p)
	if err != nil {
		h.t.Fatal(err)
	}
	return fmt.Sprintf("%v %d:%d %q", fi.Mode(), st.Uid, st.Gid, data)
}

func uidOf(t *testing.T, name string) int {
	t.Helper()
	n, err := strconv.Atoi(field(getent(t, "passwd", name), 2))
	if err != nil {
		t.Fatalf("uid of %s: %v", name, err)
	}
	return n
}

func gidOf(t *testing.T, name string) int {
	t.Helper()
	n, err := strconv.Atoi(field(getent(t, "passwd", name), 3))
	if err != nil {
		t.Fatalf("gid of %s: %v", name, err)
	}
	return n
}
