// Package audit appends podspawn's audit log: one JSON object per line,
// in a root-owned 0600 file that several processes append to at once
// (spawn per connection, admin commands, the cleanup daemon). Each record
// is a single write(2) on an O_APPEND descriptor, so lines of different
// processes never interleave. A file renamed away by logrotate is noticed
// before the next write and the path is opened again.
package audit

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
)

// Event names.
const (
	SessionConnect    = "session.connect"
	SessionDisconnect = "session.disconnect"
	SessionCreate     = "session.create"
	SessionDestroy    = "session.destroy"
	AuthDenied        = "auth.denied"
	// HomePurge: remove-user --purge-home deleted a persistent home.
	HomePurge = "home.purge"
	// AdminPrefix is followed by the command's name (admin.stop).
	AdminPrefix = "admin."
)

// ActorController is the actor of what the controller does on its own
// (deadlines, orphans, crash loops).
const ActorController = "controller"

// Outcomes of admin commands.
const (
	OutcomeSuccess = "success"
	OutcomeFailure = "failure"
)

// Event is one audit record. The first five fields are always written
// (empty when not known, e.g. the user of add-project); the rest only
// when set. Time is set by Write when zero.
type Event struct {
	Time    time.Time `json:"time"`
	Event   string    `json:"event"`
	User    string    `json:"user"`
	Project string    `json:"project"`
	Session string    `json:"session"`

	Actor     string `json:"actor,omitempty"`
	Reason    string `json:"reason,omitempty"`
	Container string `json:"container,omitempty"`

	// Connections.
	Lease            int64  `json:"lease,omitempty"`
	Client           string `json:"client,omitempty"`
	Kind             string `json:"kind,omitempty"`
	Command          string `json:"command,omitempty"`
	CommandTruncated bool   `json:"command_truncated,omitempty"`
	ExitCode         *int   `json:"exit_code,omitempty"`
	DurationMS       *int64 `json:"duration_ms,omitempty"`

	// Admin commands.
	Args    []string `json:"args,omitempty"`
	Outcome string   `json:"outcome,omitempty"`
	Error   string   `json:"error,omitempty"`
}

// Writer appends events to one file. A nil *Writer, or one with no path,
// is disabled: Write does nothing and returns nil.
type Writer struct {
	path string
	log  logr.Logger
	now  func() time.Time

	mu sync.Mutex
	f  *os.File
}

// Open opens (creating it 0600 if missing) the audit log at path; an
// empty path gives a disabled writer. The error says what to fix.
func Open(path string, log logr.Logger) (*Writer, error) {
	w := &Writer{path: path, log: log, now: time.Now}
	if path == "" {
		return w, nil
	}
	if err := w.reopen(); err != nil {
		return nil, err
	}
	return w, nil
}

// Enabled reports whether events are written anywhere.
func (w *Writer) Enabled() bool { return w != nil && w.path != "" }

// Path is the file written ("" when disabled).
func (w *Writer) Path() string {
	if w == nil {
		return ""
	}
	return w.path
}

// Write appends e as one line. Free text (commands, arguments, errors)
// should have gone through Sanitize already.
func (w *Writer) Write(e Event) error {
	if !w.Enabled() {
		return nil
	}
	if e.Time.IsZero() {
		e.Time = w.now()
	}
	e.Time = e.Time.UTC()
	line, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encoding audit event %s: %w", e.Event, err)
	}
	line = append(line, '\n')
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil || w.moved() {
		if err := w.reopenLocked(); err != nil {
			return err
		}
	}
	if _, err := w.f.Write(line); err != nil {
		return fmt.Errorf("writing audit log %s: %w (free space or fix the file, or set log.audit_required: false to continue without it)", w.path, err)
	}
	return nil
}

// Reopen closes the file and opens the path again (the daemon's SIGHUP).
func (w *Writer) Reopen() error {
	if !w.Enabled() {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.reopenLocked()
}

// Close releases the file.
func (w *Writer) Close() error {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	return err
}

func (w *Writer) reopen() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.reopenLocked()
}

func (w *Writer) reopenLocked() error {
	if w.f != nil {
		w.f.Close()
		w.f = nil
	}
	f, err := openFile(w.path)
	if err != nil {
		return err
	}
	w.f = f
	if fi, err := f.Stat(); err == nil {
		if m := fi.Mode().Perm(); m != 0o600 {
			w.log.Info("Audit log has a wider mode than 0600; run podspawn doctor", "file", w.path, "mode", fmt.Sprintf("%04o", m))
		}
	}
	return nil
}

// openFile opens path for appending, creating it 0600 (whatever the
// umask) when missing. A link in place of the file is refused: root
// appending through a user's symbolic link would write anywhere.
func openFile(path string) (*os.File, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("audit log %q: log.audit_log must be an absolute path", path)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err == nil {
		// A new file: the mode is exactly 0600 whatever the umask.
		if err := f.Chmod(0o600); err != nil {
			f.Close()
			return nil, fmt.Errorf("setting the mode of audit log %s: %w", path, err)
		}
		return f, nil
	}
	if errors.Is(err, os.ErrExist) {
		f, err = os.OpenFile(path, os.O_WRONLY|os.O_APPEND|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil, openError(path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, openError(path, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("audit log %s is not a regular file (%s); remove it or point log.audit_log at a file", path, fi.Mode().Type())
	}
	return f, nil
}

func openError(path string, err error) error {
	if errors.Is(err, syscall.ELOOP) {
		return fmt.Errorf("audit log %s is a symbolic link, which podspawn does not follow; replace it with a file or point log.audit_log at the target", path)
	}
	return fmt.Errorf("cannot open audit log %s: %w (create its directory, make it writable by root, or set log.audit_required: false to run without it)", path, err)
}

// moved reports whether the path no longer names the open file (renamed
// or removed by logrotate).
func (w *Writer) moved() bool {
	cur, err := w.f.Stat()
	if err != nil {
		return true
	}
	onDisk, err := os.Lstat(w.path)
	if err != nil {
		return true
	}
	return !os.SameFile(cur, onDisk)
}
