package spawn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path"
	"strings"
	"syscall"
	"time"

	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// ExecAPI is the part of the Docker client that runs a connection's process.
type ExecAPI interface {
	ContainerExecCreate(ctx context.Context, containerID string, options container.ExecOptions) (container.ExecCreateResponse, error)
	ContainerExecAttach(ctx context.Context, execID string, config container.ExecAttachOptions) (types.HijackedResponse, error)
	ContainerExecInspect(ctx context.Context, execID string) (container.ExecInspect, error)
	ContainerExecResize(ctx context.Context, execID string, options container.ResizeOptions) error
	// ContainerStatPath checks that the sftp server exists before sftp
	// starts (see checkSFTPServer).
	ContainerStatPath(ctx context.Context, containerID, path string) (container.PathStat, error)
}

// Route kinds.
const (
	RouteShell   = "shell"
	RouteSFTP    = "sftp"
	RouteCommand = "command"
)

// Command is what runs in the container for a connection.
type Command struct {
	Kind string
	Argv []string
	// TTY: the process gets a terminal (only when the client has one).
	TTY bool
}

// Route maps SSH_ORIGINAL_COMMAND to the process to run. No command means
// the login shell; an sftp-server or internal-sftp request means the
// configured sftp server; anything else runs through sh -c. A terminal is
// used only when the client asked for one (stdin is a tty), so piped data
// stays binary-safe.
func Route(original, shell, sftpServer string, stdinTTY bool) Command {
	fields := strings.Fields(original)
	if len(fields) == 0 {
		return Command{Kind: RouteShell, Argv: []string{shell, "-l"}, TTY: stdinTTY}
	}
	if fields[0] == "internal-sftp" || path.Base(fields[0]) == "sftp-server" {
		return Command{Kind: RouteSFTP, Argv: append([]string{sftpServer}, fields[1:]...)}
	}
	return Command{Kind: RouteCommand, Argv: []string{"sh", "-c", original}, TTY: stdinTTY}
}

// ExecSpec is a process to run in a session container.
type ExecSpec struct {
	ContainerID string
	User        string
	WorkDir     string
	Env         []string
	Command     Command
}

// Stdio are the connection's streams (normally the process's own).
type Stdio struct {
	Stdin  *os.File
	Stdout *os.File
	Stderr io.Writer
}

// hangupExitCode is returned when the connection went away first
// (128 + SIGHUP, as a shell reports it).
const hangupExitCode = 129

// Exec runs spec in the container with the connection's stdio and returns
// the process's exit code. When ctx ends (SIGHUP, SIGTERM, SIGINT, or the
// client's end of stdout closing) the process gets SIGHUP, like a shell
// whose terminal went away, and Exec returns without waiting for it long.
func Exec(ctx context.Context, api ExecAPI, spec ExecSpec, stdio Stdio, log logr.Logger) (int, error) {
	// Docker calls must outlive a hangup: the exit code and the signal to
	// the process are still needed after ctx is cancelled.
	bg := context.WithoutCancel(ctx)
	tty := spec.Command.TTY
	created, err := api.ContainerExecCreate(bg, spec.ContainerID, container.ExecOptions{
		User: spec.User, WorkingDir: spec.WorkDir, Env: spec.Env, Cmd: spec.Command.Argv, Tty: tty,
		AttachStdin: true, AttachStdout: true, AttachStderr: true,
	})
	if err != nil {
		return -1, fmt.Errorf("starting %s in the session container: %w", spec.Command.Kind, err)
	}
	resp, err := api.ContainerExecAttach(bg, created.ID, container.ExecAttachOptions{Tty: tty})
	if err != nil {
		return -1, fmt.Errorf("attaching to %s in the session container: %w", spec.Command.Kind, err)
	}
	defer resp.Close()

	if tty {
		if fd, ok := terminalFd(stdio.Stdin, stdio.Stdout); ok {
			if fd == int(stdio.Stdin.Fd()) {
				if old, err := term.MakeRaw(fd); err == nil {
					defer term.Restore(fd, old)
				}
			}
			stop := forwardResize(bg, api, created.ID, fd, log)
			defer stop()
		}
	}

	go func() {
		// EOF on our stdin is EOF for the process: half-close so that
		// "cat" and friends finish, while their output keeps flowing.
		if _, err := io.Copy(resp.Conn, stdio.Stdin); err != nil {
			log.V(2).Info("Copying stdin ended", "error", err.Error())
		}
		resp.CloseWrite()
	}()
	outDone := make(chan error, 1)
	go func() {
		var err error
		if tty {
			_, err = io.Copy(stdio.Stdout, resp.Reader)
		} else {
			_, err = stdcopy.StdCopy(stdio.Stdout, stdio.Stderr, resp.Reader)
		}
		outDone <- err
	}()

	hangup := func(why string) (int, error) {
		log.Info("Connection ended before its process; sending it SIGHUP", "reason", why)
		signalExec(bg, api, created.ID, log)
		resp.Close()
		return hangupExitCode, nil
	}
	select {
	case err := <-outDone:
		if err != nil && isClientGone(err) {
			return hangup("client stopped reading")
		}
		if err != nil {
			log.Error(err, "Copying output failed")
		}
	case <-ctx.Done():
		return hangup(context.Cause(ctx).Error())
	}
	return waitExit(ctx, api, created.ID, log)
}

func terminalFd(stdin, stdout *os.File) (int, bool) {
	for _, f := range []*os.File{stdin, stdout} {
		if f != nil && term.IsTerminal(int(f.Fd())) {
			return int(f.Fd()), true
		}
	}
	return 0, false
}

// forwardResize sets the exec's terminal size now and on every SIGWINCH.
func forwardResize(ctx context.Context, api ExecAPI, execID string, fd int, log logr.Logger) (stop func()) {
	resize := func() error {
		w, h, err := term.GetSize(fd)
		if err != nil || w <= 0 || h <= 0 {
			return nil
		}
		return api.ContainerExecResize(ctx, execID, container.ResizeOptions{Height: uint(h), Width: uint(w)})
	}
	// The exec may not have started yet when attach returns; Docker refuses
	// to resize it until it has, so retry briefly (as the docker CLI does).
	for i := 0; i < 10; i++ {
		if err := resize(); err == nil {
			break
		} else if i == 9 {
			log.V(1).Info("Setting the terminal size failed", "error", err.Error())
		}
		time.Sleep(time.Duration(i+1) * 10 * time.Millisecond)
	}
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGWINCH)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-ch:
				if err := resize(); err != nil {
					log.V(1).Info("Resizing the terminal failed", "error", err.Error())
				}
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(ch)
		close(done)
	}
}

// signalExec sends SIGHUP to the exec'd process through its host pid:
// Docker has no API to signal an exec, and closing the attach stream does
// not end the process.
func signalExec(ctx context.Context, api ExecAPI, execID string, log logr.Logger) {
	info, err := api.ContainerExecInspect(ctx, execID)
	if err != nil {
		log.Error(err, "Inspecting the connection's process failed; it keeps running")
		return
	}
	if !info.Running || info.Pid <= 0 {
		return
	}
	if err := unix.Kill(info.Pid, unix.SIGHUP); err != nil && !errors.Is(err, unix.ESRCH) {
		log.Error(err, "Sending SIGHUP to the connection's process failed", "pid", info.Pid)
	}
}

// waitExit waits for the exec to be reported finished and returns its exit
// code. The output stream can end a moment before Docker records the exit.
func waitExit(ctx context.Context, api ExecAPI, execID string, log logr.Logger) (int, error) {
	bg := context.WithoutCancel(ctx)
	delay := 5 * time.Millisecond
	for {
		info, err := api.ContainerExecInspect(bg, execID)
		if err != nil {
			return -1, fmt.Errorf("reading the exit code: %w", err)
		}
		if !info.Running {
			return info.ExitCode, nil
		}
		// The process closed its output but still runs: wait for it, or
		// for the connection to end.
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			log.Info("Connection ended while its process was still running; sending it SIGHUP")
			signalExec(bg, api, execID, log)
			return hangupExitCode, nil
		}
		if delay < time.Second {
			delay *= 2
		}
	}
}

func isClientGone(err error) bool {
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, os.ErrClosed)
}

// WatchHangup cancels via the returned context when the reading end of f
// (the client's side of our stdout pipe or socket) goes away. sshd does not
// signal a forced command whose client vanished without a pty; it only
// closes its ends of the pipes, and a command that neither reads nor writes
// would otherwise hold its connection forever.
func WatchHangup(ctx context.Context, f *os.File) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	var st unix.Stat_t
	if f == nil || unix.Fstat(int(f.Fd()), &st) != nil {
		return ctx, func() { cancel(nil) }
	}
	if kind := st.Mode & unix.S_IFMT; kind != unix.S_IFIFO && kind != unix.S_IFSOCK {
		return ctx, func() { cancel(nil) }
	}
	fd := int(f.Fd())
	go func() {
		for ctx.Err() == nil {
			// POLLERR/POLLHUP are always reported; asking for no events
			// means a healthy pipe never wakes us.
			fds := []unix.PollFd{{Fd: int32(fd), Events: 0}}
			n, err := unix.Poll(fds, 500)
			if err != nil && !errors.Is(err, unix.EINTR) {
				return
			}
			if n > 0 && fds[0].Revents&(unix.POLLERR|unix.POLLHUP|unix.POLLNVAL) != 0 {
				cancel(errors.New("the client closed the connection"))
				return
			}
		}
	}()
	return ctx, func() { cancel(nil) }
}
