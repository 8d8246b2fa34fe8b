package spawn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"

	"github.com/podspawn/podspawn/actions"
)

// onCreateTimeout bounds on_create: it runs under the user's lock, which
// every other connection and the cleanup of that user wait for.
var onCreateTimeout = 10 * time.Minute

const (
	// hookOutputLimit is how much of on_create's output (its tail) is
	// kept to show the user.
	hookOutputLimit = 64 << 10
	// markerDir holds the on_create markers inside the session container.
	markerDir = "/var/lib/podspawn"
)

// Exit codes of claimScript.
const (
	claimRun         = 0
	claimDone        = 10
	claimInterrupted = 11
)

// claimScript decides, as root inside the container, whether on_create
// runs now: not if it finished before, not if an earlier attempt started
// and never finished (a killed spawn or a timeout; running it twice is
// worse than not finishing it). Otherwise it records the start.
var claimScript = fmt.Sprintf(`d=%s
[ -e "$d/on_create.done" ] && exit %d
[ -e "$d/on_create.started" ] && exit %d
mkdir -p "$d" && : > "$d/on_create.started"
`, markerDir, claimDone, claimInterrupted)

// doneScript records on_create's result ($1: exit code or "error").
const doneScript = `echo "$1" > ` + markerDir + `/on_create.done`

// hookExec is a hook process of the connection's user: sh -c in the home
// directory, with the login environment on top of the session's.
func hookExec(att *Attachment, c Connection, script string) actions.ExecSpec {
	return actions.ExecSpec{
		Container: att.ContainerID,
		User:      att.Key.User,
		WorkDir:   "/home/" + att.Key.User,
		Env:       execEnv(c, att.Session.Spec.Shell),
		Kind:      "hook",
		Argv:      []string{"sh", "-c", script},
	}
}

// rootExec runs a marker script as root.
func rootExec(att *Attachment, script string, args ...string) actions.ExecSpec {
	argv := append([]string{"sh", "-c", script, "podspawn-hook"}, args...)
	return actions.ExecSpec{Container: att.ContainerID, User: "root", Kind: "hook marker", Argv: argv}
}

func warning(format string, args ...any) string {
	return "podspawn: warning: " + fmt.Sprintf(format, args...) + "\n"
}

// OnCreate runs the generation's on_create hook unless it already ran
// in this container. The caller holds the user's lock, so another
// connection of the user waits here instead of attaching while the
// session is half set up (G22). Markers written as root in the container
// make it run at most once per container, whatever races or restarts of
// spawn happen. The hook's output and any warning are returned for the
// connection's stderr; a failing hook never blocks the session.
func OnCreate(ex actions.Execer, baseLog logr.Logger) func(ctx context.Context, att *Attachment) string {
	return func(ctx context.Context, att *Attachment) string { return runOnCreate(ctx, ex, baseLog, att) }
}

func runOnCreate(ctx context.Context, ex actions.Execer, baseLog logr.Logger, att *Attachment) string {
	spec := att.Session.Spec
	if strings.TrimSpace(spec.OnCreate) == "" {
		return ""
	}
	log := baseLog.WithValues("user", att.Key.User, "project", att.Key.Project, "container", spec.ContainerName, "hook", "on_create")
	var claimOut bytes.Buffer
	code, err := ex.Run(logr.NewContext(ctx, log), rootExec(att, claimScript), &claimOut)
	switch {
	case err != nil:
		log.Error(err, "Checking the on_create marker failed")
		return warning("on_create was not run: checking whether it already ran failed: %v", err)
	case code == claimDone:
		return ""
	case code == claimInterrupted:
		log.Info("Not rerunning on_create that an earlier connection started and never finished")
		return warning("on_create was started by an earlier connection and never finished (a crash or timeout); it is not run twice. "+
			"Run the setup yourself, or ask an admin for a fresh container: podspawn stop %s", att.Key)
	case code != claimRun:
		log.Info("Cannot record on_create in the container; not running it", "exitCode", code, "output", strings.TrimSpace(claimOut.String()))
		return warning("on_create was not run: it could not be recorded in %s of the container (exit %d: %s)", markerDir, code, strings.TrimSpace(claimOut.String()))
	}

	log.Info("Running hook")
	hctx, cancel := context.WithTimeout(ctx, onCreateTimeout)
	defer cancel()
	out := &tailBuffer{limit: hookOutputLimit}
	code, err = ex.Run(logr.NewContext(hctx, log), hookExec(att, Connection{Key: att.Key}, spec.OnCreate), out)
	result := strconv.Itoa(code)
	if err != nil {
		result = "error"
	}
	var markOut bytes.Buffer
	if mcode, merr := ex.Run(logr.NewContext(ctx, log), rootExec(att, doneScript, result), &markOut); merr != nil || mcode != 0 {
		// The start marker still keeps it from running twice.
		log.Error(errors.Join(merr, fmt.Errorf("exit %d: %s", mcode, strings.TrimSpace(markOut.String()))), "Recording on_create's result failed")
	}

	notice := out.String()
	if notice != "" && !strings.HasSuffix(notice, "\n") {
		notice += "\n"
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		log.Info("Hook timed out", "timeout", onCreateTimeout)
		notice += warning("on_create did not finish within %s and was stopped; the session starts anyway", onCreateTimeout)
	case err != nil:
		log.Error(err, "Hook could not run")
		notice += warning("on_create could not run: %v; the session starts anyway", err)
	case code != 0:
		log.Info("Hook failed", "exitCode", code)
		notice += warning("on_create failed with exit code %d; the session starts anyway", code)
	default:
		log.Info("Hook finished")
	}
	return notice
}

// runConnectionHooks runs after the user's lock was released and before
// the connection's process: it shows what on_create left for this
// connection, then runs on_start, which runs on every connection. Hook
// output goes to stderr only, since stdout may carry sftp or a command's
// data; a failing on_start is a warning.
func runConnectionHooks(ctx context.Context, ex actions.Execer, att *Attachment, c Connection, log logr.Logger) {
	stderr := c.Stdio.Stderr
	if stderr == nil {
		stderr = io.Discard
	}
	if att.Notice != "" {
		io.WriteString(stderr, att.Notice)
	}
	hook := att.Session.Spec.OnStart
	if strings.TrimSpace(hook) == "" {
		return
	}
	log = log.WithValues("user", att.Key.User, "project", att.Key.Project, "container", att.Session.Spec.ContainerName, "hook", "on_start")
	log.V(1).Info("Running hook")
	code, err := ex.Run(logr.NewContext(ctx, log), hookExec(att, c, hook), stderr)
	switch {
	case err != nil && ctx.Err() != nil:
		log.Info("Connection ended during hook")
	case err != nil:
		id := NewIncidentID()
		log.Error(err, "Hook could not run", "incident", id)
		fmt.Fprint(stderr, warning("on_start could not run (incident %s; your administrator finds the details under this id in podspawn's log)", id))
	case code != 0:
		log.Info("Hook failed", "exitCode", code)
		fmt.Fprint(stderr, warning("on_start failed with exit code %d", code))
	}
}

// tailBuffer keeps the last limit bytes written to it.
type tailBuffer struct {
	limit     int
	buf       []byte
	truncated bool
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.limit; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
		b.truncated = true
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	if b.truncated {
		return "[... earlier output cut ...]\n" + string(b.buf)
	}
	return string(b.buf)
}
