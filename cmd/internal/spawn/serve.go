package spawn

import (
	"context"

	"golang.org/x/term"

	"github.com/podspawn/podspawn/desired"
)

// Connection is one SSH connection as sshd hands it to the forced command.
type Connection struct {
	Key desired.SessionKey
	// OriginalCommand is SSH_ORIGINAL_COMMAND ("" for a shell).
	OriginalCommand string
	// Term is the client's TERM.
	Term  string
	Stdio Stdio
}

// Serve attaches the connection to its session, runs its process in the
// session container and detaches, returning the process's exit code. The
// lease is released however the process ended; Serve returns an error only
// when the connection could not be attached or its process not started.
func Serve(ctx context.Context, s *Sessions, api ExecAPI, c Connection) (int, error) {
	// Setting up is not cut short by a hangup: a Docker call abandoned
	// midway can leave a half-made object behind (dockerd 20.10 even
	// creates a duplicate network when a create is retried while the
	// abandoned one is still in flight). Attach is bounded by the lock
	// and reconcile timeouts; a hangup is honoured once it returns.
	att, err := s.Attach(context.WithoutCancel(ctx), c.Key)
	if err != nil {
		return -1, err
	}
	spec := att.Session.Spec
	if ctx.Err() != nil {
		if derr := s.Detach(att); derr != nil {
			s.Log.Error(derr, "Detaching connection failed; the next reconcile releases it", "user", c.Key.User, "project", c.Key.Project)
		}
		return hangupExitCode, nil
	}
	runConnectionHooks(ctx, api, att, c, s.Log)
	stdinTTY := c.Stdio.Stdin != nil && term.IsTerminal(int(c.Stdio.Stdin.Fd()))
	cmd := Route(c.OriginalCommand, spec.Shell, s.Config.SSH.SFTPServer, stdinTTY)
	log := s.Log.WithValues("user", c.Key.User, "project", c.Key.Project, "container", spec.ContainerName, "route", cmd.Kind)
	log.V(1).Info("Running connection process", "tty", cmd.TTY)
	code, err := Exec(ctx, api, ExecSpec{
		ContainerID: att.ContainerID,
		User:        c.Key.User,
		WorkDir:     "/home/" + c.Key.User,
		Env:         execEnv(c, spec.Shell),
		Command:     cmd,
	}, c.Stdio, log)
	if derr := s.Detach(att); derr != nil {
		log.Error(derr, "Detaching connection failed; the next reconcile releases it")
	}
	return code, err
}

// execEnv is the environment of the connection's process, as a login
// would set it.
func execEnv(c Connection, shell string) []string {
	home := "/home/" + c.Key.User
	env := []string{"HOME=" + home, "USER=" + c.Key.User, "LOGNAME=" + c.Key.User, "SHELL=" + shell}
	if c.Term != "" {
		env = append(env, "TERM="+c.Term)
	}
	if c.Key.Project != "" {
		env = append(env, "PODSPAWN_PROJECT="+c.Key.Project)
	}
	return env
}
