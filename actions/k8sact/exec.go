package k8sact

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/client-go/util/exec"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/observed/k8sobs"
)

// Execer is actions.Execer through the API server's exec: client-go's
// WebSocket executor, falling back to SPDY for servers without it.
type Execer struct {
	C *k8sobs.Client
	// Log is used unless the context carries a logger (logr.NewContext).
	Log logr.Logger
}

var _ actions.Execer = Execer{}

// Kubernetes' exec has no user, working directory or environment of its
// own, so the container (root) sets them up itself with what every image
// with a shell has: su switches to the session's user, and the inner
// script exports the variables and changes directory. "--" ends su's
// options, so argv words that look like options reach the command.
//
// asUserScript: $1 the inner script, $2 the user, then the inner
// script's arguments.
const asUserScript = `i=$1; u=$2; shift 2
if [ -z "$u" ] || [ "$u" = root ]; then exec /bin/sh -c "$i" podspawn "$@"; fi
exec su -s /bin/sh -c "$i" -- "$u" podspawn "$@"`

// innerScript: $1 the directory, $2 how many VAR=value words follow,
// then those words and the argv.
const innerScript = `d=$1; n=$2; shift 2
while [ "$n" -gt 0 ]; do export "$1"; shift; n=$((n - 1)); done
cd "$d" 2>/dev/null || cd 2>/dev/null || cd /
exec "$@"`

// command is the exec's argv for spec.
func command(spec actions.ExecSpec) []string {
	var env []string
	for _, e := range spec.Env {
		if k, _, ok := strings.Cut(e, "="); ok && k != "" {
			env = append(env, e)
		}
	}
	argv := []string{"/bin/sh", "-c", asUserScript, "podspawn", innerScript, spec.User, spec.WorkDir, strconv.Itoa(len(env))}
	argv = append(argv, env...)
	return append(argv, spec.Argv...)
}

func (e Execer) target(ref string) (pod, container string, err error) {
	name, ctr, _, ok := k8sobs.ParseObjectID(ref)
	if !ok || ctr == "" {
		return "", "", fmt.Errorf("%q does not name a container of a session pod: %w", ref, actions.ErrTerminal)
	}
	return name, ctr, nil
}

// executor builds the exec request's streaming executor.
func (e Execer) executor(pod, container string, argv []string, tty, stdin bool) (remotecommand.Executor, error) {
	u := e.C.API.PodExecURL(e.C.Namespace, pod,
		&corev1.PodExecOptions{Container: container, Command: argv, Stdin: stdin, Stdout: true, Stderr: !tty, TTY: tty})
	ws, err := remotecommand.NewWebSocketExecutor(e.C.Config, "GET", u.String())
	if err != nil {
		return nil, fmt.Errorf("exec over websocket: %w", err)
	}
	spdy, err := remotecommand.NewSPDYExecutor(e.C.Config, "POST", u)
	if err != nil {
		return nil, fmt.Errorf("exec over spdy: %w", err)
	}
	// SPDY only when the server refused the WebSocket upgrade (an older
	// API server, or a proxy in the way).
	return remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
}

// exitCode turns the stream's end into an exit code.
func exitCode(err error) (int, error) {
	var ce utilexec.CodeExitError
	if errors.As(err, &ce) {
		return ce.Code, nil
	}
	if err != nil {
		return -1, err
	}
	return 0, nil
}

// sizeQueue feeds the SSH client's window sizes to the executor.
type sizeQueue struct{ c <-chan actions.TermSize }

func (q sizeQueue) Next() *remotecommand.TerminalSize {
	s, ok := <-q.c
	if !ok {
		return nil
	}
	return &remotecommand.TerminalSize{Width: uint16(min(s.Width, 65535)), Height: uint16(min(s.Height, 65535))}
}

// Exec implements actions.Execer. When ctx ends the stream is closed: the
// process's terminal goes away (SIGHUP) and HangupExitCode is returned.
func (e Execer) Exec(ctx context.Context, spec actions.ExecSpec, stdio actions.Stdio) (int, error) {
	pod, ctr, err := e.target(spec.Container)
	if err != nil {
		return -1, err
	}
	// A TTY exec ends early if its stdin hits EOF, so stdin is always a
	// stream the caller closes, never nil.
	stdin := stdio.Stdin
	if stdin == nil {
		pr, pw := io.Pipe()
		defer pw.Close()
		stdin = pr
	}
	ex, err := e.executor(pod, ctr, command(spec), spec.TTY, true)
	if err != nil {
		return -1, fmt.Errorf("starting %s in the session pod: %w", spec.Kind, err)
	}
	opts := remotecommand.StreamOptions{Stdin: stdin, Stdout: stdio.Stdout, Tty: spec.TTY}
	if !spec.TTY {
		opts.Stderr = stdio.Stderr
	}
	if spec.TTY && stdio.Resize != nil {
		opts.TerminalSizeQueue = sizeQueue{stdio.Resize}
	}
	code, err := exitCode(ex.StreamWithContext(ctx, opts))
	if ctx.Err() != nil {
		e.hangup(ctx, spec)
		return actions.HangupExitCode, nil
	}
	if err != nil {
		return -1, fmt.Errorf("%s in the session pod: %w", spec.Kind, err)
	}
	return code, nil
}

// hangupScript sends SIGHUP to every process whose environment holds $1,
// the connection's lease marker (see actions.LeaseKillScript for how the
// environment is read with sh alone).
const hangupScript = `m=$1
for d in /proc/[0-9]*; do
	e=
	{ while IFS= read -r l || [ -n "$l" ]; do e="$e$l
"; done; } 2>/dev/null <"$d/environ" || continue
	case $e in *"$m"[!0-9]*) kill -HUP "${d#/proc/}" 2>/dev/null ;; esac
done`

// hangup sends SIGHUP to the processes of a connection that went away, as
// Docker's exec does: closing an exec stream does not signal its process,
// and Kubernetes' exec has no signal call. The connection's processes
// carry its lease marker; without one there is nothing to find them by.
func (e Execer) hangup(ctx context.Context, spec actions.ExecSpec) {
	log := e.logger(ctx)
	var marker string
	for _, v := range spec.Env {
		if strings.HasPrefix(v, desired.LeaseEnv+"=") {
			marker = v
		}
	}
	if marker == "" {
		return
	}
	log.Info("Connection ended before its process; sending it SIGHUP", "kind", spec.Kind)
	bg, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	var out strings.Builder
	hup := actions.ExecSpec{Container: spec.Container, User: spec.User, Kind: "hangup", Argv: []string{"sh", "-c", hangupScript, "podspawn-hangup", marker}}
	if code, err := e.Run(bg, hup, &out); err != nil || code != 0 {
		log.Error(err, "Sending SIGHUP to the connection's processes failed", "exitCode", code, "output", strings.TrimSpace(out.String()))
	}
}

// lockedWriter serializes the executor's stdout and stderr copies.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// Run implements actions.Execer.
func (e Execer) Run(ctx context.Context, spec actions.ExecSpec, out io.Writer) (int, error) {
	pod, ctr, err := e.target(spec.Container)
	if err != nil {
		return -1, err
	}
	ex, err := e.executor(pod, ctr, command(spec), false, false)
	if err != nil {
		return -1, fmt.Errorf("starting %s in the session pod: %w", spec.Kind, err)
	}
	w := &lockedWriter{w: out}
	code, err := exitCode(ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: w, Stderr: w}))
	if ctx.Err() != nil {
		return -1, context.Cause(ctx)
	}
	if err != nil {
		return -1, fmt.Errorf("%s in the session pod: %w", spec.Kind, err)
	}
	return code, nil
}

// PathExists implements actions.Execer with test -e.
func (e Execer) PathExists(ctx context.Context, container, path string) (bool, error) {
	var out strings.Builder
	code, err := e.Run(ctx, actions.ExecSpec{Container: container, Argv: []string{"test", "-e", path}, Kind: "test"}, &out)
	switch {
	case err != nil:
		return false, err
	case code == 0:
		return true, nil
	case code == 1:
		return false, nil
	}
	return false, fmt.Errorf("checking %s in the session pod: exit %d: %s", path, code, strings.TrimSpace(out.String()))
}

// logger is the context's logger, else e.Log.
func (e Execer) logger(ctx context.Context) logr.Logger {
	if log, err := logr.FromContext(ctx); err == nil {
		return log
	}
	return e.Log
}
