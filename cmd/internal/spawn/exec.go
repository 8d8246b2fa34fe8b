package spawn

import (
	"context"
	"errors"
	"io"
	"os"
	"os/signal"
	"path"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/podspawn/podspawn/actions"
)

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

// Stdio are the connection's streams (normally the process's own).
type Stdio struct {
	Stdin  *os.File
	Stdout *os.File
	Stderr io.Writer
}

// hangupExitCode is returned when the connection went away first
// (128 + SIGHUP, as a shell reports it).
const hangupExitCode = actions.HangupExitCode

// runProcess runs the connection's process in the container with the
// connection's stdio and returns its exit code. With a terminal on the
// client's side, it is put in raw mode and its size is forwarded now and
// on every SIGWINCH. When ctx ends (SIGHUP, SIGTERM, SIGINT, or the
// client's end of stdout closing) the process gets SIGHUP, like a shell
// whose terminal went away (see actions.Execer).
func runProcess(ctx context.Context, ex actions.Execer, spec actions.ExecSpec, stdio Stdio) (int, error) {
	s := actions.Stdio{Stdout: stdio.Stdout, Stderr: stdio.Stderr}
	if stdio.Stdin != nil {
		s.Stdin = stdio.Stdin
	}
	if spec.TTY {
		if fd, ok := terminalFd(stdio.Stdin, stdio.Stdout); ok {
			if stdio.Stdin != nil && fd == int(stdio.Stdin.Fd()) {
				if old, err := term.MakeRaw(fd); err == nil {
					defer term.Restore(fd, old)
				}
			}
			sizes, stop := watchSize(fd)
			defer stop()
			s.Resize = sizes
		}
	}
	return ex.Exec(ctx, spec, s)
}

func terminalFd(stdin, stdout *os.File) (int, bool) {
	for _, f := range []*os.File{stdin, stdout} {
		if f != nil && term.IsTerminal(int(f.Fd())) {
			return int(f.Fd()), true
		}
	}
	return 0, false
}

// watchSize sends the terminal's size now and on every SIGWINCH, until
// stop, which closes the channel.
func watchSize(fd int) (<-chan actions.TermSize, func()) {
	sizes := make(chan actions.TermSize, 1)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGWINCH)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		defer close(sizes)
		for {
			if w, h, err := term.GetSize(fd); err == nil && w > 0 && h > 0 {
				select {
				case sizes <- actions.TermSize{Width: uint(w), Height: uint(h)}:
				case <-done:
					return
				}
			}
			select {
			case <-ch:
			case <-done:
				return
			}
		}
	}()
	return sizes, func() {
		signal.Stop(ch)
		close(done)
		<-finished
	}
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
