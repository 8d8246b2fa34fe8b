package ssh

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/docker/docker/client"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/test/harness"
)

// TestDeadConnectionTakesItsProcesses: spawn is killed with SIGKILL (sshd
// killed, OOM) while the user's command runs. The next cleanup pass kills
// what that connection started in the container (the command and its
// background child) before it releases the lease, while the command of
// another, live connection to the same persistent session keeps running
// and the session itself stays.
func TestDeadConnectionTakesItsProcesses(t *testing.T) {
	e := harness.NewEnv(t, harness.Options{Session: "  grace_period: 60s\n  max_lifetime: 8h\n  mode: persistent\n"})
	docker := harness.Docker(t)
	user := harness.Uniq("sdc")
	e.AddUser(user)
	key := desired.SessionKey{User: user}
	name := desired.ContainerName(key)

	live := startSpawn(t, e, user, "sleep 130")
	harness.Eventually(t, 2*time.Minute, "the live connection's command to run", func() bool {
		return containerProcs(t, docker, name)["sleep 130"]
	})
	dead := startSpawn(t, e, user, "sleep 121 & sleep 120")
	harness.Eventually(t, 2*time.Minute, "the doomed connection's command and its child to run", func() bool {
		p := containerProcs(t, docker, name)
		return p["sleep 120"] && p["sleep 121"]
	})
	if n := len(e.Row(key).Leases); n != 2 {
		t.Fatalf("%d leases with two connections, want 2", n)
	}

	if err := dead.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	dead.Wait()
	r := e.Run("cleanup")
	if r.Code != 0 {
		t.Fatalf("cleanup: exit %d\nstdout:\n%s\nstderr:\n%s", r.Code, r.Stdout, r.Stderr)
	}
	for _, want := range []string{"killed the processes of dead connection", "released dead connection", "lease-dead"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("cleanup output does not contain %q:\n%s", want, r.Stdout)
		}
	}

	p := containerProcs(t, docker, name)
	for _, gone := range []string{"sleep 120", "sleep 121"} {
		if p[gone] {
			t.Errorf("%q of the dead connection still runs after the cleanup pass: %v", gone, keysOf(p))
		}
	}
	if !p["sleep 130"] {
		t.Errorf("the live connection's command was killed too: %v", keysOf(p))
	}
	info, err := docker.ContainerInspect(context.Background(), name)
	if err != nil || info.State == nil || !info.State.Running {
		t.Fatalf("session container after the pass: err %v, state %+v; want it running", err, info.State)
	}
	s := e.Row(key)
	if s == nil || s.Status != desired.StatusRunning || len(s.Leases) != 1 || s.Leases[0].PID != live.Process.Pid {
		t.Fatalf("session after the pass: %+v; want running with only the live connection's lease (pid %d)", s, live.Process.Pid)
	}
}

// startSpawn runs spawn as root for user with command, as sshd's forced
// command would, and kills it at the end of the test. Its stdout is a
// pipe the test keeps open, so spawn never sees its client go away.
func startSpawn(t *testing.T, e *harness.Env, user, command string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(e.Bin, "--config", e.ConfigPath, "spawn", "--user", user)
	cmd.Env = append(os.Environ(), "SSH_ORIGINAL_COMMAND="+command)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &bytes.Buffer{}, &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("spawn %q stderr:\n%s", command, stderr.String())
		}
	})
	return cmd
}

// containerProcs returns the command lines of the processes running in
// the container (zombies excluded: they have exited), from the host's ps
// through Docker, so it needs nothing in the image. A missing container
// has none.
func containerProcs(t *testing.T, docker *client.Client, name string) map[string]bool {
	t.Helper()
	top, err := docker.ContainerTop(context.Background(), name, []string{"-o", "pid,stat,args"})
	if errdefs.IsNotFound(err) || (err != nil && strings.Contains(err.Error(), "is not running")) {
		return map[string]bool{}
	}
	if err != nil {
		t.Fatalf("docker top %s: %v", name, err)
	}
	out := map[string]bool{}
	for _, row := range top.Processes {
		if len(row) == 3 && !strings.HasPrefix(row[1], "Z") {
			out[row[2]] = true
		}
	}
	return out
}
