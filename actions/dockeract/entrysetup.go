package dockeract

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/desired/spec"
	"github.com/podspawn/podspawn/observed"
)

// entrySetupScript is the session container's own command when the user's
// account is set up at its start (entrySetupFits): the setup script, its
// "uid gid" line on stdout, then the image's command. Its arguments are
// the user, the shell and that command. The command is found on PATH by
// the script, as Docker finds it, rather than by the shell's exec, which
// in busybox runs its own applet of that name instead of the file.
const entrySetupScript = actions.UserSetupScript + `shift 2
cmd="$1"; shift
case "$cmd" in
*/*) ;;
*)
  IFS=:
  for d in $PATH; do
    if [ -n "$d" ] && [ -f "$d/$cmd" ] && [ -x "$d/$cmd" ]; then cmd="$d/$cmd"; break; fi
  done
  unset IFS
  ;;
esac
exec "$cmd" "$@"
`

// entrySetupArgv is the command of a container that sets up user's
// account before running cmd.
func entrySetupArgv(user, shell string, cmd []string) []string {
	return append([]string{"sh", "-c", entrySetupScript, "podspawn-setup", user, shell}, cmd...)
}

// hasEntrySetup reports whether a container's command is entrySetupArgv's.
func hasEntrySetup(cmd []string) bool {
	return len(cmd) > 2 && cmd[0] == "sh" && cmd[1] == "-c" && cmd[2] == entrySetupScript
}

// entrySetupFits reports whether a new session container can set up its
// user's account itself as it starts, which spares the exec that would do
// it after the start (a round trip of some 70 ms). That takes an image
// whose command runs as root with no entrypoint of its own (anything else
// would change what the image runs) and no persistent home: a home mount
// is checked to be the directory podspawn opened before the setup writes
// to it (setupSession). An image that cannot be read is left to the exec.
func (d *Executor) entrySetupFits(ctx context.Context, s *spec.Container) bool {
	if s.Role != observed.RoleSession || s.User == "" || len(s.Cmd) == 0 {
		return false
	}
	if _, ok := homeMount(s); ok {
		return false
	}
	img, err := d.API.ImageInspect(ctx, s.Image)
	if err != nil || img.Config == nil {
		return false
	}
	return len(img.Config.Entrypoint) == 0 && slices.Contains([]string{"", "root", "0", "root:root", "0:0"}, img.Config.User)
}

// errSetupLine stops reading the container's output at the setup's line.
var errSetupLine = errors.New("setup line read")

// setupLineWriter takes the container's stdout until the first newline.
type setupLineWriter struct{ buf bytes.Buffer }

func (w *setupLineWriter) Write(p []byte) (int, error) {
	w.buf.Write(p)
	if bytes.IndexByte(w.buf.Bytes(), '\n') >= 0 {
		return len(p), errSetupLine
	}
	return len(p), nil
}

// startWithEntrySetup starts a container whose command sets up user's
// account and returns once the account is there: it attaches to the
// container's output before the start, as `docker run` does, and reads
// up to the setup's line. A setup error is returned as setupErr, after
// the start succeeded.
func (d *Executor) startWithEntrySetup(ctx context.Context, id, user string) (setupErr, err error) {
	att, err := d.API.ContainerAttach(ctx, id, container.AttachOptions{Stream: true, Stdout: true, Stderr: true})
	if err != nil {
		return nil, fmt.Errorf("attaching to the container before its start: %w", err)
	}
	defer att.Close()
	// As in Exec: the hijacked connection ignores ctx.
	stop := context.AfterFunc(ctx, func() { att.Close() })
	defer stop()
	if err := d.API.ContainerStart(ctx, id, container.StartOptions{}); err != nil {
		return nil, fmt.Errorf("starting: %w", err)
	}
	var out setupLineWriter
	var stderr bytes.Buffer
	_, err = stdcopy.StdCopy(&out, &stderr, att.Reader)
	switch {
	case errors.Is(err, errSetupLine):
		return nil, nil
	case ctx.Err() != nil:
		return fmt.Errorf("setting up user %s in the container: it did not finish: %w", user, ctx.Err()), nil
	case err != nil:
		return fmt.Errorf("setting up user %s in the container: reading its output: %w", user, err), nil
	}
	// The output ended without the line: the container's command exited.
	code := -1
	if c, ierr := d.API.ContainerInspect(ctx, id); ierr == nil && c.State != nil {
		code = c.State.ExitCode
	}
	msg := strings.TrimSpace(stderr.String() + out.buf.String())
	return fmt.Errorf("setting up user %s in the container: script exited %d: %s", user, code, msg), nil
}
