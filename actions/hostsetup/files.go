package hostsetup

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

// Owner is a file owner with a name for messages.
type Owner struct {
	Name string
	UID  int
	GID  int
}

// Root owns everything podspawn keeps (the key directory with the
// auth-keys account's group).
var Root = Owner{Name: "root", UID: 0, GID: 0}

func statOwner(fi fs.FileInfo) (int, int) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid), int(st.Gid)
	}
	return -1, -1
}

const specialBits = fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky

// EnsureDir creates path with mode and owner, or corrects an existing
// directory's mode and owner. Missing parents are created 0755 root. A
// symlink to a directory (a state dir moved to another disk) is followed.
func EnsureDir(path string, mode fs.FileMode, o Owner, dryRun bool) (Change, error) {
	c := Change{What: "directory " + path}
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		c.Done = fmt.Sprintf("created (%04o %s)", mode, o.Name)
		c.Would = fmt.Sprintf("create directory %s (%04o %s)", path, mode, o.Name)
		if dryRun {
			return c, nil
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return c, fmt.Errorf("creating %s: %w", filepath.Dir(path), err)
		}
		if err := os.Mkdir(path, mode); err != nil {
			return c, fmt.Errorf("creating directory %s: %w", path, err)
		}
		if err := os.Chown(path, o.UID, o.GID); err != nil {
			return c, fmt.Errorf("setting owner of %s: %w", path, err)
		}
		// Mkdir applies the umask; set the mode exactly.
		if err := os.Chmod(path, mode); err != nil {
			return c, fmt.Errorf("setting mode of %s: %w", path, err)
		}
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("checking directory %s: %w", path, err)
	}
	if !fi.IsDir() {
		return c, fmt.Errorf("%s exists but is not a directory; move it away or point the config at another path", path)
	}
	return fixMode(c, path, fi, mode, o, dryRun)
}

// EnsureFileMode corrects the mode and owner of an existing file (of the
// target, when path is a symlink).
func EnsureFileMode(path string, mode fs.FileMode, o Owner, dryRun bool) (Change, error) {
	c := Change{What: "file " + path}
	fi, err := os.Stat(path)
	if err != nil {
		return c, fmt.Errorf("checking %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return c, fmt.Errorf("%s is not a regular file", path)
	}
	return fixMode(c, path, fi, mode, o, dryRun)
}

func fixMode(c Change, path string, fi fs.FileInfo, mode fs.FileMode, o Owner, dryRun bool) (Change, error) {
	uid, gid := statOwner(fi)
	cur := fi.Mode().Perm() | fi.Mode()&specialBits
	var fixes []string
	if uid != o.UID || gid != o.GID {
		fixes = append(fixes, fmt.Sprintf("owner %d:%d -> %s", uid, gid, o.Name))
	}
	if cur != mode {
		fixes = append(fixes, fmt.Sprintf("mode %s -> %04o", modeString(cur), mode.Perm()))
	}
	if len(fixes) == 0 {
		return c, nil
	}
	c.Done = "fixed " + strings.Join(fixes, ", ")
	c.Would = fmt.Sprintf("fix %s (%s)", path, strings.Join(fixes, ", "))
	if dryRun {
		return c, nil
	}
	if uid != o.UID || gid != o.GID {
		if err := os.Chown(path, o.UID, o.GID); err != nil {
			return c, fmt.Errorf("setting owner of %s: %w", path, err)
		}
	}
	if cur != mode {
		if err := os.Chmod(path, mode); err != nil {
			return c, fmt.Errorf("setting mode of %s: %w", path, err)
		}
	}
	return c, nil
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

// WriteFileAtomic replaces path with data owned by o, so readers (sshd,
// sudo) see the old or the new file, never half.
func WriteFileAtomic(path string, data []byte, mode fs.FileMode, o Owner) error {
	return atomicfile.Write(path, data, mode, o.UID, o.GID)
}

// writeFileChecked is WriteFileAtomic that first runs check on the
// complete temporary file and leaves path alone when check fails.
func writeFileChecked(path string, data []byte, mode fs.FileMode, o Owner, check func(tmp string) error) error {
	return atomicfile.WriteChecked(path, data, mode, o.UID, o.GID, check)
}

// CheckSafePath applies sshd's rule for AuthorizedKeysCommand (and the
// rule that keeps a sudo-run binary or config root's): path and every
// directory above it must be owned by root and not writable by group or
// others. allowSticky accepts sticky world-writable directories such as
// /tmp above path (others cannot rename or replace root's entries there);
// sshd itself does not, so it is false for the binary.
func CheckSafePath(path string, allowSticky bool) error {
	p := filepath.Clean(path)
	for first := true; ; first = false {
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("checking %s: %w", p, err)
		}
		uid, _ := statOwner(fi)
		if uid != 0 {
			return fmt.Errorf("%s is owned by uid %d, not root", p, uid)
		}
		if fi.Mode().Perm()&0o022 != 0 && (first || !allowSticky || fi.Mode()&fs.ModeSticky == 0) {
			return fmt.Errorf("%s is writable by group or others (mode %s)", p, modeString(fi.Mode()))
		}
		if p == "/" {
			return nil
		}
		p = filepath.Dir(p)
	}
}

// CheckReachable says whether account a can read path: every directory
// above it must be searchable and the file readable by a (as owner, by
// its primary group, or as other; supplementary groups are ignored).
func CheckReachable(path string, a Account) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("checking %s: %w", path, err)
	}
	want := fs.FileMode(0o4)
	if fi.IsDir() {
		want = 0o5
	}
	if !permits(fi, a, want) {
		return fmt.Errorf("%s (mode %s) is not readable by %s", path, modeString(fi.Mode()), a.Name)
	}
	for p := filepath.Dir(filepath.Clean(path)); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("checking %s: %w", p, err)
		}
		if !permits(fi, a, 0o1) {
			return fmt.Errorf("directory %s (mode %s) is not searchable by %s", p, modeString(fi.Mode()), a.Name)
		}
		if p == "/" {
			return nil
		}
	}
}

// permits checks the rwx bits want (0-7) for a.
func permits(fi fs.FileInfo, a Account, want fs.FileMode) bool {
	uid, gid := statOwner(fi)
	perm := fi.Mode().Perm()
	switch {
	case uid == a.UID:
		return (perm>>6)&want == want
	case gid == a.GID:
		return (perm>>3)&want == want
	default:
		return perm&want == want
	}
}
