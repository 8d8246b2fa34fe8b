package dockerexec

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/actions"
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
	// pid, when set, is the host pid reported while the process runs.
	pid int

	running, exited bool
}

// fakeContainerID is the container of every exec in fakeDocker.
const fakeContainerID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// fakeDocker runs execs as run decides and records them. Pids are
// reported as -1, so that signalExec never signals a host process, unless
// a fakeProc sets one.
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
	info := container.ExecInspect{ExecID: execID, ContainerID: fakeContainerID, Running: p.running, ExitCode: p.exit}
	if p.running || p.exited {
		info.Pid = -1
		if p.pid != 0 {
			info.Pid = p.pid
		}
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

func TestRunHook(t *testing.T) {
	spec := actions.ExecSpec{Container: "c", User: "alice", Argv: []string{"sh", "-c", "x"}}
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
			code, err := (Execer{API: f, Log: logr.Discard()}).Run(context.Background(), spec, &out)
			if err != nil || code != tc.wantCode || out.String() != tc.wantOut {
				t.Fatalf("Run = %d, %v, output %q; want %d, nil, %q", code, err, out.String(), tc.wantCode, tc.wantOut)
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
		code, err = (Execer{API: f, Log: logr.Discard()}).Run(ctx, actions.ExecSpec{Argv: []string{"sh"}}, &out)
	}()
	<-running
	cancel()
	<-done
	if code != -1 || !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %d, %v; want -1, context.Canceled", code, err)
	}
}

func TestRunHookCreateFails(t *testing.T) {
	f := &fakeDocker{createErr: errors.New("container is not running")}
	if _, err := (Execer{API: f, Log: logr.Discard()}).Run(context.Background(), actions.ExecSpec{}, &bytes.Buffer{}); err == nil || err.Error() != "container is not running" {
		t.Fatalf("Run error = %v", err)
	}
}

func TestPathExists(t *testing.T) {
	for name, tc := range map[string]struct {
		statErr error
		want    bool
		wantErr bool
	}{
		"present": {want: true},
		"missing": {statErr: fmt.Errorf("stat /x: %w", errdefs.ErrNotFound)},
		// Anything but "not found" is the caller's to judge.
		"Docker error": {statErr: errors.New("connection reset by peer"), wantErr: true},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := Execer{API: &fakeDocker{statErr: tc.statErr}}.PathExists(context.Background(), "ctr", "/x")
			if got != tc.want || (err != nil) != tc.wantErr {
				t.Fatalf("PathExists = %v, %v; want %v, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}
