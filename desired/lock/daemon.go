package lock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// DaemonName is the file, in the state directory, that the cleanup
// daemon holds an flock on while it runs. It contains the daemon's pid as
// decimal text and a newline (doctor reads it).
const DaemonName = "cleanup-daemon.lock"

// DaemonPath returns the daemon lock of a state directory.
func DaemonPath(stateDir string) string { return filepath.Join(stateDir, DaemonName) }

// Daemon is the held single-daemon lock.
type Daemon struct {
	f    *os.File
	path string
}

// ErrDaemonRunning is returned when another daemon holds the lock.
var ErrDaemonRunning = errors.New("another cleanup daemon is running")

// AcquireDaemon takes the host's daemon lock without waiting and
// writes this process's pid into it. The file is never removed: removing a
// locked file would let a second daemon lock a new inode.
func AcquireDaemon(path string) (*Daemon, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating state directory for %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening daemon lock %s: %w", path, err)
	}
	// doctor probes the lock with a shared flock for an instant; a few
	// short retries keep that probe from failing a daemon's start.
	for attempt := 1; ; attempt++ {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == unix.EINTR {
			continue
		}
		if err != unix.EWOULDBLOCK || attempt == 5 {
			break
		}
		time.Sleep(time.Duration(attempt) * 20 * time.Millisecond)
	}
	if err == unix.EWOULDBLOCK {
		f.Close()
		pid, _, _ := DaemonHolder(path)
		who := "pid unknown"
		if pid > 0 {
			who = "pid " + strconv.Itoa(pid)
		}
		return nil, fmt.Errorf("%w (%s, lock %s); stop it first, or run a one-shot 'podspawn cleanup' beside it", ErrDaemonRunning, who, path)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("writing pid to %s: %w", path, err)
	}
	return &Daemon{f: f, path: path}, nil
}

// Path is the lock file.
func (l *Daemon) Path() string { return l.path }

// Release empties the pid and unlocks. Safe to call on nil.
func (l *Daemon) Release() {
	if l == nil || l.f == nil {
		return
	}
	l.f.Truncate(0)
	unix.Flock(int(l.f.Fd()), unix.LOCK_UN)
	l.f.Close()
	l.f = nil
}

// DaemonHolder reports whether a daemon holds the lock at path and, if
// so, its pid (0 when the file has no valid pid yet). A missing file means
// no daemon.
func DaemonHolder(path string) (pid int, running bool, err error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	defer f.Close()
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB)
		if err != unix.EINTR {
			break
		}
	}
	switch {
	case err == nil:
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
		return 0, false, nil
	case err != unix.EWOULDBLOCK:
		return 0, false, fmt.Errorf("checking %s: %w", path, err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, true, err
	}
	pid, perr := strconv.Atoi(strings.TrimSpace(string(data)))
	if perr != nil || pid <= 0 {
		return 0, true, nil
	}
	return pid, true, nil
}
