package dockerexec

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"
)

// signalExec sends SIGHUP to the exec'd process. Docker has no API to
// signal an exec and closing the attach stream does not end the process,
// so it goes through the host pid from exec-inspect. That pid can belong
// to another process by the time it is used (the exec exited and the pid
// was reused), so the signal goes through a pidfd, which pins one process,
// and only after that process is shown to be the exec's: Docker still
// reports the exec running with the same pid, and the process is in the
// container's cgroup. Without pidfds (Linux before 5.3) nothing is sent.
func (e Execer) signalExec(ctx context.Context, execID string, log logr.Logger) {
	info, err := e.API.ContainerExecInspect(ctx, execID)
	if err != nil {
		log.Error(err, "Inspecting the connection's process failed; it keeps running")
		return
	}
	pid := info.Pid
	if !info.Running || pid <= 0 {
		return
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return
	}
	if err != nil {
		log.Error(err, "Opening a pidfd for the connection's process failed; it keeps running (signalling by pid could hit another process)", "pid", pid)
		return
	}
	defer unix.Close(fd)

	again, err := e.API.ContainerExecInspect(ctx, execID)
	if err != nil {
		log.Error(err, "Inspecting the connection's process failed; it keeps running")
		return
	}
	if !again.Running || again.Pid != pid {
		return
	}
	// /proc/<pid> describes the pidfd's process as long as that process
	// has not been reaped, and the signal below fails with ESRCH if it
	// has: a reused pid is never signalled.
	in := e.inContainer
	if in == nil {
		in = procInContainer
	}
	ok, err := in(pid, info.ContainerID)
	if err != nil || !ok {
		log.Info("Not sending SIGHUP: the pid no longer belongs to the connection's process", "pid", pid, "container", info.ContainerID, "error", errString(err))
		return
	}
	if err := unix.PidfdSendSignal(fd, unix.SIGHUP, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		log.Error(err, "Sending SIGHUP to the connection's process failed", "pid", pid)
	}
}

// procInContainer reports whether host process pid is in containerID's
// cgroup: Docker puts each container in a cgroup named after its full id
// (/docker/<id> with cgroupfs, docker-<id>.scope with systemd), on cgroup
// v1 and v2 alike.
func procInContainer(pid int, containerID string) (bool, error) {
	if len(containerID) < 12 {
		return false, fmt.Errorf("exec-inspect gave no container id (%q)", containerID)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return false, err
	}
	return cgroupsName(string(b), containerID), nil
}

// cgroupsName reports whether a /proc/<pid>/cgroup text has a cgroup path
// with a component naming id.
func cgroupsName(text, id string) bool {
	for _, line := range strings.Split(text, "\n") {
		// hierarchy-id:controllers:path
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, c := range strings.Split(parts[2], "/") {
			c = strings.TrimSuffix(strings.TrimPrefix(c, "docker-"), ".scope")
			if c == id {
				return true
			}
		}
	}
	return false
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
