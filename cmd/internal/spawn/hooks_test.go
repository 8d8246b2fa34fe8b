package spawn

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/desired"
)

// fakeProc is one process run by fakeExecer.
type fakeProc struct {
	stdout, stderr string
	exit           int
	// release, when set, keeps the process running until it is closed.
	release chan struct{}
}

// fakeExecer runs hook processes as run decides and records them.
type fakeExecer struct {
	run func(spec actions.ExecSpec) *fakeProc
	// exists and statErr answer PathExists.
	exists  bool
	statErr error

	mu    sync.Mutex
	calls []actions.ExecSpec
	// Markers of the on_create protocol (see markers).
	started, done bool
	result        string
}

func (f *fakeExecer) Exec(context.Context, actions.ExecSpec, actions.Stdio) (int, error) {
	return -1, errors.New("fakeExecer: Exec is not faked")
}

func (f *fakeExecer) Run(ctx context.Context, spec actions.ExecSpec, out io.Writer) (int, error) {
	f.mu.Lock()
	f.calls = append(f.calls, spec)
	p := f.run(spec)
	f.mu.Unlock()
	io.WriteString(out, p.stdout)
	io.WriteString(out, p.stderr)
	if p.release != nil {
		select {
		case <-p.release:
		case <-ctx.Done():
			return -1, context.Cause(ctx)
		}
	}
	return p.exit, nil
}

func (f *fakeExecer) PathExists(context.Context, string, string) (bool, error) {
	return f.exists, f.statErr
}

// markers makes f follow the on_create marker protocol, with hook as the
// user's process; mkdirFails simulates a read-only root filesystem. It is
// called with f.mu held.
func (f *fakeExecer) markers(hook fakeProc, mkdirFails bool) func(actions.ExecSpec) *fakeProc {
	return func(o actions.ExecSpec) *fakeProc {
		switch {
		case o.User == "root" && o.Argv[2] == claimScript:
			switch {
			case f.done:
				return &fakeProc{exit: claimDone}
			case f.started:
				return &fakeProc{exit: claimInterrupted}
			case mkdirFails:
				return &fakeProc{exit: 1, stderr: "mkdir: can't create directory '/var/lib/podspawn': Read-only file system\n"}
			}
			f.started = true
			return &fakeProc{}
		case o.User == "root" && o.Argv[2] == doneScript:
			f.done, f.result = true, o.Argv[4]
			return &fakeProc{}
		}
		h := hook
		return &h
	}
}

func testAttachment() *Attachment {
	key := desired.SessionKey{User: "alice", Project: "backend"}
	return &Attachment{Key: key, ContainerID: "ctr1", Session: &desired.Session{Key: key, ID: "g1", Spec: desired.Spec{
		Shell: "/bin/sh", ContainerName: "podspawn-alice-backend", OnCreate: "make setup", OnStart: "make start",
	}}}
}

func TestRunOnCreate(t *testing.T) {
	const interrupted = "podspawn: warning: on_create was started by an earlier connection and never finished (a crash or timeout); it is not run twice. " +
		"Run the setup yourself, or ask an admin for a fresh container: podspawn stop alice@backend\n"
	tests := map[string]struct {
		hook          fakeProc
		started, done bool
		mkdirFails    bool
		noHook        bool
		wantNotice    string
		// wantExecs are the users and commands run, in order.
		wantExecs  []string
		wantResult string
	}{
		"first run": {
			hook: fakeProc{stdout: "installing\n"}, wantNotice: "installing\n",
			wantExecs: []string{"root claim", "alice make setup", "root done 0"}, wantResult: "0",
		},
		"failure is a warning": {
			hook:       fakeProc{stderr: "oops", exit: 3},
			wantNotice: "oops\npodspawn: warning: on_create failed with exit code 3; the session starts anyway\n",
			wantExecs:  []string{"root claim", "alice make setup", "root done 3"}, wantResult: "3",
		},
		"already ran": {done: true, started: true, wantExecs: []string{"root claim"}},
		"interrupted earlier": {
			started: true, wantNotice: interrupted, wantExecs: []string{"root claim"},
		},
		"markers cannot be written": {
			mkdirFails: true,
			wantNotice: "podspawn: warning: on_create was not run: it could not be recorded in /var/lib/podspawn of the container (exit 1: mkdir: can't create directory '/var/lib/podspawn': Read-only file system)\n",
			wantExecs:  []string{"root claim"},
		},
		"no hook": {noHook: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := &fakeExecer{started: tc.started, done: tc.done}
			f.run = f.markers(tc.hook, tc.mkdirFails)
			att := testAttachment()
			if tc.noHook {
				att.Session.Spec.OnCreate = ""
			}
			if got := runOnCreate(context.Background(), f, logr.Discard(), att); got != tc.wantNotice {
				t.Errorf("notice = %q, want %q", got, tc.wantNotice)
			}
			if diff := cmp.Diff(tc.wantExecs, summarizeExecs(f.calls)); diff != "" {
				t.Errorf("execs (-want +got):\n%s", diff)
			}
			if f.result != tc.wantResult {
				t.Errorf("recorded result %q, want %q", f.result, tc.wantResult)
			}
		})
	}
}

func TestRunOnCreateTimesOut(t *testing.T) {
	old := onCreateTimeout
	onCreateTimeout = 20 * time.Millisecond
	t.Cleanup(func() { onCreateTimeout = old })
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	f := &fakeExecer{}
	f.run = f.markers(fakeProc{stdout: "step 1\n", release: release}, false)
	got := runOnCreate(context.Background(), f, logr.Discard(), testAttachment())
	if want := "step 1\npodspawn: warning: on_create did not finish within 20ms and was stopped; the session starts anyway\n"; got != want {
		t.Errorf("notice = %q, want %q", got, want)
	}
	if f.result != "error" {
		t.Errorf("recorded result %q, want error", f.result)
	}
}

func TestHookExecIsTheUsersLogin(t *testing.T) {
	f := &fakeExecer{}
	f.run = f.markers(fakeProc{}, false)
	runOnCreate(context.Background(), f, logr.Discard(), testAttachment())
	want := actions.ExecSpec{
		Container: "ctr1", User: "alice", WorkDir: "/home/alice", Argv: []string{"sh", "-c", "make setup"},
		Env:  []string{"HOME=/home/alice", "USER=alice", "LOGNAME=alice", "SHELL=/bin/sh", "PODSPAWN_PROJECT=backend"},
		Kind: "hook",
	}
	if diff := cmp.Diff(want, f.calls[1]); diff != "" {
		t.Errorf("on_create exec (-want +got):\n%s", diff)
	}
}

func TestRunConnectionHooks(t *testing.T) {
	tests := map[string]struct {
		notice  string
		onStart string
		proc    fakeProc
		want    string
	}{
		"notice then on_start output": {notice: "installed\n", onStart: "make start", proc: fakeProc{stdout: "serving\n"}, want: "installed\nserving\n"},
		"on_start fails":              {onStart: "make start", proc: fakeProc{stderr: "no rule\n", exit: 2}, want: "no rule\npodspawn: warning: on_start failed with exit code 2\n"},
		"nothing to do":               {},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := &fakeExecer{run: func(actions.ExecSpec) *fakeProc { p := tc.proc; return &p }}
			att := testAttachment()
			att.Notice, att.Session.Spec.OnStart = tc.notice, tc.onStart
			var stderr bytes.Buffer
			c := Connection{Key: att.Key, Term: "xterm", Stdio: Stdio{Stderr: &stderr}}
			runConnectionHooks(context.Background(), f, att, c, logr.Discard())
			if stderr.String() != tc.want {
				t.Errorf("stderr = %q, want %q", stderr.String(), tc.want)
			}
			if tc.onStart == "" && len(f.calls) != 0 {
				t.Errorf("execs without an on_start hook: %+v", f.calls)
			}
			if tc.onStart != "" && (len(f.calls) != 1 || !cmp.Equal(f.calls[0].Env, execEnv(c, "/bin/sh"))) {
				t.Errorf("on_start exec = %+v, want one with the connection's env", f.calls)
			}
		})
	}
}

func TestTailBuffer(t *testing.T) {
	b := &tailBuffer{limit: 8}
	b.Write([]byte("abc"))
	if got := b.String(); got != "abc" {
		t.Errorf("String() = %q", got)
	}
	b.Write([]byte("defghij"))
	if got, want := b.String(), "[... earlier output cut ...]\ncdefghij"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func summarizeExecs(calls []actions.ExecSpec) []string {
	var out []string
	for _, c := range calls {
		switch {
		case len(c.Argv) > 2 && c.Argv[2] == claimScript:
			out = append(out, c.User+" claim")
		case len(c.Argv) > 2 && c.Argv[2] == doneScript:
			out = append(out, c.User+" done "+strings.Join(c.Argv[4:], " "))
		default:
			out = append(out, c.User+" "+c.Argv[len(c.Argv)-1])
		}
	}
	return out
}
