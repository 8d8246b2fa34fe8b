package spawn

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/podspawn/podspawn/actions/audit"
	"github.com/podspawn/podspawn/controller"
	"github.com/podspawn/podspawn/desired/generation"
	"github.com/podspawn/podspawn/desired/sqlstore"
)

// Auditing is how a Server records connections in the audit log.
type Auditing struct {
	// Log is the audit log (nil or disabled: nothing is recorded).
	Log *audit.Writer
	// Required: a connection whose session.connect cannot be written is
	// refused (log.audit_required).
	Required bool
}

// auditKind is the connection's kind in the audit log. sshd hands a
// subsystem other than sftp to the forced command as its command line, so
// it is recorded as exec.
func auditKind(route string) string {
	if route == RouteCommand {
		return "exec"
	}
	return route
}

func connectionEvent(event string, c Connection, att *Attachment, cmd Command) audit.Event {
	e := audit.Event{Event: event, User: c.Key.User, Project: c.Key.Project, Session: att.Session.ID, Actor: c.Key.User,
		Container: att.Session.Spec.ContainerName, Lease: att.LeaseID, Client: c.Client, Kind: auditKind(cmd.Kind)}
	if cmd.Kind != RouteShell {
		e.Command, e.CommandTruncated = audit.Sanitize(c.OriginalCommand, audit.MaxCommand)
	}
	return e
}

// auditConnect records the connection; the error refuses it when the
// audit log is required and cannot be written.
func (sv *Server) auditConnect(c Connection, att *Attachment, cmd Command) error {
	err := sv.Audit.Log.Write(connectionEvent(audit.SessionConnect, c, att, cmd))
	if err == nil {
		return nil
	}
	if sv.Audit.Required {
		return fmt.Errorf("refusing the connection: the audit log cannot be written: %w", err)
	}
	sv.Log.Error(nil, "Writing audit event failed; continuing (log.audit_required is false)", "event", audit.SessionConnect, "error", err.Error())
	return nil
}

// auditDisconnect records the end of the connection with its exit code
// (-1 when its process could not be started) and duration.
func (sv *Server) auditDisconnect(c Connection, att *Attachment, cmd Command, code int, runErr error, started time.Time) {
	e := connectionEvent(audit.SessionDisconnect, c, att, cmd)
	ms := time.Since(started).Milliseconds()
	e.ExitCode, e.DurationMS = &code, &ms
	if runErr != nil {
		e.Error = audit.Text(runErr.Error())
	}
	if err := sv.Audit.Log.Write(e); err != nil {
		sv.Log.Error(err, "Writing audit event failed", "event", audit.SessionDisconnect)
	}
}

// DeniedReason classifies an error of Attach: the reason of an auth.denied
// record, or "" when the connection was not refused by policy (Docker
// down, a broken Podfile, ...).
func DeniedReason(err error) string {
	var d *controller.DeniedError
	var adm *sqlstore.AdmissionError
	var proj *generation.NotRegisteredError
	switch {
	case errors.As(err, &d):
		return d.Reason
	case errors.As(err, &adm):
		return "max-per-user"
	case errors.As(err, &proj):
		return "project-not-registered"
	}
	return ""
}

// AuditDenied records a refused connection (user is who asked, as far as
// it is known); a failure to write it is only logged, the connection is
// refused either way.
func AuditDenied(w *audit.Writer, log func(error), user, project, client, reason string, cause error) {
	e := audit.Event{Event: audit.AuthDenied, User: audit.Text(user), Project: audit.Text(project), Actor: audit.Text(user),
		Client: client, Reason: reason, Error: audit.Text(strings.TrimSpace(cause.Error()))}
	if err := w.Write(e); err != nil {
		log(err)
	}
}
