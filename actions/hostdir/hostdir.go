// Package hostdir makes and removes the host directories that session
// containers bind-mount (forwarded agent sockets, persistent homes). Their
// content is the user's, so root acts on them only through directory
// handles opened without following links (openat, mkdirat, fchown,
// fchownat with AT_SYMLINK_NOFOLLOW, unlinkat): a link planted in one is
// reported or removed, never followed.
package hostdir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Dir is an open directory handle.
type Dir struct {
	fd   int
	path string // for messages only
}

// Open opens path as a directory; a link as its last element is refused.
// The elements before it are resolved normally: they are the admin's
// (configured paths), never the user's.
func Open(path string) (*Dir, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if fi, lerr := os.Lstat(path); lerr == nil && fi.Mode()&os.ModeSymlink != 0 {
			err = unix.ELOOP
		}
		return nil, describe(path, err)
	}
	return &Dir{fd: fd, path: path}, nil
}

// Path is the path the handle was opened with.
func (d *Dir) Path() string { return d.path }

// Fd is the handle's descriptor (valid until Close).
func (d *Dir) Fd() int { return d.fd }

// Close closes the handle.
func (d *Dir) Close() error { return unix.Close(d.fd) }

// Sub creates (if missing) and opens the directory name inside d with
// mode for a new one. An existing entry that is not a directory, a link
// included, is an error naming it.
func (d *Dir) Sub(name string, mode uint32) (*Dir, bool, error) {
	if name == "" || name == "." || name == ".." || filepath.Base(name) != name {
		return nil, false, fmt.Errorf("invalid directory name %q in %s", name, d.path)
	}
	created := true
	if err := unix.Mkdirat(d.fd, name, mode); err != nil {
		if !errors.Is(err, unix.EEXIST) {
			return nil, false, fmt.Errorf("creating %s: %w", filepath.Join(d.path, name), err)
		}
		created = false
	}
	fd, err := unix.Openat(d.fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	p := filepath.Join(d.path, name)
	if err != nil {
		// O_DIRECTORY reports a link as "not a directory": say what it is.
		var st unix.Stat_t
		if unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
			err = unix.ELOOP
		}
		return nil, false, describe(p, err)
	}
	sub := &Dir{fd: fd, path: p}
	if created {
		// mkdirat's mode is cut by the umask.
		if err := unix.Fchmod(fd, mode); err != nil {
			sub.Close()
			return nil, false, fmt.Errorf("chmod %s: %w", p, err)
		}
	}
	return sub, created, nil
}

// Lstat describes the entry name inside d without following it.
func (d *Dir) Lstat(name string) (unix.Stat_t, error) {
	var st unix.Stat_t
	err := unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	return st, err
}

// Stat describes the directory itself.
func (d *Dir) Stat() (unix.Stat_t, error) {
	var st unix.Stat_t
	err := unix.Fstat(d.fd, &st)
	return st, err
}

// Chown sets the directory's owner and mode through its handle.
func (d *Dir) Chown(uid, gid int, mode uint32) error {
	if err := unix.Fchown(d.fd, uid, gid); err != nil {
		return fmt.Errorf("chown %s: %w", d.path, err)
	}
	if err := unix.Fchmod(d.fd, mode); err != nil {
		return fmt.Errorf("chmod %s: %w", d.path, err)
	}
	return nil
}

// ChownEntry sets the owner of the entry name inside d without following
// it if it is a link.
func (d *Dir) ChownEntry(name string, uid, gid int) error {
	if err := unix.Fchownat(d.fd, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown %s: %w", filepath.Join(d.path, name), err)
	}
	return nil
}

// ProcPath is a path to the entry name inside d that resolves through
// the handle (for calls that only take a path, such as bind(2)).
func (d *Dir) ProcPath(name string) string {
	return fmt.Sprintf("/proc/self/fd/%d/%s", d.fd, name)
}

// RemoveAll removes the entry name inside d and, for a directory,
// everything below it, never following a link (os.RemoveAll on Linux
// works with openat/unlinkat and O_NOFOLLOW below its argument; the
// argument resolves through d's handle). A missing entry is no error.
func (d *Dir) RemoveAll(name string) error {
	if name == "" || name == "." || name == ".." || filepath.Base(name) != name {
		return fmt.Errorf("invalid entry name %q in %s", name, d.path)
	}
	if err := os.RemoveAll(d.ProcPath(name)); err != nil {
		return fmt.Errorf("removing %s: %w", filepath.Join(d.path, name), err)
	}
	return nil
}

// Usage sums the (apparent) sizes of the regular files below d,
// never following links.
func (d *Dir) Usage() (int64, error) {
	return usage(d.fd, d.path, 0)
}

func usage(fd int, path string, depth int) (int64, error) {
	if depth > 256 {
		return 0, fmt.Errorf("%s: directories nested too deep", path)
	}
	dup, err := unix.Dup(fd)
	if err != nil {
		return 0, err
	}
	f := os.NewFile(uintptr(dup), path)
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", path, err)
	}
	var total int64
	for _, n := range names {
		var st unix.Stat_t
		if err := unix.Fstatat(fd, n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			continue // removed meanwhile
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			total += st.Size
		case unix.S_IFDIR:
			sub, err := unix.Openat(fd, n, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				continue
			}
			size, err := usage(sub, filepath.Join(path, n), depth+1)
			unix.Close(sub)
			if err != nil {
				return 0, err
			}
			total += size
		}
	}
	return total, nil
}

// describe turns the errors of opening a directory without following
// links into messages that say what was found.
func describe(path string, err error) error {
	switch {
	case errors.Is(err, unix.ELOOP):
		return fmt.Errorf("%s is a symbolic link; podspawn does not follow links there: remove it", path)
	case errors.Is(err, unix.ENOTDIR):
		return fmt.Errorf("%s is not a directory; remove it", path)
	}
	return fmt.Errorf("opening %s: %w", path, err)
}
