package keys

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// The key directory belongs to root; sshd's AuthorizedKeysCommand runs as
// the unprivileged ssh.auth_keys_user and reads it through that account's
// group. Nobody else may list which users exist.
const (
	DirMode  fs.FileMode = 0o750
	FileMode fs.FileMode = 0o640
)

// Dir is an open key directory. Root changes it only through the handle
// (openat, renameat, unlinkat with O_NOFOLLOW, fchown and fchmod on open
// files), never by path: a link or a swapped entry in the directory, left
// by whoever could write it under the old ownership model, is never
// followed.
type Dir struct {
	path string
	fd   int
	// gid is the auth-keys account's group, which gets read access.
	gid int
}

// Close releases the handle.
func (d *Dir) Close() error { return unix.Close(d.fd) }

// Fix is what EnsureDir or FixFile found wrong and corrected (in a dry
// run, would correct).
type Fix struct {
	// Created: EnsureDir made the directory.
	Created bool
	// UID, GID and Mode (permission and special bits) as found.
	UID, GID int
	Mode     fs.FileMode
	// BadOwner and BadMode say what differed from root:<group> and
	// WantMode.
	BadOwner, BadMode bool
	WantMode          fs.FileMode
}

// Changed reports whether anything was (or would be) done.
func (f Fix) Changed() bool { return f.Created || f.BadOwner || f.BadMode }

// Describe lists the corrections, naming the auth-keys group: "owner
// 1001:1001 -> root:podspawn-auth", "mode 0700 -> 0750".
func (f Fix) Describe(group string) []string {
	var s []string
	if f.BadOwner {
		s = append(s, fmt.Sprintf("owner %d:%d -> root:%s", f.UID, f.GID, group))
	}
	if f.BadMode {
		s = append(s, fmt.Sprintf("mode %s -> %04o", modeString(f.Mode), f.WantMode.Perm()))
	}
	return s
}

func modeString(m fs.FileMode) string {
	v := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		v |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		v |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		v |= 0o1000
	}
	return fmt.Sprintf("%04o", v)
}

// check compares st with root:gid and want.
func check(st *unix.Stat_t, gid int, want fs.FileMode) Fix {
	m := fs.FileMode(st.Mode & 0o777)
	if st.Mode&unix.S_ISUID != 0 {
		m |= fs.ModeSetuid
	}
	if st.Mode&unix.S_ISGID != 0 {
		m |= fs.ModeSetgid
	}
	if st.Mode&unix.S_ISVTX != 0 {
		m |= fs.ModeSticky
	}
	return Fix{UID: int(st.Uid), GID: int(st.Gid), Mode: m, WantMode: want,
		BadOwner: st.Uid != 0 || int(st.Gid) != gid, BadMode: m != want}
}

// apply corrects owner, then mode, on the open descriptor fd. Owner
// first: until then the mode may still give the old owner access, never
// a group that is not yet the auth-keys group.
func apply(fd int, f Fix, gid int, what string) error {
	if f.BadOwner {
		if err := unix.Fchown(fd, 0, gid); err != nil {
			return fmt.Errorf("setting owner of %s: %w", what, err)
		}
	}
	if f.BadMode || f.BadOwner { // chown clears setuid/setgid bits; set the mode exactly
		if err := unix.Fchmod(fd, uint32(f.WantMode.Perm())); err != nil {
			return fmt.Errorf("setting mode of %s: %w", what, err)
		}
	}
	return nil
}

// EnsureDir creates path root-owned with group gid and DirMode, or takes
// an existing directory back to that owner and mode (the migration from
// the older model, where the auth-keys account owned it 0700). Missing
// parents are created 0755 so that the auth-keys account can reach path.
// With dryRun nothing changes; the returned Dir is nil when the directory
// does not exist yet. The caller closes the Dir.
func EnsureDir(path string, gid int, dryRun bool) (*Dir, Fix, error) {
	fix := Fix{WantMode: DirMode}
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		fix.Created = true
		if dryRun {
			return nil, fix, nil
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, fix, fmt.Errorf("creating key directory %s: %w", path, err)
		}
		// Mode 0 until the handle has set owner and mode: nobody else can
		// enter the directory meanwhile.
		if err := os.Mkdir(path, 0); err != nil {
			return nil, fix, fmt.Errorf("creating key directory %s: %w", path, err)
		}
	case err != nil:
		return nil, fix, fmt.Errorf("key directory %s: %w", path, err)
	case fi.Mode()&fs.ModeSymlink != 0:
		return nil, fix, fmt.Errorf("key directory %s is a symbolic link; podspawn does not follow links there: set auth.key_dir to the real directory", path)
	case !fi.IsDir():
		return nil, fix, fmt.Errorf("key directory %s exists but is not a directory (set auth.key_dir to a directory)", path)
	}
	d, err := open(path, gid)
	if err != nil {
		return nil, fix, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(d.fd, &st); err != nil {
		d.Close()
		return nil, fix, fmt.Errorf("key directory %s: %w", path, err)
	}
	found := check(&st, gid, DirMode)
	found.Created = fix.Created
	if dryRun {
		return d, found, nil
	}
	if err := apply(d.fd, found, gid, "key directory "+path); err != nil {
		d.Close()
		return nil, found, err
	}
	if found.Created {
		// A new directory reports its creation, not the fixes of mode 0.
		found = fix
	}
	return d, found, nil
}

// OpenDir opens an existing key directory for reading and removing key
// files, without changing its owner or mode.
func OpenDir(path string) (*Dir, error) { return open(path, -1) }

func open(path string, gid int) (*Dir, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("key directory %s does not exist (run 'podspawn server-setup' or set auth.key_dir): %w", path, fs.ErrNotExist)
		}
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			return nil, fmt.Errorf("key directory %s is not a directory or is a symbolic link; set auth.key_dir to the real directory", path)
		}
		return nil, fmt.Errorf("opening key directory %s: %w", path, err)
	}
	return &Dir{path: path, fd: fd, gid: gid}, nil
}

// NotRegularError is a key file that root refuses to touch: a symbolic
// link, a file with other hard links, or something other than a file.
type NotRegularError struct {
	Path, What string
}

func (e *NotRegularError) Error() string {
	return fmt.Sprintf("key file %s %s; podspawn never follows or changes such an entry as root: inspect it, remove it (rm %s) and run again",
		e.Path, e.What, e.Path)
}

// openFile opens user's key file read-only without following a link and
// checks it is a plain file with one name. ENOENT is returned as
// fs.ErrNotExist.
func (d *Dir) openFile(user string) (*os.File, unix.Stat_t, error) {
	var st unix.Stat_t
	p, err := Path(d.path, user)
	if err != nil {
		return nil, st, err
	}
	// O_NONBLOCK: a FIFO must not hang the open (it is refused below).
	fd, err := unix.Openat(d.fd, user, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil, st, fs.ErrNotExist
	case errors.Is(err, unix.ELOOP):
		return nil, st, &NotRegularError{Path: p, What: "is a symbolic link"}
	case err != nil:
		return nil, st, fmt.Errorf("opening key file %s: %w", p, err)
	}
	f := os.NewFile(uintptr(fd), p)
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, st, fmt.Errorf("key file %s: %w", p, err)
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		f.Close()
		return nil, st, &NotRegularError{Path: p, What: "is not a regular file"}
	case st.Nlink != 1:
		// Another name of the same file may be outside the directory
		// (/etc/shadow): chown or copying it would hand it over.
		f.Close()
		return nil, st, &NotRegularError{Path: p, What: fmt.Sprintf("has %d hard links", st.Nlink)}
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		f.Close()
		return nil, st, fmt.Errorf("key file %s: %w", p, err)
	}
	return f, st, nil
}

// ReadFile reads user's key file through the handle; a missing file is
// fs.ErrNotExist, a link or anything but a plain file a *NotRegularError.
func (d *Dir) ReadFile(user string) ([]byte, error) {
	f, _, err := d.openFile(user)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("reading key file %s: %w", f.Name(), reason(err))
	}
	return data, nil
}

// WriteFile replaces user's key file with data atomically: a dot-file
// temporary (ListUsers ignores dot-files) is created with O_EXCL in the
// directory, given owner and mode through its descriptor, synced and
// renamed over the name, so a concurrent reader (sshd's auth-keys) sees
// the old or the new file, never part of one. A link at the name is
// replaced, never followed.
func (d *Dir) WriteFile(user string, data []byte) error {
	p, err := Path(d.path, user)
	if err != nil {
		return err
	}
	var tmp string
	var fd int
	for range 10 {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return err
		}
		tmp = "." + user + ".podspawn-tmp-" + hex.EncodeToString(b[:])
		fd, err = unix.Openat(d.fd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if !errors.Is(err, unix.EEXIST) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("writing key file %s: %w", p, err)
	}
	f := os.NewFile(uintptr(fd), tmp)
	done := false
	defer func() {
		if !done {
			f.Close()
			unix.Unlinkat(d.fd, tmp, 0)
		}
	}()
	if err := unix.Fchown(fd, 0, d.gid); err != nil {
		return fmt.Errorf("setting owner of key file %s: %w", p, err)
	}
	// Fchmod: the umask applied to the open's mode.
	if err := unix.Fchmod(fd, uint32(FileMode)); err != nil {
		return fmt.Errorf("setting mode of key file %s: %w", p, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("writing key file %s: %w", p, reason(err))
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("writing key file %s: %w", p, reason(err))
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing key file %s: %w", p, reason(err))
	}
	if err := unix.Renameat(d.fd, tmp, d.fd, user); err != nil {
		return fmt.Errorf("writing key file %s: %w", p, err)
	}
	done = true
	// The rename survives a crash once the directory is synced.
	unix.Fsync(d.fd)
	return nil
}

// Remove deletes user's key file (or whatever entry has its name, a link
// included, without following it). A missing file is fs.ErrNotExist.
func (d *Dir) Remove(user string) error {
	p, err := Path(d.path, user)
	if err != nil {
		return err
	}
	err = unix.Unlinkat(d.fd, user, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		return fs.ErrNotExist
	case errors.Is(err, unix.EISDIR):
		return fmt.Errorf("%s is a directory, not a key file", p)
	case err != nil:
		return fmt.Errorf("removing key file %s: %w", p, err)
	}
	unix.Fsync(d.fd)
	return nil
}

// FixFile gives user's existing key file root as owner, the auth-keys
// group and FileMode, through the open file, and says what it found
// wrong (with dryRun it changes nothing). Links and files with more than
// one name are refused with a *NotRegularError.
func (d *Dir) FixFile(user string, dryRun bool) (Fix, error) {
	f, st, err := d.openFile(user)
	if err != nil {
		return Fix{}, err
	}
	defer f.Close()
	fix := check(&st, d.gid, FileMode)
	if dryRun {
		return fix, nil
	}
	return fix, apply(int(f.Fd()), fix, d.gid, "key file "+f.Name())
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
// key blob, whatever the comment or options) and replaces the file
// atomically. Keys are stored without options: auth-keys renders its own.
// When nothing is new the file is not rewritten, but its owner and mode
// are still corrected. A link or a file with other names at user's name
// is refused (*NotRegularError) and left as it is.
func (d *Dir) AddKeys(user string, add []Key) (AddResult, error) {
	p, err := Path(d.path, user)
	if err != nil {
		return AddResult{}, err
	}
	var res AddResult
	existing, err := d.ReadFile(user)
	var nr *NotRegularError
	switch {
	case errors.Is(err, fs.ErrNotExist):
		res.Created = true
	case errors.As(err, &nr):
		return AddResult{}, fmt.Errorf("%w (nothing was written)", err)
	case err != nil:
		return AddResult{}, fmt.Errorf("reading key file %s (nothing was written): %w", p, err)
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
		_, err := d.FixFile(user, false)
		return res, err
	}
	if len(res.Added) == 0 {
		// Nothing to add and no file: do not create an empty one, which
		// would make the user appear in the key directory.
		return res, nil
	}
	return res, d.WriteFile(user, []byte(b.String()))
}

// reason drops the *fs.PathError wrapper, which names the temporary or
// the descriptor rather than the key file the message is about.
func reason(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
