package keys_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/ssh"

	"github.com/podspawn/podspawn/desired/keys"
)

var (
	rsaOnce sync.Once
	rsaKey  ssh.PublicKey
)

// pubKey returns a freshly generated public key of kind.
func pubKey(t *testing.T, kind string) ssh.PublicKey {
	t.Helper()
	var raw any
	switch kind {
	case "ed25519":
		pub, _, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		raw = pub
	case "rsa":
		rsaOnce.Do(func() {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			if rsaKey, err = ssh.NewPublicKey(&k.PublicKey); err != nil {
				panic(err)
			}
		})
		return rsaKey
	case "p256", "p384":
		curve := elliptic.P256()
		if kind == "p384" {
			curve = elliptic.P384()
		}
		k, err := ecdsa.GenerateKey(curve, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		raw = &k.PublicKey
	}
	pk, err := ssh.NewPublicKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	return pk
}

// authorized renders pk as "type base64".
func authorized(pk ssh.PublicKey) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk)))
}

// parsed is the comparable view of a keys.Key.
type parsed struct {
	Line    int
	Key     string
	Comment string
	Options []string
}

func view(ks []keys.Key) []parsed {
	var out []parsed
	for _, k := range ks {
		out = append(out, parsed{Line: k.Line, Key: authorized(k.PublicKey), Comment: k.Comment, Options: k.Options})
	}
	return out
}

// errViews renders invalid lines up to the parser's verdict; what the ssh
// package appends after it varies by version.
func errViews(bad []keys.LineError) []string {
	var out []string
	for _, b := range bad {
		msg, _, _ := strings.Cut(b.Error(), "; last parsing error")
		out = append(out, msg)
	}
	return out
}

func TestParse(t *testing.T) {
	ed, rsaPK, p256, p384, ed2 := pubKey(t, "ed25519"), pubKey(t, "rsa"), pubKey(t, "p256"), pubKey(t, "p384"), pubKey(t, "ed25519")
	edType, edData, _ := strings.Cut(authorized(ed), " ")
	lines := []string{
		/* 1 */ "# alice's keys",
		/* 2 */ "",
		/* 3 */ authorized(ed) + " alice@laptop",
		/* 4 */ `from="10.0.0.1",no-pty ` + authorized(ed2) + " with options",
		/* 5 */ "   " + authorized(rsaPK),
		/* 6 */ "this is not a key",
		/* 7 */ authorized(p256) + " two words",
		/* 8 */ edType + " " + edData[:20] + "!!!",
		/* 9 */ authorized(p384) + " crlf\r",
		/* 10 */ "\t# indented comment",
		/* 11 */ `command="echo a,b; exit",no-port-forwarding ` + authorized(ed) + " forced",
		/* 12 */ "ssh-ed25519",
		/* 13 */ " \t ",
		/* 14 */ authorized(ed2), // last line, no newline
	}
	ks, bad := keys.Parse([]byte(strings.Join(lines, "\n")))

	want := []parsed{
		{Line: 3, Key: authorized(ed), Comment: "alice@laptop"},
		{Line: 4, Key: authorized(ed2), Comment: "with options", Options: []string{`from="10.0.0.1"`, "no-pty"}},
		{Line: 5, Key: authorized(rsaPK)},
		{Line: 7, Key: authorized(p256), Comment: "two words"},
		{Line: 9, Key: authorized(p384), Comment: "crlf"},
		{Line: 11, Key: authorized(ed), Comment: "forced", Options: []string{`command="echo a,b; exit"`, "no-port-forwarding"}},
		{Line: 14, Key: authorized(ed2)},
	}
	if diff := cmp.Diff(want, view(ks)); diff != "" {
		t.Fatalf("keys (-want +got):\n%s", diff)
	}
	wantBad := []string{
		"line 6: not a valid SSH public key: ssh: no key found",
		"line 8: not a valid SSH public key: ssh: no key found",
		"line 12: not a valid SSH public key: ssh: no key found",
	}
	if diff := cmp.Diff(wantBad, errViews(bad)); diff != "" {
		t.Fatalf("invalid lines (-want +got):\n%s", diff)
	}
	for _, b := range bad {
		if b.Err == nil {
			t.Fatalf("line %d has no cause", b.Line)
		}
	}
	for i, wantType := range []string{"ssh-ed25519", "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384"} {
		if got := ks[i].PublicKey.Type(); got != wantType {
			t.Errorf("key %d type %s, want %s", i, got, wantType)
		}
	}
}

func TestParseEmptyAndCommentOnly(t *testing.T) {
	for _, data := range []string{"", "\n\n", "# nothing here\n  # still nothing\n"} {
		ks, bad := keys.Parse([]byte(data))
		if len(ks) != 0 || len(bad) != 0 {
			t.Errorf("Parse(%q) = %v, %v; want nothing", data, ks, bad)
		}
	}
}

func TestAuthorizedDropsOptionsKeepsComment(t *testing.T) {
	ed := pubKey(t, "ed25519")
	ks, bad := keys.Parse([]byte(`no-pty,from="1.2.3.4" ` + authorized(ed) + " me@host\n" + authorized(ed) + "\n"))
	if len(bad) != 0 || len(ks) != 2 {
		t.Fatalf("Parse = %v, %v", ks, bad)
	}
	if got, want := ks[0].Authorized(), authorized(ed)+" me@host"; got != want {
		t.Errorf("Authorized() = %q, want %q", got, want)
	}
	if got, want := ks[1].Authorized(), authorized(ed); got != want {
		t.Errorf("Authorized() without a comment = %q, want %q (no trailing space)", got, want)
	}
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestListUsers(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{
		"alice", "bob", "carol_2", "d-e", "z" + strings.Repeat("x", 31), // valid
		".hidden", ".alice.swp", "Alice", "bob.bak", "alice~", "1abc", "_x", "-x", "README.md", "z" + strings.Repeat("x", 32), // not users
	} {
		writeFile(t, filepath.Join(dir, name), "")
	}
	for _, d := range []string{"dave", ".git"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	got, err := keys.ListUsers(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"alice", "bob", "carol_2", "d-e", "z" + strings.Repeat("x", 31)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("users (-want +got):\n%s", diff)
	}
}

func TestListUsersEmptyDirIsNoUsers(t *testing.T) {
	got, err := keys.ListUsers(t.TempDir())
	if err != nil || len(got) != 0 {
		t.Fatalf("ListUsers(empty) = %v, %v; want no users and no error", got, err)
	}
}

// A key directory that cannot be read must never look like "no users":
// every session would then be reaped as belonging to a removed user.
func TestListUsersUnreadableDirIsAnError(t *testing.T) {
	base := t.TempDir()
	notDir := filepath.Join(base, "file")
	writeFile(t, notDir, "")
	cases := map[string]struct {
		dir  string
		want []string
		is   error
	}{
		"missing":         {filepath.Join(base, "nope"), []string{"key directory " + filepath.Join(base, "nope") + " does not exist", "server-setup", "auth.key_dir"}, fs.ErrNotExist},
		"not a directory": {notDir, []string{"reading key directory " + notDir}, nil},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			users, err := keys.ListUsers(tc.dir)
			if err == nil || users != nil {
				t.Fatalf("ListUsers = %v, %v; want an error", users, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
		})
	}
}

func TestPath(t *testing.T) {
	dir := t.TempDir()
	got, err := keys.Path(dir, "alice")
	if err != nil || got != filepath.Join(dir, "alice") {
		t.Fatalf("Path(alice) = %q, %v", got, err)
	}
	for _, bad := range []string{"../config.yaml", "a/b", "", "Alice", ".", "..", "alice/", "/etc/passwd", "al ice", "alice\n", "ali\x00ce", "a" + strings.Repeat("b", 32)} {
		p, err := keys.Path(dir, bad)
		if err == nil || p != "" || !strings.Contains(err.Error(), "invalid username") {
			t.Errorf("Path(%q) = %q, %v; want an invalid username error", bad, p, err)
		}
	}
}

func TestRead(t *testing.T) {
	dir := t.TempDir()
	ed := pubKey(t, "ed25519")
	writeFile(t, filepath.Join(dir, "alice"), "# alice\n"+authorized(ed)+" laptop\nnot a key\n")
	if err := os.Mkdir(filepath.Join(dir, "carol"), 0o700); err != nil {
		t.Fatal(err)
	}

	uf, err := keys.Read(dir, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if uf.Name != "alice" || uf.ReadErr != nil {
		t.Fatalf("UserFile = %+v", uf)
	}
	if diff := cmp.Diff([]parsed{{Line: 2, Key: authorized(ed), Comment: "laptop"}}, view(uf.Keys)); diff != "" {
		t.Fatalf("keys (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"line 3: not a valid SSH public key: ssh: no key found"}, errViews(uf.Invalid)); diff != "" {
		t.Fatalf("invalid (-want +got):\n%s", diff)
	}

	if _, err := keys.Read(dir, "bob"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Read(bob) error = %v, want not-exist", err)
	}
	if _, err := keys.Read(dir, "../alice"); err == nil || !strings.Contains(err.Error(), "invalid username") {
		t.Fatalf("Read(../alice) error = %v, want an invalid username error", err)
	}
	uf, err = keys.Read(dir, "carol")
	if err != nil || uf.ReadErr == nil || uf.Name != "carol" {
		t.Fatalf("Read(carol, a directory) = %+v, %v; want the read error reported in the file", uf, err)
	}
	// Key files are plain files: a link is not followed, a FIFO does not
	// hang the reader.
	if err := os.Symlink(filepath.Join(dir, "alice"), filepath.Join(dir, "dave")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "erin"), 0o600); err != nil {
		t.Fatal(err)
	}
	for user, want := range map[string]string{"dave": "is a symbolic link (not followed)", "erin": "is not a regular file"} {
		uf, err = keys.Read(dir, user)
		if err != nil || uf.ReadErr == nil || !strings.Contains(uf.ReadErr.Error(), want) || len(uf.Keys) != 0 {
			t.Errorf("Read(%s) = %+v, %v; want ReadErr %q", user, uf, err, want)
		}
	}
}
