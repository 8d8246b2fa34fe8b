// Package atomicfile replaces files so that a concurrent reader (sshd's
// auth-keys, sudo, a metrics collector, another podspawn) sees the old or
// the new content, never part of a file.
package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// KeepOwner as uid and gid leaves the file owned by the writing process.
const KeepOwner = -1

// Write replaces path with data: a temporary file in the same directory
// gets mode, owner uid:gid (unless both are KeepOwner) and data, is synced,
// and is renamed over path; the directory is then synced so the rename
// survives a crash. On failure path is untouched and no temporary is left.
func Write(path string, data []byte, mode fs.FileMode, uid, gid int) error {
	return WriteChecked(path, data, mode, uid, gid, nil)
}

// WriteChecked is Write that first runs check on the complete temporary
// file (validators such as visudo -c) and leaves path alone when it fails;
// check's error is returned as is.
func WriteChecked(path string, data []byte, mode fs.FileMode, uid, gid int, check func(tmp string) error) error {
	dir := filepath.Dir(path)
	// A dot-file with a dot inside: key listing skips dot-files and sudo's
	// @includedir skips names with a dot, so neither reads a half file.
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".podspawn-tmp-*")
	if err != nil {
		return fail(path, err)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	// CreateTemp makes 0600 and the umask does not apply to Chmod.
	if err := tmp.Chmod(mode); err != nil {
		return fail(path, err)
	}
	if uid != KeepOwner || gid != KeepOwner {
		if err := tmp.Chown(uid, gid); err != nil {
			return fmt.Errorf("setting owner of %s: %w", path, reason(err))
		}
	}
	if _, err := tmp.Write(data); err != nil {
		return fail(path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fail(path, err)
	}
	if err := tmp.Close(); err != nil {
		return fail(path, err)
	}
	if check != nil {
		if err := check(tmp.Name()); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fail(path, err)
	}
	done = true
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

func fail(path string, err error) error {
	return fmt.Errorf("writing %s: %w", path, reason(err))
}

// reason drops the *fs.PathError wrapper: it names the random temporary
// file, which means nothing to the operator; the cause is reported
// against path instead.
func reason(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Err
	}
	return err
}
