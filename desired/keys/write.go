package keys

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/podspawn/podspawn/desired/atomicfile"
)

// Owner is the account the key directory and key files belong to: the
// unprivileged account sshd runs auth-keys as (ssh.auth_keys_user).
type Owner struct{ UID, GID int }

// Modes of the key directory and files: only the auth-keys account (and
// root) may read keys, nobody else may list which users exist.
const (
	DirMode  fs.FileMode = 0o700
	FileMode fs.FileMode = 0o600
)

// EnsureDir creates dir with DirMode owned by o, or corrects the mode and
// owner of an existing one. Missing parents are created 0755 so that the
// auth-keys account can reach dir. It reports whether anything changed.
func EnsureDir(dir string, o Owner) (bool, error) {
	fi, err := os.Lstat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			return false, fmt.Errorf("creating key directory %s: %w", dir, err)
		}
		if err := os.Mkdir(dir, DirMode); err != nil {
			return false, fmt.Errorf("creating key directory %s: %w", dir, err)
		}
		if err := os.Chown(dir, o.UID, o.GID); err != nil {
			return false, fmt.Errorf("setting owner of key directory %s: %w", dir, err)
		}
		// Mkdir is subject to the umask; say the mode exactly.
		return true, os.Chmod(dir, DirMode)
	case err != nil:
		return false, fmt.Errorf("key directory %s: %w", dir, err)
	case !fi.IsDir():
		return false, fmt.Errorf("key directory %s exists but is not a directory (set auth.key_dir to a directory)", dir)
	}
	changed := false
	if uid, gid, ok := owner(fi); !ok || uid != o.UID || gid != o.GID {
		if err := os.Chown(dir, o.UID, o.GID); err != nil {
			return false, fmt.Errorf("setting owner of key directory %s: %w", dir, err)
		}
		changed = true
	}
	if fi.Mode().Perm() != DirMode || fi.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 {
		if err := os.Chmod(dir, DirMode); err != nil {
			return false, fmt.Errorf("setting mode of key directory %s: %w", dir, err)
		}
		changed = true
	}
	return changed, nil
}

// WriteFile replaces user's key file with data atomically (the temporary
// is a dot-file, which ListUsers ignores), so a concurrent reader (sshd's
// auth-keys) sees the old or the new file, never part of one.
func WriteFile(dir, user string, data []byte, o Owner) error {
	path, err := Path(dir, user)
	if err != nil {
		return err
	}
	return atomicfile.Write(path, data, FileMode, o.UID, o.GID)
}

// AddResult says what AddKeys did.
type AddResult struct {
	// Added are the keys appended, in input order.
	Added []Key
	// Skipped are keys already in the file or repeated in the input.
	Skipped []Key
	// Invalid are invalid lines of the existing file; they are kept as
	// they were (the operator's data is never dropped) but never served.
	Invalid []LineError
	// Created is true when the user had no key file before.
	Created bool
}

// AddKeys appends to user's key file the keys it does not hold yet (same
// key blob, whatever the comment or options) and writes the file
// atomically with FileMode, owned by o. Keys are stored without options:
// auth-keys renders its own. When nothing is new the file is not
// rewritten, but its mode and owner are still corrected.
func AddKeys(dir, user string, add []Key, o Owner) (AddResult, error) {
	path, err := Path(dir, user)
	if err != nil {
		return AddResult{}, err
	}
	var res AddResult
	existing, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		res.Created = true
	case err != nil:
		return AddResult{}, fmt.Errorf("reading key file %s (nothing was written): %w", path, err)
	}
	have, invalid := Parse(existing)
	res.Invalid = invalid
	seen := make(map[string]bool, len(have)+len(add))
	for _, k := range have {
		seen[string(k.PublicKey.Marshal())] = true
	}
	var b strings.Builder
	b.Write(existing)
	if len(existing) > 0 && existing[len(existing)-1] != '\n' {
		b.WriteByte('\n')
	}
	for _, k := range add {
		id := string(k.PublicKey.Marshal())
		if seen[id] {
			res.Skipped = append(res.Skipped, k)
			continue
		}
		seen[id] = true
		res.Added = append(res.Added, k)
		b.WriteString(Key{PublicKey: k.PublicKey, Comment: k.Comment}.Authorized())
		b.WriteByte('\n')
	}
	if len(res.Added) == 0 && !res.Created {
		_, err := FixFile(path, o)
		return res, err
	}
	if len(res.Added) == 0 {
		// Nothing to add and no file: do not create an empty one, which
		// would make the user appear in the key directory.
		return res, nil
	}
	return res, WriteFile(dir, user, []byte(b.String()), o)
}

// FixFile corrects the mode and owner of an existing key file and reports
// whether it changed anything.
func FixFile(path string, o Owner) (bool, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return false, fmt.Errorf("key file %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return false, fmt.Errorf("key file %s is not a regular file; remove it or replace it with a file", path)
	}
	changed := false
	if uid, gid, ok := owner(fi); !ok || uid != o.UID || gid != o.GID {
		if err := os.Chown(path, o.UID, o.GID); err != nil {
			return false, fmt.Errorf("setting owner of key file %s: %w", path, err)
		}
		changed = true
	}
	if fi.Mode().Perm() != FileMode || fi.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 {
		if err := os.Chmod(path, FileMode); err != nil {
			return false, fmt.Errorf("setting mode of key file %s: %w", path, err)
		}
		changed = true
	}
	return changed, nil
}

func owner(fi fs.FileInfo) (uid, gid int, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	return int(st.Uid), int(st.Gid), true
}
