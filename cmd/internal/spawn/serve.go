package spawn

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/term"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/controller"
	"github.com/podspawn/podspawn/desired"
)

// Connection is one SSH connection as sshd hands it to the forced command.
type Connection struct {
	Key desired.SessionKey
	// OriginalCommand is SSH_ORIGINAL_COMMAND ("" for a shell).
	OriginalCommand string
	// Term is the client's TERM.
	Term string
	// AuthSock is sshd's socket of the client's forwarded agent
	// (SSH_AUTH_SOCK; "" without ssh -A).
	AuthSock string
	// Client is the client's address (from SSH_CONNECTION), for the audit log.
	Client string
	Stdio  Stdio
}

// Attachment is a connection's hold on its session (the controller's).
type Attachment = controller.Attachment

// Sessions attaches connections to sessions (controller.Sessions).
type Sessions interface {
	Attach(ctx context.Context, key desired.SessionKey) (*Attachment, error)
	Detach(att *Attachment) error
}

// Server serves SSH connections in their session containers.
type Server struct {
	Sessions Sessions
	Exec     actions.Execer
	// SFTPServer is the sftp server's path inside session images.
	SFTPServer string
	// Agent forwards the client's agent into the container (nil: never).
	Agent *Agent
	Log   logr.Logger
	Audit Auditing
}

// Serve attaches the connection to its session, runs its process in the
// session container and detaches, returning the process's exit code. The
// lease is released however the process ended; Serve returns an error only
// when the connection could not be attached or its process not started.
func (sv *Server) Serve(ctx context.Context, c Connection) (int, error) {
	s, ex := sv.Sessions, sv.Exec
	// Setting up is not cut short by a hangup: a Docker call abandoned
	// midway can leave a half-made object behind (dockerd 20.10 even
	// creates a duplicate network when a create is retried while the
	// abandoned one is still in flight). Attach is bounded by the lock
	// and reconcile timeouts; a hangup is honoured once it returns.
	att, err := s.Attach(context.WithoutCancel(ctx), c.Key)
	if err != nil {
		if reason := DeniedReason(err); reason != "" {
			AuditDenied(sv.Audit.Log, func(werr error) { sv.Log.Error(werr, "Writing audit event failed", "event", "auth.denied") },
				c.Key.User, c.Key.Project, c.Client, reason, err)
		}
		return -1, err
	}
	spec := att.Session.Spec
	if ctx.Err() != nil {
		if derr := s.Detach(att); derr != nil {
			sv.Log.Error(derr, "Detaching connection failed; the next reconcile releases it", "user", c.Key.User, "project", c.Key.Project)
		}
		return hangupExitCode, nil
	}
	runConnectionHooks(ctx, ex, att, c, sv.Log)
	stdinTTY := c.Stdio.Stdin != nil && term.IsTerminal(int(c.Stdio.Stdin.Fd()))
	cmd := Route(c.OriginalCommand, spec.Shell, sv.SFTPServer, stdinTTY)
	log := sv.Log.WithValues("user", c.Key.User, "project", c.Key.Project, "container", spec.ContainerName, "route", cmd.Kind)
	if cmd.Kind == RouteSFTP {
		if msg := checkSFTPServer(ctx, ex, att.ContainerID, cmd.Argv[0], spec.Image); msg != "" {
			// sshd drops a subsystem's stderr, so an sftp client only sees
			// "Connection closed": the log is where the operator learns why.
			// A client that ran the server as a command sees the message.
			log.Error(errSFTPServerMissing, msg, "sftpServer", cmd.Argv[0], "image", spec.Image)
			fmt.Fprintln(c.Stdio.Stderr, msg)
			if derr := s.Detach(att); derr != nil {
				log.Error(derr, "Detaching connection failed; the next reconcile releases it")
			}
			return sftpMissingExitCode, nil
		}
	}
	if err := sv.auditConnect(c, att, cmd); err != nil {
		if derr := s.Detach(att); derr != nil {
			log.Error(derr, "Detaching connection failed; the next reconcile releases it")
		}
		return -1, err
	}
	env, stopAgent := sv.startAgent(ctx, att, c, log)
	started := time.Now()
	log.V(1).Info("Running connection process", "tty", cmd.TTY)
	code, err := runProcess(logr.NewContext(ctx, log), ex, actions.ExecSpec{
		Container: att.ContainerID,
		User:      c.Key.User,
		WorkDir:   "/home/" + c.Key.User,
		Env:       env,
		Kind:      cmd.Kind,
		Argv:      cmd.Argv,
		TTY:       cmd.TTY,
	}, c.Stdio)
	log.V(1).Info("Connection process ended", "exitCode", code, "duration", time.Since(started))
	stopAgent()
	sv.auditDisconnect(c, att, cmd, code, err, started)
	if derr := s.Detach(att); derr != nil {
		log.Error(derr, "Detaching connection failed; the next reconcile releases it")
	}
	return code, err
}

// startAgent returns the environment of the connection's process, with
// SSH_AUTH_SOCK when its agent is forwarded, and what stops the relay.
// The session works without the agent: a failure is only reported.
func (sv *Server) startAgent(ctx context.Context, att *Attachment, c Connection, log logr.Logger) ([]string, func()) {
	env := connectionEnv(c, att.Session.Spec.Shell, att.LeaseID)
	sock, stop, err := sv.Agent.Start(ctx, att, c)
	if err != nil {
		// Details (host paths, runtime errors) go to the log under an id.
		fmt.Fprintln(c.Stdio.Stderr, Incident(log, err, "forward your ssh agent into this connection"))
		return env, func() {}
	}
	if sock != "" {
		log.V(1).Info("Forwarding agent", "socket", sock)
		env = append(env, "SSH_AUTH_SOCK="+sock)
	}
	return env, stop
}

// sftpMissingExitCode is what a shell returns for a command not found.
const sftpMissingExitCode = 127

var errSFTPServerMissing = errors.New("sftp server not in the image")

// checkSFTPServer returns a message for the user if the sftp server is
// not in the container. Without this check the client would only report
// "Received message too long": Docker writes its exec error into the
// process's output, which sftp reads as a packet. Many images (distro
// base images among them) ship no sftp server, and scp uses sftp too.
// Any other answer from Docker lets sftp go ahead and fail on its own.
func checkSFTPServer(ctx context.Context, ex actions.Execer, containerID, server, image string) string {
	exists, err := ex.PathExists(context.WithoutCancel(ctx), containerID, server)
	if err != nil || exists {
		return ""
	}
	return fmt.Sprintf("podspawn: sftp and scp are not available in this session: %s does not exist in image %s "+
		"(install an sftp server in the image, e.g. Debian's openssh-sftp-server, or point ssh.sftp_server in the podspawn config at it)", server, image)
}

// connectionEnv is the environment of the connection's own process: a
// login's, plus its lease's marker, inherited by every process it starts,
// by which the processes of a connection that died without detaching are
// found and killed (desired.LeaseEnv). Hooks do not get the marker: what
// on_start starts serves the session, not this one connection.
func connectionEnv(c Connection, shell string, leaseID int64) []string {
	return append(execEnv(c, shell), desired.LeaseMarker(leaseID))
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
