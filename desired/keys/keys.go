// Package keys reads and writes the key directory: one file per user, in
// authorized_keys format. The set of files is the set of users who may log in.
package keys

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/podspawn/podspawn/desired"
)

// Key is one valid public key line.
type Key struct {
	// Line is the 1-based line number in the file.
	Line int
	// PublicKey is the parsed key; Options the options the line carried
	// (they are dropped when podspawn renders its own options).
	PublicKey ssh.PublicKey
	Comment   string
	Options   []string
}

// Authorized renders the key as type and base64 data, plus the comment.
func (k Key) Authorized() string {
	s := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k.PublicKey)))
	if k.Comment != "" {
		s += " " + k.Comment
	}
	return s
}

// LineError is an invalid line of a key file.
type LineError struct {
	Line int
	Err  error
}

func (e LineError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }

// Parse splits authorized_keys data into valid keys and invalid lines.
// Blank lines and # comments are neither.
func Parse(data []byte) ([]Key, []LineError) {
	var ks []Key
	var bad []LineError
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		pk, comment, opts, rest, err := ssh.ParseAuthorizedKey([]byte(line))
		if err != nil {
			bad = append(bad, LineError{Line: n, Err: fmt.Errorf("not a valid SSH public key: %w", err)})
			continue
		}
		if len(bytes.TrimSpace(rest)) > 0 {
			bad = append(bad, LineError{Line: n, Err: errors.New("more than one key on the line")})
			continue
		}
		ks = append(ks, Key{Line: n, PublicKey: pk, Comment: comment, Options: opts})
	}
	if err := sc.Err(); err != nil {
		bad = append(bad, LineError{Line: n + 1, Err: err})
	}
	return ks, bad
}

// UserFile is one user's key file as read.
type UserFile struct {
	Name    string
	Keys    []Key
	Invalid []LineError
	// ReadErr is set when the file exists but could not be read.
	ReadErr error
}

// Path returns the key file of user, refusing names that are not valid
// user names (so "../config.yaml" never becomes a path).
func Path(dir, user string) (string, error) {
	if err := desired.ValidateUserName(user); err != nil {
		return "", err
	}
	return filepath.Join(dir, user), nil
}

// ListUsers returns the users of the key directory, sorted. Directories,
// dot-files and names that are not valid user names are skipped. A
// missing or unreadable directory is an error: callers must never take it
// for "no users" and destroy every session.
func ListUsers(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("key directory %s does not exist (run 'podspawn server-setup' or set auth.key_dir): %w", dir, err)
		}
		return nil, fmt.Errorf("reading key directory %s: %w", dir, err)
	}
	var users []string
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || strings.HasPrefix(name, ".") || desired.ValidateUserName(name) != nil {
			continue
		}
		users = append(users, name)
	}
	sort.Strings(users)
	return users, nil
}

// Read reads one user's key file. Key files are plain files: a link is
// not followed and, like a FIFO or a directory, is a ReadErr.
func Read(dir, user string) (UserFile, error) {
	p, err := Path(dir, user)
	if err != nil {
		return UserFile{}, err
	}
	uf := UserFile{Name: user}
	data, err := readNoFollow(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return UserFile{}, err
		}
		uf.ReadErr = err
		return uf, nil
	}
	uf.Keys, uf.Invalid = Parse(data)
	return uf, nil
}

func readNoFollow(p string) ([]byte, error) {
	// O_NONBLOCK: a FIFO must not hang the open (it is refused below).
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil, &fs.PathError{Op: "open", Path: p, Err: unix.ENOENT}
	case errors.Is(err, unix.ELOOP):
		return nil, &fs.PathError{Op: "open", Path: p, Err: errors.New("is a symbolic link (not followed)")}
	case err != nil:
		return nil, &fs.PathError{Op: "open", Path: p, Err: err}
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, &fs.PathError{Op: "stat", Path: p, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, &fs.PathError{Op: "open", Path: p, Err: errors.New("is not a regular file")}
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		return nil, &fs.PathError{Op: "open", Path: p, Err: err}
	}
	return io.ReadAll(f)
}
