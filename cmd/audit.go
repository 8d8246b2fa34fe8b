package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/alecthomas/kong"

	"github.com/podspawn/podspawn/actions/audit"
	"github.com/podspawn/podspawn/desired"
)

// auditPlan is what the audit log records about a command: with admin, an
// admin.<command> record of its arguments and outcome. A command that
// records one, and the daemon, need the audit log (when configured)
// before they change anything.
type auditPlan struct {
	admin         bool
	user, project string
	// daemon: a long-running process whose actions are the controller's;
	// SIGHUP reopens the audit log.
	daemon bool
}

// auditedCommand is a command that changes state.
type auditedCommand interface {
	auditPlan() auditPlan
}

func (c *StopCmd) auditPlan() auditPlan {
	k, _ := desired.ParseSessionKey(c.Session)
	return auditPlan{admin: !c.DryRun, user: k.User, project: k.Project}
}

func (c *RemoveUserCmd) auditPlan() auditPlan {
	return auditPlan{admin: !c.DryRun, user: c.Username}
}

func (c *AddUserCmd) auditPlan() auditPlan { return auditPlan{admin: true, user: c.Name} }

func (c *AddProjectCmd) auditPlan() auditPlan { return auditPlan{admin: true, project: c.Name} }

func (c *UpdateProjectCmd) auditPlan() auditPlan { return auditPlan{admin: true, project: c.Name} }

func (c *RemoveProjectCmd) auditPlan() auditPlan {
	return auditPlan{admin: !c.DryRun, project: c.Name}
}

// cleanup is recorded only when a pass removed something (see auditAdmin).
func (c *CleanupCmd) auditPlan() auditPlan {
	return auditPlan{admin: !c.DryRun && !c.Daemon, daemon: c.Daemon}
}

func (c *UpdateCmd) auditPlan() auditPlan { return auditPlan{admin: !c.Check} }

// Audit opens the audit log once (a disabled writer when log.audit_log is
// unset). The error says why it cannot be written.
func (a *App) Audit() (*audit.Writer, error) {
	if a.audit == nil && a.auditErr == nil {
		cfg, err := a.Config()
		if err != nil {
			return nil, err
		}
		a.audit, a.auditErr = audit.Open(cfg.Log.AuditLog, a.Log)
	}
	return a.audit, a.auditErr
}

// auditRequired reports log.audit_required (true when the config is unreadable).
func (a *App) auditRequired() bool {
	cfg, err := a.Config()
	return err != nil || cfg.Log.AuditRequired
}

// openAudit opens the audit log before a command changes state: an audit
// log that cannot be written stops the command unless it is not required,
// in which case it warns and the command goes on without it.
func (a *App) openAudit() error {
	if _, err := a.Config(); err != nil {
		return nil // the command reports the config error itself
	}
	_, err := a.Audit()
	if err == nil {
		return nil
	}
	if a.auditRequired() {
		return fmt.Errorf("%w; nothing was changed", err)
	}
	a.Log.Error(nil, "Audit log cannot be written; continuing without it (log.audit_required is false)", "error", err.Error())
	return nil
}

// runAudited runs the selected command with its audit records around it.
func runAudited(kctx *kong.Context, a *App, args []string) error {
	var plan auditPlan
	node := kctx.Selected()
	if node == nil {
		return kctx.Run(a)
	}
	ac, audited := node.Target.Addr().Interface().(auditedCommand)
	if audited {
		plan = ac.auditPlan()
		// --dry-run and --check change nothing and need no audit log.
		audited = plan.admin || plan.daemon
	}
	if audited {
		if plan.daemon {
			a.auditActor = audit.ActorController
		}
		if err := a.openAudit(); err != nil {
			return err
		}
		if plan.daemon {
			stop := reopenOnHangup(a)
			defer stop()
		}
	}
	err := kctx.Run(a)
	if !audited || !plan.admin {
		return err
	}
	if werr := a.auditAdmin(node.Name, plan, args, err); werr != nil {
		if !a.auditRequired() {
			a.Log.Error(nil, "Writing audit event failed; continuing (log.audit_required is false)", "error", werr.Error())
			return err
		}
		return errors.Join(err, fmt.Errorf("the command ran, but its audit record could not be written: %w", werr))
	}
	return err
}

// auditAdmin writes admin.<command>. A cleanup pass that removed nothing
// is not recorded: the timer runs one every minute.
func (a *App) auditAdmin(name string, plan auditPlan, args []string, runErr error) error {
	if name == "cleanup" && a.removed() == 0 {
		return nil
	}
	e := audit.Event{Event: audit.AdminPrefix + name, User: audit.Text(plan.user), Project: audit.Text(plan.project),
		Actor: a.auditActor, Outcome: audit.OutcomeSuccess}
	for _, s := range args {
		e.Args = append(e.Args, audit.Text(s))
	}
	if runErr != nil {
		e.Outcome, e.Error = audit.OutcomeFailure, audit.Text(runErr.Error())
	}
	return a.audit.Write(e)
}

// removed counts what this process's executors removed.
func (a *App) removed() int64 {
	var n int64
	for _, ex := range a.auditExecs {
		n += ex.Removed()
	}
	return n
}

// reopenOnHangup reopens the audit log on SIGHUP (logrotate's
// postrotate) until stop. Writes notice a renamed file anyway; the signal
// also lets the daemon let go of the old file at once.
func reopenOnHangup(a *App) (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-ch:
				if err := a.audit.Reopen(); err != nil {
					a.Log.Error(err, "Reopening the audit log failed; retrying at the next event")
				}
			case <-done:
				return
			}
		}
	}()
	return func() { signal.Stop(ch); close(done) }
}
