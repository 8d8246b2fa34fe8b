package dockerexec

import (
	"context"
	"os/exec"
	"syscall"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/go-logr/logr/testr"

	"github.com/podspawn/podspawn/actions"
)

// TestHangupSignalsOnlyTheExecsProcess: when a connection ends first, its
// process gets SIGHUP through the host pid Docker reports. A pid that now
// belongs to another process (here a host process outside the container,
// as after the exec exited and its pid was reused) is left alone.
func TestHangupSignalsOnlyTheExecsProcess(t *testing.T) {
	for name, tc := range map[string]struct {
		inContainer func(int, string) (bool, error)
		want        syscall.Signal
	}{
		// The real check: the stand-in is in the test's cgroup, not the
		// container's, so it is spared and ends by the test's SIGTERM.
		"pid reused by a host process": {want: syscall.SIGTERM},
		"the exec's process": {
			inContainer: func(_ int, id string) (bool, error) { return id == fakeContainerID, nil },
			want:        syscall.SIGHUP,
		},
	} {
		t.Run(name, func(t *testing.T) {
			standIn := exec.Command("sleep", "1000")
			if err := standIn.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { standIn.Process.Kill(); standIn.Wait() })

			release, running := make(chan struct{}), make(chan struct{})
			t.Cleanup(func() { close(release) })
			f := &fakeDocker{run: func(container.ExecOptions) *fakeProc {
				return &fakeProc{release: release, onRun: running, pid: standIn.Process.Pid}
			}}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan int)
			go func() {
				code, _ := Execer{API: f, Log: testr.New(t), inContainer: tc.inContainer}.Exec(ctx,
					actions.ExecSpec{Container: "c", Argv: []string{"sh"}}, actions.Stdio{Stdout: discard{}, Stderr: discard{}})
				done <- code
			}()
			<-running
			cancel()
			if code := <-done; code != actions.HangupExitCode {
				t.Fatalf("Exec = %d after the hangup, want %d", code, actions.HangupExitCode)
			}
			// A SIGHUP sent by Exec is pending or delivered before this.
			standIn.Process.Signal(syscall.SIGTERM)
			err := standIn.Wait()
			ws, ok := standIn.ProcessState.Sys().(syscall.WaitStatus)
			if !ok || !ws.Signaled() || ws.Signal() != tc.want {
				t.Fatalf("stand-in process ended with %v (%v), want killed by %v", standIn.ProcessState, err, tc.want)
			}
		})
	}
}

func TestCgroupsName(t *testing.T) {
	id := fakeContainerID
	for name, tc := range map[string]struct {
		text string
		want bool
	}{
		"cgroupfs v1":       {text: "4:memory:/docker/" + id + "\n0::/docker/" + id + "\n", want: true},
		"systemd v2":        {text: "0::/system.slice/docker-" + id + ".scope\n", want: true},
		"host process":      {text: "0::/user.slice/user-0.slice/session-1.scope\n"},
		"another container": {text: "0::/docker/" + id[1:] + "0\n"},
		"prefix of the id":  {text: "0::/docker/" + id + "x\n"},
		"empty":             {},
	} {
		t.Run(name, func(t *testing.T) {
			if got := cgroupsName(tc.text, id); got != tc.want {
				t.Fatalf("cgroupsName = %v, want %v", got, tc.want)
			}
		})
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
