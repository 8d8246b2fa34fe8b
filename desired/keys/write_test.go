package keys

import (
	"crypto/ed25519"
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

// nobody is an owner other than root, so the tests see chown happen.
var nobody = Owner{UID: 65534, GID: 65534}

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
			res, err := AddKeys(dir, "alice", tc.add, nobody)
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
			assertOwnerMode(t, path, nobody, FileMode)
			assertNoTemp(t, dir)
		})
	}
}

func ptr(s string) *string { return &s }

func assertOwnerMode(t *testing.T, path string, o Owner, mode os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	type om struct {
		UID, GID int
		Mode     os.FileMode
	}
	if d := cmp.Diff(om{o.UID, o.GID, mode}, om{int(st.Uid), int(st.Gid), fi.Mode().Perm()}); d != "" {
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
	for _, name := range []string{"../x", "Alice", "", "a/b"} {
		if _, err := AddKeys(dir, name, []Key{testKey(t, 1, "")}, nobody); err == nil || !strings.Contains(err.Error(), "invalid username") {
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
	_, err := AddKeys(dir, "alice", []Key{testKey(t, 1, "")}, nobody)
	if err == nil || !strings.Contains(err.Error(), "nothing was written") {
		t.Fatalf("want a 'nothing was written' error, got %v", err)
	}
	assertNoTemp(t, dir)
}

func TestEnsureDir(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "etc", "keys")
	changed, err := EnsureDir(dir, nobody)
	if err != nil || !changed {
		t.Fatalf("first EnsureDir: changed=%v err=%v", changed, err)
	}
	assertOwnerMode(t, dir, nobody, DirMode)
	// The parent must let the auth-keys account through.
	if fi, _ := os.Stat(filepath.Dir(dir)); fi.Mode().Perm() != 0o755 {
		t.Errorf("parent mode %o, want 755", fi.Mode().Perm())
	}
	changed, err = EnsureDir(dir, nobody)
	if err != nil || changed {
		t.Fatalf("second EnsureDir: changed=%v err=%v", changed, err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 0, 0); err != nil {
		t.Fatal(err)
	}
	changed, err = EnsureDir(dir, nobody)
	if err != nil || !changed {
		t.Fatalf("EnsureDir of a loose dir: changed=%v err=%v", changed, err)
	}
	assertOwnerMode(t, dir, nobody, DirMode)

	file := filepath.Join(root, "file")
	os.WriteFile(file, nil, 0o600)
	if _, err := EnsureDir(file, nobody); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("EnsureDir on a file: want 'not a directory', got %v", err)
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
	if err := WriteFile(dir, "alice", []byte(versions[0]), nobody); err != nil {
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
		if err := WriteFile(dir, "alice", []byte(v), nobody); err != nil {
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
	assertOwnerMode(t, path, nobody, FileMode)
	assertNoTemp(t, dir)
	t.Logf("%d reads during 99 replacements, all complete", reads)
}

func TestFixFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "alice")
	os.WriteFile(path, []byte("x\n"), 0o644)
	changed, err := FixFile(path, nobody)
	if err != nil || !changed {
		t.Fatalf("FixFile: changed=%v err=%v", changed, err)
	}
	assertOwnerMode(t, path, nobody, FileMode)
	if changed, err := FixFile(path, nobody); err != nil || changed {
		t.Fatalf("second FixFile: changed=%v err=%v", changed, err)
	}
}
