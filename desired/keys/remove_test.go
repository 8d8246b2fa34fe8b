package keys

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// Dir.Remove's cases are TestRemove's; this is the wrapper: it opens the
// directory without following a link and takes a missing file for done.
func TestRemoveUserKeyFile(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "keys")
	must(t, os.Mkdir(dir, 0o700))
	must(t, os.WriteFile(filepath.Join(dir, "alice"), []byte("x"), 0o600))
	must(t, os.WriteFile(filepath.Join(dir, "bob"), []byte("x"), 0o600))

	for i := 0; i < 2; i++ {
		if err := Remove(dir, "alice"); err != nil {
			t.Fatalf("Remove(alice) #%d = %v, want nil", i+1, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(dir, "alice")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("alice's key file after Remove: %v, want it gone", err)
	}

	link := filepath.Join(root, "link")
	must(t, os.Symlink(dir, link))
	if err := Remove(link, "bob"); err == nil {
		t.Fatal("Remove through a symlinked key directory succeeded")
	}
	if _, err := os.Lstat(filepath.Join(dir, "bob")); err != nil {
		t.Fatalf("bob's key file after a refused removal: %v", err)
	}
}
