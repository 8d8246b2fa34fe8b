package audit

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/reconcile"
)

func readLines(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.TrimSuffix(string(data), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func openAt(t *testing.T, path string, now time.Time) *Writer {
	t.Helper()
	w, err := Open(path, testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	w.now = func() time.Time { return now }
	t.Cleanup(func() { w.Close() })
	return w
}

// One event is one line of JSON with the five fixed fields always present,
// the time in RFC 3339 UTC, and unset optional fields left out.
func TestLineFormat(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	at := time.Date(2026, 12, 3, 14, 5, 6, 789, time.FixedZone("CET", 3600))
	w := openAt(t, path, at)
	code, dur := 3, int64(1500)
	events := []Event{
		{Event: SessionDisconnect, User: "alice", Project: "web", Session: "g1", Actor: "alice", Container: "podspawn-alice-web",
			Lease: 7, Client: "10.0.0.1:5555", Kind: "exec", Command: "false", ExitCode: &code, DurationMS: &dur},
		{Event: AdminPrefix + "add-project", Actor: "root", Args: []string{"add-project", "web"}, Outcome: OutcomeSuccess},
	}
	for _, e := range events {
		if err := w.Write(e); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{
		`{"time":"2026-12-03T13:05:06.000000789Z","event":"session.disconnect","user":"alice","project":"web","session":"g1","actor":"alice","container":"podspawn-alice-web","lease":7,"client":"10.0.0.1:5555","kind":"exec","command":"false","exit_code":3,"duration_ms":1500}`,
		`{"time":"2026-12-03T13:05:06.000000789Z","event":"admin.add-project","user":"","project":"","session":"","actor":"root","args":["add-project","web"],"outcome":"success"}`,
	}
	if diff := cmp.Diff(want, readLines(t, path)); diff != "" {
		t.Fatalf("lines (-want +got):\n%s", diff)
	}
}

// A new file is 0600 whatever the umask; an existing file keeps its
// content and is appended to.
func TestModeAndAppend(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	path := filepath.Join(t.TempDir(), "audit.log")
	w := openAt(t, path, time.Unix(0, 0))
	if err := w.Write(Event{Event: "one"}); err != nil {
		t.Fatal(err)
	}
	w.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if m := fi.Mode().Perm(); m != 0o600 {
		t.Fatalf("mode = %04o, want 0600", m)
	}
	w2 := openAt(t, path, time.Unix(0, 0))
	if err := w2.Write(Event{Event: "two"}); err != nil {
		t.Fatal(err)
	}
	if got := readLines(t, path); len(got) != 2 || !strings.Contains(got[0], `"one"`) || !strings.Contains(got[1], `"two"`) {
		t.Fatalf("lines = %q", got)
	}
}

// logrotate renames the file away (or removes it): the next write goes
// to a new file at the path, created 0600; Reopen (SIGHUP) does the same.
func TestReopenAfterRename(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	w := openAt(t, path, time.Unix(0, 0))
	if err := w.Write(Event{Event: "before"}); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(Event{Event: "after"}); err != nil {
		t.Fatal(err)
	}
	if got := readLines(t, path+".1"); len(got) != 1 || !strings.Contains(got[0], `"before"`) {
		t.Fatalf("rotated file = %q", got)
	}
	if got := readLines(t, path); len(got) != 1 || !strings.Contains(got[0], `"after"`) {
		t.Fatalf("new file = %q", got)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("new file: %v, mode %v", err, fi)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := w.Reopen(); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(Event{Event: "reopened"}); err != nil {
		t.Fatal(err)
	}
	if got := readLines(t, path); len(got) != 1 || !strings.Contains(got[0], `"reopened"`) {
		t.Fatalf("after Reopen = %q", got)
	}
}

// A path that cannot be opened is an error that names the file and what
// to do; so is a symbolic link in its place.
func TestOpenFailsClosed(t *testing.T) {
	dir := t.TempDir()
	notDir := filepath.Join(dir, "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.log")
	if err := os.Symlink(notDir, link); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct{ path, want string }{
		"missing directory": {filepath.Join(dir, "nope", "audit.log"), "cannot open audit log " + filepath.Join(dir, "nope", "audit.log")},
		"parent is a file":  {filepath.Join(notDir, "audit.log"), "not a directory"},
		"a directory":       {dir, "is a directory"},
		"symbolic link":     {link, "is a symbolic link, which podspawn does not follow"},
		"relative":          {"audit.log", "must be an absolute path"},
	} {
		t.Run(name, func(t *testing.T) {
			w, err := Open(tc.path, testr.New(t))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Open(%s) = %v, %v; want an error containing %q", tc.path, w, err, tc.want)
			}
		})
	}
}

// An open that fails says what to do, including how to run without the
// log. (A missing directory fails for root too; a 0500 one would not.)
func TestOpenErrorSaysWhatToDo(t *testing.T) {
	_, err := Open(filepath.Join(t.TempDir(), "missing", "audit.log"), testr.New(t))
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "create its directory") || !strings.Contains(err.Error(), "log.audit_required: false") {
		t.Fatalf("Open = %v, want a not-exist error saying to create the directory or set log.audit_required: false", err)
	}
}

// A disabled writer (no path, or nil) writes nothing and never fails.
func TestDisabled(t *testing.T) {
	var nilW *Writer
	w, err := Open("", testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range []*Writer{nilW, w} {
		if x.Enabled() || x.Write(Event{Event: "x"}) != nil || x.Reopen() != nil || x.Close() != nil {
			t.Fatalf("disabled writer %v acted", x)
		}
	}
}

func TestSanitize(t *testing.T) {
	cases := []struct {
		in, want string
		max      int
		cut      bool
	}{
		{"ls -la /tmp", "ls -la /tmp", 100, false},
		{"echo \x1b[31mred\x1b[0m\n", `echo \x1b[31mred\x1b[0m\x0a`, 100, false},
		{"tab\there\r", `tab\x09here\x0d`, 100, false},
		{`a\b`, `a\\b`, 100, false},
		{"bad \xff byte", `bad \xff byte`, 100, false},
		{"del\x7f c1\u0085 rtl\u202e", `del\x7f c1\x85 rtl\u{202e}`, 100, false},
		{"héllo wörld", "héllo wörld", 100, false},
		{"abcdef", "abcd", 4, true},
		// An escape is never cut in half, nor a multi-byte rune.
		{"ab\x01cd", "ab", 5, true},
		{"aé", "a", 2, true},
	}
	for _, tc := range cases {
		got, cut := Sanitize(tc.in, tc.max)
		if got != tc.want || cut != tc.cut {
			t.Errorf("Sanitize(%q, %d) = %q, %v; want %q, %v", tc.in, tc.max, got, cut, tc.want, tc.cut)
		}
	}
	long := strings.Repeat("\x00", MaxCommand)
	if got := Text(long); len(got) != MaxCommand/4*4+3 || !strings.HasSuffix(got, `\x00...`) {
		t.Errorf("Text of %d NULs: %d bytes ending %q", MaxCommand, len(got), got[len(got)-8:])
	}
}

func TestClientAddress(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7 51234 10.0.0.1 22": "192.0.2.7:51234",
		"2001:db8::1 40000 ::1 22":    "[2001:db8::1]:40000",
		"":                            "",
		"garbage":                     "",
		"1.2.3.4 99999 5.6.7.8 22":    "",
	} {
		if got := ClientAddress(in); got != want {
			t.Errorf("ClientAddress(%q) = %q, want %q", in, got, want)
		}
	}
}

type fakeExec struct{ out actions.Outcome }

func (f fakeExec) Execute(context.Context, reconcile.Action) (actions.Outcome, error) {
	return f.out, nil
}

// The executor writes session.create on the first mark-running and
// session.destroy on the row's deletion, with the reason, the actor by
// reason, and nothing for other kinds or unchanged outcomes.
func TestExecutorEvents(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	w := openAt(t, path, time.Unix(0, 0))
	key := desired.SessionKey{User: "alice", Project: "web"}
	changed := &Executor{Next: fakeExec{actions.Changed}, Audit: w, Actor: "admin", Log: testr.New(t)}
	unchanged := &Executor{Next: fakeExec{actions.Unchanged}, Audit: w, Actor: "admin", Log: testr.New(t)}
	run := func(e *Executor, k reconcile.Kind, r reconcile.Reason) {
		if _, err := e.Execute(context.Background(), reconcile.Action{Kind: k, Key: key, SessionID: "g1", Reason: r}); err != nil {
			t.Fatal(err)
		}
	}
	run(changed, reconcile.KindCreateContainer, reconcile.ReasonSessionCreating)
	run(changed, reconcile.KindMarkRunning, reconcile.ReasonSessionCreating)
	run(unchanged, reconcile.KindMarkRunning, reconcile.ReasonSessionCreating)
	run(changed, reconcile.KindRemoveContainer, reconcile.ReasonGraceExpired)
	run(changed, reconcile.KindDeleteSession, reconcile.ReasonGraceExpired)
	run(changed, reconcile.KindDeleteSession, reconcile.ReasonUserRequested)
	run(unchanged, reconcile.KindDeleteSession, reconcile.ReasonUserRequested)
	var got []Event
	for _, l := range readLines(t, path) {
		var e Event
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatal(err)
		}
		e.Time = time.Time{}
		got = append(got, e)
	}
	base := Event{User: "alice", Project: "web", Session: "g1", Container: "podspawn-alice-web"}
	with := func(ev, actor, reason string) Event {
		e := base
		e.Event, e.Actor, e.Reason = ev, actor, reason
		return e
	}
	want := []Event{
		with(SessionCreate, "admin", "session-creating"),
		with(SessionDestroy, ActorController, "grace-expired"),
		with(SessionDestroy, "admin", "user-requested"),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("events (-want +got):\n%s", diff)
	}
	if changed.Removed() != 3 || unchanged.Removed() != 0 {
		t.Fatalf("removed = %d, %d; want 3, 0", changed.Removed(), unchanged.Removed())
	}
}

// preparingExec records the actions it was asked to prepare.
type preparingExec struct {
	fakeExec
	prepared []reconcile.Action
}

func (p *preparingExec) Prepare(_ context.Context, a reconcile.Action) {
	p.prepared = append(p.prepared, a)
}

// The audit wrapper passes preparations on to an executor that makes them
// and records nothing for them; before one that does not, it does nothing.
func TestExecutorPassesPreparationsOn(t *testing.T) {
	w, err := Open(filepath.Join(t.TempDir(), "audit.log"), testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	a := reconcile.Action{Kind: reconcile.KindCreateContainer, Target: "podspawn-alice", Key: desired.SessionKey{User: "alice"}}
	next := &preparingExec{fakeExec: fakeExec{actions.Changed}}
	(&Executor{Next: next, Audit: w, Actor: "alice", Log: testr.New(t)}).Prepare(context.Background(), a)
	if diff := cmp.Diff([]reconcile.Action{a}, next.prepared); diff != "" {
		t.Fatalf("prepared (-want +got):\n%s", diff)
	}
	(&Executor{Next: fakeExec{actions.Changed}, Audit: w, Actor: "alice", Log: testr.New(t)}).Prepare(context.Background(), a)
	if b, err := os.ReadFile(w.Path()); err != nil || len(b) != 0 {
		t.Fatalf("audit log = %q, %v; want nothing recorded for preparations", b, err)
	}
}
