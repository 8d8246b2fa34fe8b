package keys

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/ssh"
)

// testKey derives a deterministic ed25519 public key from seed.
func testKey(t *testing.T, seed byte, comment string) Key {
	t.Helper()
	s := make([]byte, ed25519.SeedSize)
	s[0] = seed
	pk, err := ssh.NewPublicKey(ed25519.NewKeyFromSeed(s).Public())
	if err != nil {
		t.Fatal(err)
	}
	return Key{PublicKey: pk, Comment: comment}
}

func line(k Key) string { return k.Authorized() + "\n" }

// authGID stands for the auth-keys account's group: not root's, so the
// tests see the group change.
const authGID = 65534

// openDir is EnsureDir of a fresh directory, closed at the end.
func openDir(t *testing.T, dir string) *Dir {
	t.Helper()
	d, _, err := EnsureDir(dir, authGID, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func TestAddKeys(t *testing.T) {
	k1, k2, k3 := testKey(t, 1, "one"), testKey(t, 2, "two"), testKey(t, 3, "")
	k1again := testKey(t, 1, "same key, other comment")
	withOpts := k2
	withOpts.Options = []string{`from="10.0.0.1"`}

	type result struct {
		Added, Skipped int
		Invalid        []string
		Created        bool
	}
	cases := map[string]struct {
		existing *string // nil: no file
		add      []Key
		want     result
		wantFile *string // nil: no file
	}{
		"new file": {
			add:      []Key{k1, k2},
			want:     result{Added: 2, Created: true},
			wantFile: ptr(line(k1) + line(k2)),
		},
		"repeated in the input": {
			add:      []Key{k1, k1again, k2},
			want:     result{Added: 2, Skipped: 1, Created: true},
			wantFile: ptr(line(k1) + line(k2)),
		},
		"already in the file, comment differs": {
			existing: ptr(line(k1)),
			add:      []Key{k1again, k3},
			want:     result{Added: 1, Skipped: 1},
			wantFile: ptr(line(k1) + line(k3)),
		},
		"nothing new leaves the file alone": {
			existing: ptr("# keys of alice\n" + line(k1)),
			add:      []Key{k1},
			want:     result{Skipped: 1},
			wantFile: ptr("# keys of alice\n" + line(k1)),
		},
		"options are not stored": {
			add:      []Key{withOpts},
			want:     result{Added: 1, Created: true},
			wantFile: ptr(line(k2)),
		},
		"invalid and commented lines of the file are kept": {
			existing: ptr("# comment\nnot a key\n" + strings.TrimSuffix(line(k1), "\n")),
			add:      []Key{k2},
			want:     result{Added: 1, Invalid: []string{"line 2: not a valid SSH public key: ssh: no key found; last parsing error for ignored line: illegal base64 data at input byte 0"}},
			wantFile: ptr("# comment\nnot a key\n" + line(k1) + line(k2)),
		},
		"no keys and no file creates nothing": {
			add:  nil,
			want: result{Created: true},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "alice")
			if tc.existing != nil {
				if err := os.WriteFile(path, []byte(*tc.existing), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			res, err := openDir(t, dir).AddKeys("alice", tc.add)
			if err != nil {
				t.Fatal(err)
			}
			got := result{Added: len(res.Added), Skipped: len(res.Skipped), Created: res.Created}
			for _, e := range res.Invalid {
				got.Invalid = append(got.Invalid, e.Error())
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("result (-want +got):\n%s", d)
			}
			data, err := os.ReadFile(path)
			if tc.wantFile == nil {
				if !os.IsNotExist(err) {
					t.Fatalf("want no key file, got %q (err %v)", data, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(*tc.wantFile, string(data)); d != "" {
				t.Errorf("file (-want +got):\n%s", d)
			}
			assertOwnerMode(t, path, authGID, FileMode)
			assertNoTemp(t, dir)
		})
	}
}

func ptr(s string) *string { return &s }

// assertOwnerMode checks that root owns path, with group gid and mode.
func assertOwnerMode(t *testing.T, path string, gid int, mode os.FileMode) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	type om struct {
		UID, GID int
		Mode     os.FileMode
	}
	if d := cmp.Diff(om{0, gid, mode}, om{int(st.Uid), int(st.Gid), fi.Mode().Perm()}); d != "" {
		t.Errorf("%s owner/mode (-want +got):\n%s", path, d)
	}
}

func assertNoTemp(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}

func TestAddKeysRefusesBadNames(t *testing.T) {
	dir := t.TempDir()
	d := openDir(t, dir)
	for _, name := range []string{"../x", "Alice", "", "a/b"} {
		if _, err := d.AddKeys(name, []Key{testKey(t, 1, "")}); err == nil || !strings.Contains(err.Error(), "invalid username") {
			t.Errorf("AddKeys(%q): want invalid username error, got %v", name, err)
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 0 {
		t.Errorf("files were written: %v", ents)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "x")); err == nil {
		t.Errorf("../x was written")
	}
}

func TestAddKeysUnreadableFileWritesNothing(t *testing.T) {
	dir := t.TempDir()
	// A directory where the key file should be cannot be read as a file.
	if err := os.Mkdir(filepath.Join(dir, "alice"), 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := openDir(t, dir).AddKeys("alice", []Key{testKey(t, 1, "")})
	if err == nil || !strings.Contains(err.Error(), "nothing was written") {
		t.Fatalf("want a 'nothing was written' error, got %v", err)
	}
	assertNoTemp(t, dir)
}

func TestEnsureDir(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "etc", "keys")
	if d, fix, err := EnsureDir(dir, authGID, true); err != nil || d != nil || !fix.Created {
		t.Fatalf("dry run of a missing dir: %v %+v %v", d, fix, err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("the dry run created the directory: %v", err)
	}
	d, fix, err := EnsureDir(dir, authGID, false)
	if err != nil || !fix.Created || len(fix.Describe("auth")) != 0 {
		t.Fatalf("first EnsureDir: %+v err=%v", fix, err)
	}
	d.Close()
	assertOwnerMode(t, dir, authGID, DirMode)
	// The parent must let the auth-keys account through.
	if fi, _ := os.Stat(filepath.Dir(dir)); fi.Mode().Perm() != 0o755 {
		t.Errorf("parent mode %o, want 755", fi.Mode().Perm())
	}
	d, fix, err = EnsureDir(dir, authGID, false)
	if err != nil || fix.Changed() {
		t.Fatalf("second EnsureDir: %+v err=%v", fix, err)
	}
	d.Close()

	// The older model: the auth-keys account owned it 0700.
	if err := os.Chown(dir, 4321, 4321); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	want := []string{"owner 4321:4321 -> root:auth", "mode 0700 -> 0750"}
	d, fix, err = EnsureDir(dir, authGID, true)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	if diff := cmp.Diff(want, fix.Describe("auth")); diff != "" {
		t.Errorf("dry run (-want +got):\n%s", diff)
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 || fi.Sys().(*syscall.Stat_t).Uid != 4321 {
		t.Errorf("the dry run changed the directory")
	}
	d, fix, err = EnsureDir(dir, authGID, false)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	if diff := cmp.Diff(want, fix.Describe("auth")); diff != "" {
		t.Errorf("migration (-want +got):\n%s", diff)
	}
	assertOwnerMode(t, dir, authGID, DirMode)

	file := filepath.Join(root, "file")
	os.WriteFile(file, nil, 0o600)
	if _, _, err := EnsureDir(file, authGID, false); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("EnsureDir on a file: want 'not a directory', got %v", err)
	}
	link := filepath.Join(root, "link")
	os.Symlink(dir, link)
	if _, _, err := EnsureDir(link, authGID, false); err == nil || !strings.Contains(err.Error(), "is a symbolic link") {
		t.Errorf("EnsureDir on a link: want 'is a symbolic link', got %v", err)
	}
}

// TestWriteFileAtomic replaces the file 100 times while a reader keeps
// reading it: every read must be one complete version, never a mix or a
// truncated file.
func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	pool := make([]string, 250)
	for j := range pool {
		pool[j] = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(testKey(t, byte(j+1), "").PublicKey)))
	}
	versions := make([]string, 100)
	valid := map[string]bool{}
	for i := range versions {
		var b strings.Builder
		// Versions of different sizes (up to ~30 KiB) so that a torn or
		// truncated write would show as a length no version has.
		for j := 0; j <= i*3; j++ {
			fmt.Fprintf(&b, "%s v%d-k%d\n", pool[j%len(pool)], i, j)
		}
		versions[i] = b.String()
		valid[versions[i]] = true
	}
	d := openDir(t, dir)
	if err := d.WriteFile("alice", []byte(versions[0])); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "alice")

	stop := make(chan struct{})
	started := make(chan struct{})
	var wg sync.WaitGroup
	var reads int
	var bad []string
	wg.Add(1)
	go func() {
		defer wg.Done()
		for first := true; ; first = false {
			data, err := os.ReadFile(path)
			reads++
			if err != nil {
				bad = append(bad, "read error: "+err.Error())
			} else if !valid[string(data)] {
				bad = append(bad, fmt.Sprintf("partial content of %d bytes", len(data)))
			}
			if first {
				close(started)
			}
			select {
			case <-stop:
				return
			default:
			}
		}
	}()
	<-started
	for _, v := range versions[1:] {
		if err := d.WriteFile("alice", []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if len(bad) > 0 {
		t.Fatalf("%d of %d reads saw a broken file, first: %s", len(bad), reads, bad[0])
	}
	data, _ := os.ReadFile(path)
	if string(data) != versions[len(versions)-1] {
		t.Errorf("final content is not the last version")
	}
	assertOwnerMode(t, path, authGID, FileMode)
	assertNoTemp(t, dir)
	t.Logf("%d reads during 99 replacements, all complete", reads)
}

func TestFixFile(t *testing.T) {
	dir := t.TempDir()
	d := openDir(t, dir)
	path := filepath.Join(dir, "alice")
	os.WriteFile(path, []byte("x\n"), 0o644)
	os.Chown(path, 4321, 4321)
	syscall.Chmod(path, 0o4644)
	want := []string{"owner 4321:4321 -> root:auth", "mode 4644 -> 0640"}
	fix, err := d.FixFile("alice", true)
	if diff := cmp.Diff(want, fix.Describe("auth")); err != nil || diff != "" {
		t.Fatalf("FixFile dry run: err=%v (-want +got):\n%s", err, diff)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o644 {
		t.Fatalf("the dry run changed the mode")
	}
	fix, err = d.FixFile("alice", false)
	if diff := cmp.Diff(want, fix.Describe("auth")); err != nil || diff != "" {
		t.Fatalf("FixFile: err=%v (-want +got):\n%s", err, diff)
	}
	assertOwnerMode(t, path, authGID, FileMode)
	if fix, err := d.FixFile("alice", false); err != nil || fix.Changed() {
		t.Fatalf("second FixFile: %+v err=%v", fix, err)
	}
	if fi, _ := os.Stat(path); fi.Mode()&os.ModeSetuid != 0 {
		t.Errorf("the setuid bit survived")
	}
}

// TestRootNeverFollowsAnEntry plants, where a key file goes, what the
// account that owned the directory under the older model could put
// there. Root must refuse, leave the entry as it is, and neither read
// nor change what it points at.
func TestRootNeverFollowsAnEntry(t *testing.T) {
	cases := map[string]struct {
		plant func(t *testing.T, entry, target string)
		what  string
	}{
		"symlink to a root-only file": {
			plant: func(t *testing.T, entry, target string) { must(t, os.Symlink(target, entry)) },
			what:  "is a symbolic link",
		},
		"dangling symlink": {
			plant: func(t *testing.T, entry, target string) { must(t, os.Symlink(target+".missing", entry)) },
			what:  "is a symbolic link",
		},
		"hard link to a root-only file": {
			plant: func(t *testing.T, entry, target string) { must(t, os.Link(target, entry)) },
			what:  "has 2 hard links",
		},
		"fifo": {
			plant: func(t *testing.T, entry, target string) { must(t, syscall.Mkfifo(entry, 0o600)) },
			what:  "is not a regular file",
		},
	}
	ops := map[string]func(d *Dir, user string) error{
		"AddKeys": func(d *Dir, user string) error {
			_, err := d.AddKeys(user, []Key{testKey(t, 1, "")})
			return err
		},
		"FixFile": func(d *Dir, user string) error {
			_, err := d.FixFile(user, false)
			return err
		},
		"ReadFile": func(d *Dir, user string) error {
			_, err := d.ReadFile(user)
			return err
		},
	}
	for name, tc := range cases {
		for opName, op := range ops {
			t.Run(name+"/"+opName, func(t *testing.T) {
				root := t.TempDir()
				target := filepath.Join(root, "secret")
				must(t, os.WriteFile(target, []byte("root's secret\n"), 0o600))
				dir := filepath.Join(root, "keys")
				must(t, os.Mkdir(dir, 0o700))
				entry := filepath.Join(dir, "zqc")
				tc.plant(t, entry, target)
				before := describe(t, target) + " / " + describe(t, entry)
				d := openDir(t, dir)

				err := op(d, "zqc")
				var nr *NotRegularError
				if !errors.As(err, &nr) || !strings.Contains(err.Error(), tc.what) || !strings.Contains(err.Error(), "rm "+entry) {
					t.Fatalf("got %v, want a refusal saying the entry %s and how to remove it", err, tc.what)
				}
				if strings.Contains(err.Error(), "secret") {
					t.Errorf("the error shows the target's content: %v", err)
				}
				if after := describe(t, target) + " / " + describe(t, entry); after != before {
					t.Errorf("target or entry changed:\nbefore %s\nafter  %s", before, after)
				}
				assertNoTemp(t, dir)
			})
		}
	}
}

// describe is an entry's type, mode, owner and (for a file) content,
// without following a link.
func describe(t *testing.T, p string) string {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	s := fmt.Sprintf("%v %d:%d", fi.Mode(), st.Uid, st.Gid)
	if fi.Mode().IsRegular() {
		data, _ := os.ReadFile(p)
		s += fmt.Sprintf(" %q", data)
	}
	return s
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestWriteFileReplacesALinkWithoutFollowingIt(t *testing.T) {
	root := t.TempDir()
	target := filepath.Join(root, "secret")
	must(t, os.WriteFile(target, []byte("root's secret\n"), 0o600))
	dir := filepath.Join(root, "keys")
	must(t, os.Mkdir(dir, 0o700))
	must(t, os.Symlink(target, filepath.Join(dir, "zqc")))
	before := describe(t, target)
	k := testKey(t, 1, "")
	if err := openDir(t, dir).WriteFile("zqc", []byte(line(k))); err != nil {
		t.Fatal(err)
	}
	if after := describe(t, target); after != before {
		t.Errorf("target changed: %s -> %s", before, after)
	}
	assertOwnerMode(t, filepath.Join(dir, "zqc"), authGID, FileMode)
}

func TestRemove(t *testing.T) {
	root := t.TempDir()
	target := filepath.Join(root, "secret")
	must(t, os.WriteFile(target, []byte("x"), 0o600))
	dir := filepath.Join(root, "keys")
	must(t, os.Mkdir(dir, 0o700))
	must(t, os.Symlink(target, filepath.Join(dir, "zqc")))
	must(t, os.WriteFile(filepath.Join(dir, "alice"), []byte("x"), 0o600))
	must(t, os.Mkdir(filepath.Join(dir, "bob"), 0o700))
	d := openDir(t, dir)
	for user, want := range map[string]string{"zqc": "", "alice": "", "carol": "file does not exist", "bob": "is a directory, not a key file", "../x": "invalid username"} {
		err := d.Remove(user)
		if (want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), want)) {
			t.Errorf("Remove(%s) = %v, want %q", user, err, want)
		}
	}
	if _, err := os.Stat(target); err != nil {
		t.Errorf("removing the link removed its target: %v", err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || ents[0].Name() != "bob" {
		t.Errorf("left in the directory: %v", ents)
	}
}
