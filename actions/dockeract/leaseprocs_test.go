package dockeract_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/podspawn/podspawn/actions/dockeract"

	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/reconcile"
)

func (f *fixture) killAction(leaseID int64, targetID string) reconcile.Action {
	a := f.action(reconcile.KindKillLeaseProcesses, f.sess.Spec.ContainerName)
	a.TargetID, a.LeaseID, a.Reason = targetID, leaseID, reconcile.ReasonLeaseDead
	return a
}

// TestKillLeaseProcesses: the kill runs the script as the session's user
// in the container the plan saw, with the lease's marker; a container
// that is gone or stopped (or replaced under the same name) needs no kill
// and is not entered; a script that cannot start is terminal, one that
// fails is retried.
func TestKillLeaseProcesses(t *testing.T) {
	wantRun := func(f *fixture) []execRun {
		return []execRun{{Container: f.sess.Spec.ContainerName, User: "alice",
			Cmd: []string{"sh", "-c", dockeract.LeaseKillScript, "podspawn-kill", "PODSPAWN_LEASE=7"}}}
	}
	for name, tc := range map[string]struct {
		ctr      *object // the container in the fake world, if any
		exit     int
		output   string
		want     actions.Outcome
		terminal bool
		fails    bool
		ran      bool
	}{
		"processes killed":             {ctr: &object{ID: "c-1", Running: true}, output: "killed 12\nkilled 14\n", want: actions.Changed, ran: true},
		"nothing left to kill":         {ctr: &object{ID: "c-1", Running: true}, want: actions.Unchanged, ran: true},
		"container gone":               {want: actions.Unchanged},
		"container stopped":            {ctr: &object{ID: "c-1"}, want: actions.Unchanged},
		"replaced by a same-named one": {ctr: &object{ID: "c-2", Running: true}, want: actions.Unchanged},
		"no sh in the image":           {ctr: &object{ID: "c-1", Running: true}, exit: 127, output: `exec: "sh": executable file not found in $PATH`, fails: true, terminal: true, ran: true},
		"user missing in the image":    {ctr: &object{ID: "c-1", Running: true}, exit: 126, output: "unable to find user alice", fails: true, terminal: true, ran: true},
		"processes keep appearing":     {ctr: &object{ID: "c-1", Running: true}, exit: 3, output: "killed 12\n", fails: true, ran: true},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			if tc.ctr != nil {
				c := *tc.ctr
				c.Name, c.Labels = f.sess.Spec.ContainerName, f.labels(observed.RoleSession, "")
				f.docker.put(observed.KindContainer, c)
			}
			f.docker.execExit, f.docker.execOutput = tc.exit, tc.output
			got, err := f.exec.Execute(context.Background(), f.killAction(7, "c-1"))
			switch {
			case tc.fails && err == nil:
				t.Fatalf("Execute = %q, want an error", got)
			case !tc.fails && err != nil:
				t.Fatalf("Execute: %v", err)
			case errors.Is(err, actions.ErrTerminal) != tc.terminal:
				t.Fatalf("Execute: %v; terminal = %v, want %v", err, errors.Is(err, actions.ErrTerminal), tc.terminal)
			case !tc.fails && got != tc.want:
				t.Fatalf("Execute = %q, want %q", got, tc.want)
			}
			var want []execRun
			if tc.ran {
				want = wantRun(f)
			}
			if diff := cmp.Diff(want, f.docker.execsRun()); diff != "" {
				t.Fatalf("execs (-want +got):\n%s", diff)
			}
		})
	}
}

// TestLeaseKillScript runs the script with each shell podspawn's images
// are likely to have, against real processes: those carrying the marker
// die with their descendants (even one that dropped the variable); a
// process of another lease whose id merely starts with the same digits,
// and an unmarked one, live on. A second run finds nothing. The marker is
// random, so the host's own processes can never match it.
func TestLeaseKillScript(t *testing.T) {
	shells := map[string][]string{"dash": {"dash"}, "bash": {"bash"}, "busybox ash": {"busybox", "sh"}}
	for name, argv := range shells {
		if _, err := exec.LookPath(argv[0]); err != nil {
			t.Fatalf("%s is needed to test the kill script with %s (run hack/ensure-packages.sh): %v", argv[0], name, err)
		}
	}
	for name, argv := range shells {
		t.Run(name, func(t *testing.T) {
			id := time.Now().UnixNano()%1e12 + 1e12
			marker := desired.LeaseMarker(id)
			start := func(env string, script string) (*exec.Cmd, *bufio.Reader) {
				cmd := exec.Command("sh", "-c", script)
				cmd.Env = append(os.Environ(), env)
				out, err := cmd.StdoutPipe()
				if err != nil {
					t.Fatal(err)
				}
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
				return cmd, bufio.NewReader(out)
			}
			readPID := func(r *bufio.Reader) int {
				line, err := r.ReadString('\n')
				if err != nil {
					t.Fatalf("reading a pid: %v", err)
				}
				pid, err := strconv.Atoi(strings.TrimSpace(line))
				if err != nil {
					t.Fatal(err)
				}
				return pid
			}
			// The marked shell reports its child, which runs without the
			// variable, then its own pid once the child was started.
			marked, mOut := start(marker, `env -u `+desired.LeaseEnv+` sleep 600 & echo $!; echo $$; wait`)
			child := readPID(mOut)
			if readPID(mOut) != marked.Process.Pid {
				t.Fatal("the marked shell reported another pid")
			}
			other, oOut := start(desired.LeaseMarker(id*10+1), `echo $$; exec sleep 600`)
			plain, pOut := start("UNRELATED=1", `echo $$; exec sleep 600`)
			readPID(oOut)
			readPID(pOut)
			t.Cleanup(func() { syscall.Kill(child, syscall.SIGKILL) })

			run := func() string {
				t.Helper()
				cmd := exec.Command(argv[0], append(argv[1:], "-c", dockeract.LeaseKillScript, "podspawn-kill", marker)...)
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("%s: %v\n%s", name, err, out)
				}
				return string(out)
			}
			got := strings.Fields(strings.ReplaceAll(run(), "killed", ""))
			slices.Sort(got)
			want := []string{strconv.Itoa(marked.Process.Pid), strconv.Itoa(child)}
			slices.Sort(want)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("killed pids (-want +got):\n%s", diff)
			}
			if err := marked.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
				t.Fatalf("marked process: %v, want killed", err)
			}
			waitGone(t, child)
			for what, c := range map[string]*exec.Cmd{"another lease's process": other, "an unmarked process": plain} {
				if err := c.Process.Signal(syscall.Signal(0)); err != nil {
					t.Errorf("%s was hit: %v", what, err)
				}
			}
			if out := run(); out != "" {
				t.Errorf("second run: %q, want nothing to kill", out)
			}
		})
	}
}

// waitGone polls until pid no longer runs (gone, or a zombie nobody reaped
// yet). SIGKILL is delivered at once but the exit is asynchronous.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return
		}
		if i := strings.LastIndexByte(string(st), ')'); i >= 0 && i+2 < len(st) && st[i+2] == 'Z' {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d still runs", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
