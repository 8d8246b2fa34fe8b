package hostdir_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/podspawn/podspawn/actions/hostdir"
)

// A link planted where a directory is expected is refused by name, and
// nothing is created or changed behind it.
func TestSubRefusesLinks(t *testing.T) {
	root, outside := t.TempDir(), t.TempDir()
	if err := os.Symlink(outside, filepath.Join(root, "home")); err != nil {
		t.Fatal(err)
	}
	d, err := hostdir.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, _, err := d.Sub("home", 0o700); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("Sub through a link: err = %v, want a refusal naming the link", err)
	}
	if _, err := hostdir.Open(filepath.Join(root, "home")); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("Open of a link: err = %v", err)
	}
	for _, bad := range []string{"", ".", "..", "a/b"} {
		if _, _, err := d.Sub(bad, 0o700); err == nil {
			t.Errorf("Sub(%q) accepted", bad)
		}
	}
}

// Usage counts regular files below the directory only; RemoveAll removes
// links and keeps what they point to.
func TestUsageAndRemoveAllDoNotFollowLinks(t *testing.T) {
	root, outside := t.TempDir(), t.TempDir()
	write := func(p string, n int) {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, make([]byte, n), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(root, "u", "a"), 100)
	write(filepath.Join(root, "u", "p", "b"), 20)
	write(filepath.Join(outside, "big"), 5000)
	if err := os.Symlink(outside, filepath.Join(root, "u", "link")); err != nil {
		t.Fatal(err)
	}
	d, err := hostdir.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	u, created, err := d.Sub("u", 0o700)
	if err != nil || created {
		t.Fatalf("Sub(u) = created %v, err %v; want the existing directory", created, err)
	}
	n, err := u.Usage()
	u.Close()
	if err != nil || n != 120 {
		t.Fatalf("Usage = %d, %v; want 120", n, err)
	}
	if err := d.RemoveAll("u"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(root, "u")); !os.IsNotExist(err) {
		t.Fatalf("u still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(outside, "big")); err != nil {
		t.Fatalf("RemoveAll followed the link: %v", err)
	}
}
