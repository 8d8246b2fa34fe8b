package actions

import (
	"context"
	"io"
)

// HangupExitCode is what Execer.Exec returns when the connection went away
// before its process ended (128 + SIGHUP, as a shell reports it).
const HangupExitCode = 129

// ExecSpec is a process to run in a session container.
type ExecSpec struct {
	// Container is the runtime's name or id of the session container.
	Container string
	User      string
	WorkDir   string
	Env       []string
	Argv      []string
	// TTY: the process gets a terminal.
	TTY bool
	// Kind names the process in errors ("shell", "sftp", "hook", ...).
	Kind string
}

// TermSize is a terminal's size in characters.
type TermSize struct {
	Width, Height uint
}

// Stdio are the streams of a process run by Exec.
type Stdio struct {
	// Stdin may be nil: the process's stdin is closed at once.
	Stdin  io.Reader
	Stdout io.Writer
	// Stderr is unused with a TTY (the terminal carries both).
	Stderr io.Writer
	// Resize carries the terminal's size, first the initial one, then each
	// change, until it is closed; nil without a terminal.
	Resize <-chan TermSize
}

// Execer runs processes in session containers: the runtime's exec with
// streams and resizes (Docker's exec API; on Kubernetes, exec through the
// API server). Implementations log through the context's logger
// (logr.FromContext) when it carries one.
type Execer interface {
	// Exec runs spec in the container with the given streams and returns
	// the process's exit code. With spec.TTY, resizes are read from
	// stdio.Resize until it closes. When ctx ends first, or the reader of
	// stdio.Stdout goes away, the process gets SIGHUP and Exec returns
	// HangupExitCode without waiting for it long.
	Exec(ctx context.Context, spec ExecSpec, stdio Stdio) (int, error)
	// Run runs spec without a terminal or stdin, copies its stdout and
	// stderr to out and returns its exit code, once the process has
	// exited, even when a background child it started keeps the output
	// open. When ctx ends first, the process gets SIGHUP and the error is
	// ctx's cause. out is not written after Run returns.
	Run(ctx context.Context, spec ExecSpec, out io.Writer) (int, error)
	// PathExists reports whether path exists in the container; errors other
	// than "not found" are returned.
	PathExists(ctx context.Context, container, path string) (bool, error)
}
