package spawn

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/desired"
)

// fakeProc is one exec in fakeDocker.
type fakeProc struct {
	stdout, stderr string
	exit           int
	// release, when set, keeps the process running until it is closed.
	release chan struct{}
	// holdOpen keeps the output stream open after the process exits, as a
	// background child of a hook does.
	holdOpen bool
	// onRun, when set, is closed once the process runs.
	onRun chan struct{}
	// arrived puts the output in the client's read buffer before attach
	// returns, as output that reached podspawn before a timeout is, so
	// that the test does not race the copier against the deadline.
	arrived bool

	running, exited bool
}

// fakeDocker runs execs as run decides and records them. Pids are
// reported as -1 so that signalExec never signals a host process.
type fakeDocker struct {
	createErr error
	statErr   error
	run       func(o container.ExecOptions) *fakeProc

	mu    sync.Mutex
	procs map[string]*fakeProc
	calls []container.ExecOptions
	// Markers of the on_create protocol (see markers).
	started, done bool
	result        string
}

func (f *fakeDocker) ContainerInspect(ctx context.Context, id string) (container.InspectResponse, error) {
	return container.InspectResponse{}, fmt.Errorf("container %s: %w", id, errdefs.ErrNotFound)
}

func (f *fakeDocker) ContainerExecCreate(ctx context.Context, id string, o container.ExecOptions) (container.ExecCreateResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.createErr != nil {
		return container.ExecCreateResponse{}, f.createErr
	}
	f.calls = append(f.calls, o)
	if f.procs == nil {
		f.procs = map[string]*fakeProc{}
	}
	execID := fmt.Sprintf("exec-%d", len(f.calls))
	f.procs[execID] = f.run(o)
	return container.ExecCreateResponse{ID: execID}, nil
}

func (f *fakeDocker) ContainerExecAttach(ctx context.Context, execID string, _ container.ExecAttachOptions) (types.HijackedResponse, error) {
	f.mu.Lock()
	p := f.procs[execID]
	p.running = true
	f.mu.Unlock()
	if p.onRun != nil {
		close(p.onRun)
	}
	client, server := net.Pipe()
	var buffered bytes.Buffer
	if p.arrived {
		stdcopy.NewStdWriter(&buffered, stdcopy.Stdout).Write([]byte(p.stdout))
		stdcopy.NewStdWriter(&buffered, stdcopy.Stderr).Write([]byte(p.stderr))
	}
	go func() {
		if !p.arrived {
			stdcopy.NewStdWriter(server, stdcopy.Stdout).Write([]byte(p.stdout))
			stdcopy.NewStdWriter(server, stdcopy.Stderr).Write([]byte(p.stderr))
		}
		if p.release != nil {
			<-p.release
		}
		f.mu.Lock()
		p.running, p.exited = false, true
		f.mu.Unlock()
		if !p.holdOpen {
			server.Close()
		}
	}()
	return types.HijackedResponse{Conn: client, Reader: bufio.NewReader(io.MultiReader(&buffered, client))}, nil
}

func (f *fakeDocker) ContainerExecInspect(ctx context.Context, execID string) (container.ExecInspect, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.procs[execID]
	info := container.ExecInspect{ExecID: execID, Running: p.running, ExitCode: p.exit}
	if p.running || p.exited {
		info.Pid = -1
	}
	return info, nil
}

func (f *fakeDocker) ContainerExecResize(context.Context, string, container.ResizeOptions) error {
	return nil
}

func (f *fakeDocker) ContainerStatPath(_ context.Context, _, path string) (container.PathStat, error) {
	if f.statErr != nil {
		return container.PathStat{}, f.statErr
	}
	return container.PathStat{Name: path}, nil
}

// markers makes f follow the on_create marker protocol, with hook as the
// user's process; mkdirFails simulates a read-only root filesystem. It is
// called with f.mu held.
func (f *fakeDocker) markers(hook fakeProc, mkdirFails bool) func(container.ExecOptions) *fakeProc {
	return func(o container.ExecOptions) *fakeProc {
		switch {
		case o.User == "root" && o.Cmd[2] == claimScript:
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
		case o.User == "root" && o.Cmd[2] == doneScript:
			f.done, f.result = true, o.Cmd[4]
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

func TestRunHook(t *testing.T) {
	spec := ExecSpec{ContainerID: "c", User: "alice", Command: Command{Argv: []string{"sh", "-c", "x"}}}
	tests := map[string]struct {
		proc     fakeProc
		wantCode int
		wantOut  string
	}{
		"output and exit code":           {proc: fakeProc{stdout: "out\n", stderr: "err\n", exit: 3}, wantCode: 3, wantOut: "out\nerr\n"},
		"no output":                      {proc: fakeProc{}, wantCode: 0},
		"background child holds output":  {proc: fakeProc{stdout: "started server\n", holdOpen: true}, wantCode: 0, wantOut: "started server\n"},
		"fails while holding the output": {proc: fakeProc{stderr: "boom\n", exit: 2, holdOpen: true}, wantCode: 2, wantOut: "boom\n"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := &fakeDocker{run: func(container.ExecOptions) *fakeProc { p := tc.proc; return &p }}
			var out bytes.Buffer
			code, err := runHook(context.Background(), f, spec, &out, logr.Discard())
			if err != nil || code != tc.wantCode || out.String() != tc.wantOut {
				t.Fatalf("runHook = %d, %v, output %q; want %d, nil, %q", code, err, out.String(), tc.wantCode, tc.wantOut)
			}
			want := []container.ExecOptions{{User: "alice", Cmd: []string{"sh", "-c", "x"}, AttachStdout: true, AttachStderr: true}}
			if diff := cmp.Diff(want, f.calls); diff != "" {
				t.Errorf("exec options (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRunHookStopsWhenTheContextEnds(t *testing.T) {
	release, running := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() { close(release) })
	f := &fakeDocker{run: func(container.ExecOptions) *fakeProc {
		return &fakeProc{stdout: "working\n", release: release, onRun: running}
	}}
	ctx, cancel := context.WithCancel(context.Background())
	var out bytes.Buffer
	done := make(chan struct{})
	var code int
	var err error
	go func() {
		defer close(done)
		code, err = runHook(ctx, f, ExecSpec{Command: Command{Argv: []string{"sh"}}}, &out, logr.Discard())
	}()
	<-running
	cancel()
	<-done
	if code != -1 || !errors.Is(err, context.Canceled) {
		t.Fatalf("runHook = %d, %v; want -1, context.Canceled", code, err)
	}
}

func TestRunHookCreateFails(t *testing.T) {
	f := &fakeDocker{createErr: errors.New("container is not running")}
	if _, err := runHook(context.Background(), f, ExecSpec{}, &bytes.Buffer{}, logr.Discard()); err == nil || err.Error() != "container is not running" {
		t.Fatalf("runHook error = %v", err)
	}
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
			f := &fakeDocker{started: tc.started, done: tc.done}
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
	f := &fakeDocker{}
	f.run = f.markers(fakeProc{stdout: "step 1\n", release: release, arrived: true}, false)
	got := runOnCreate(context.Background(), f, logr.Discard(), testAttachment())
	if want := "step 1\npodspawn: warning: on_create did not finish within 20ms and was stopped; the session starts anyway\n"; got != want {
		t.Errorf("notice = %q, want %q", got, want)
	}
	if f.result != "error" {
		t.Errorf("recorded result %q, want error", f.result)
	}
}

func TestHookExecIsTheUsersLogin(t *testing.T) {
	f := &fakeDocker{}
	f.run = f.markers(fakeProc{}, false)
	runOnCreate(context.Background(), f, logr.Discard(), testAttachment())
	want := container.ExecOptions{
		User: "alice", WorkingDir: "/home/alice", Cmd: []string{"sh", "-c", "make setup"},
		Env:          []string{"HOME=/home/alice", "USER=alice", "LOGNAME=alice", "SHELL=/bin/sh", "PODSPAWN_PROJECT=backend"},
		AttachStdout: true, AttachStderr: true,
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
			f := &fakeDocker{run: func(container.ExecOptions) *fakeProc { p := tc.proc; return &p }}
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

func summarizeExecs(calls []container.ExecOptions) []string {
	var out []string
	for _, c := range calls {
		switch {
		case len(c.Cmd) > 2 && c.Cmd[2] == claimScript:
			out = append(out, c.User+" claim")
		case len(c.Cmd) > 2 && c.Cmd[2] == doneScript:
			out = append(out, c.User+" done "+strings.Join(c.Cmd[4:], " "))
		default:
			out = append(out, c.User+" "+c.Cmd[len(c.Cmd)-1])
		}
	}
	return out
}
