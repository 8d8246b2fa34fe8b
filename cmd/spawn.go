package main

import (
	"context"
	"fmt"
	"log/syslog"
	"os"
	"os/signal"
	osuser "os/user"
	"strconv"
	"syscall"
	"time"

	"github.com/go-logr/logr"

	"github.com/podspawn/podspawn/actions/audit"
	"github.com/podspawn/podspawn/cmd/internal/spawn"
	"github.com/podspawn/podspawn/controller"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/config"
)

// traceVerbosity is the -v count at which spawn logs every Docker or
// Kubernetes API request with its duration.
const traceVerbosity = 4

// spawnFailureCode is spawn's exit code when podspawn itself failed (as
// opposed to the user's command), the code ssh uses for its own errors.
const spawnFailureCode = 255

// SpawnCmd is the forced command of every podspawn key: it serves one SSH
// connection inside the user's session container.
type SpawnCmd struct {
	User    string `help:"User to serve. Under sudo the caller is the user and this must match it or be omitted; root without sudo must give it."`
	Project string `help:"Project session to attach to (default: PODSPAWN_PROJECT from the client, else the default session)."`
}

// Run serves the connection and exits with its process's exit code, or
// 255 when podspawn could not start it. Failures the user cannot act on
// reach them as a short message with an incident id; the details go to
// spawn's log under that id.
func (c *SpawnCmd) Run(a *App) error {
	// A vanished client must turn writes into EPIPE errors we handle, not
	// a silent death that skips releasing the connection.
	signal.Ignore(syscall.SIGPIPE)
	fail := func(err error) error { return &ExitError{Code: spawnFailureCode, Err: err} }

	cfg, err := a.Config()
	if err != nil {
		log, closeLog := defaultSpawnLogger(a)
		defer closeLog()
		return fail(spawn.Incident(log, err, "read its configuration"))
	}
	log, closeLog := spawnLogger(a, cfg.Log.File)
	defer closeLog()
	a.Log = log
	if a.CLI.Verbosity >= traceVerbosity {
		// Where a connection's setup spends its time, request by request.
		a.dockerObserver = func(op string, d time.Duration) {
			log.V(traceVerbosity).Info("Docker request", "operation", op, "duration", d)
		}
		a.kubeObserver = func(op string, d time.Duration) {
			log.V(traceVerbosity).Info("Kubernetes request", "operation", op, "duration", d)
		}
	}
	// A connection is not served without its audit record (unless
	// log.audit_required is false).
	if err := a.openAudit(); err != nil {
		return fail(spawn.Incident(log, fmt.Errorf("refusing the connection: %w", err), "write its audit log, so it refused the connection"))
	}
	client := audit.ClientAddress(os.Getenv("SSH_CONNECTION"))
	denied := func(user, project, reason string, err error) {
		spawn.AuditDenied(a.audit, func(werr error) { a.Log.Error(werr, "Writing audit event failed") }, user, project, client, reason, err)
	}
	user, err := spawn.ResolveUser(spawn.IdentityInput{
		EUID: os.Geteuid(), SudoUser: os.Getenv("SUDO_USER"), SudoUID: os.Getenv("SUDO_UID"),
		FlagUser: c.User, Group: cfg.SSH.Group, Direct: !cfg.SSH.UseSudo, Login: loginName(),
	})
	if err != nil {
		who := os.Getenv("SUDO_USER")
		if who == "" {
			who = c.User
		}
		denied(who, c.Project, controller.DeniedUnknownUser, err)
		return fail(err)
	}
	a.auditActor = user
	project, err := spawn.ResolveProject(c.Project, os.Getenv("PODSPAWN_PROJECT"))
	if err != nil {
		denied(user, os.Getenv("PODSPAWN_PROJECT"), "invalid-project", err)
		return fail(fmt.Errorf("%w (set with PODSPAWN_PROJECT or a <project>.pod host name)", err))
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ctx, stopWatch := spawn.WatchHangup(ctx, os.Stdout)
	defer stopWatch()

	key := desired.SessionKey{User: user, Project: project}
	code, err := c.serve(ctx, a, cfg, key, client)
	if err != nil {
		return fail(spawn.Incident(log, err, "start your session", "user", user, "project", project))
	}
	return &ExitError{Code: code}
}

// serve attaches the connection to key's session and runs its process.
func (c *SpawnCmd) serve(ctx context.Context, a *App, cfg config.Config, key desired.SessionKey, client string) (int, error) {
	log := a.Log
	ctrl, err := a.Controller(ctx, ControllerOptions{Workers: 1})
	if err != nil {
		return -1, err
	}
	rt, err := a.Runtime()
	if err != nil {
		return -1, err
	}
	execer := rt.Execer(log)
	sessions := &controller.Sessions{
		C: ctrl, Config: cfg, Containers: rt, Images: rt, Log: log,
		OnCreate: spawn.OnCreate(execer, log),
		Handoff:  func(key desired.SessionKey) error { return startFinishDetach(a, key) },
	}
	server := &spawn.Server{Sessions: sessions, Exec: execer, SFTPServer: cfg.SSH.SFTPServer, Log: log,
		Audit: spawn.Auditing{Log: a.audit, Required: cfg.Log.AuditRequired}}
	if cfg.SSH.AllowAgentForwarding {
		server.Agent = &spawn.Agent{Exec: execer, Dialer: newAgentDialer, Log: log}
		if cfg.Runtime == config.RuntimeKubernetes {
			server.Agent.Pod = &spawn.PodRelay{Path: agentRelayPath(cfg)}
		}
	}
	return server.Serve(ctx, spawn.Connection{
		Key:             key,
		OriginalCommand: os.Getenv("SSH_ORIGINAL_COMMAND"),
		Term:            os.Getenv("TERM"),
		AuthSock:        os.Getenv("SSH_AUTH_SOCK"),
		Client:          client,
		Stdio:           spawn.Stdio{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr},
	})
}

// agentRelayPath is where this spawn finds the agent relay program.
func agentRelayPath(cfg config.Config) string {
	exe, err := os.Executable()
	if err != nil {
		exe = ""
	}
	return cfg.Kubernetes.AgentRelayPath(exe)
}

// spawnLogger sends spawn's logs to log.file, else to syslog (where sshd
// and sudo log the same connection), else nowhere unless -v was given:
// spawn's stderr is the SSH client's terminal, which is no place for
// controller chatter. Errors still reach the user as the one "Error:" line
// main prints. A log.file that cannot be opened falls back to the same
// default (and says so there): a logging problem must not lock every user
// out.
func spawnLogger(a *App, file string) (logr.Logger, func()) {
	if file == "" {
		return defaultSpawnLogger(a)
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		log, closeLog := defaultSpawnLogger(a)
		log.Error(err, "Cannot open log.file, logging here instead", "file", file,
			"fix", fmt.Sprintf("create the directory or unset log.file in %s", a.CLI.Config))
		return log, closeLog
	}
	return newLogger(a.CLI.LogFormat, a.CLI.Verbosity, f), func() { f.Close() }
}

func defaultSpawnLogger(a *App) (logr.Logger, func()) {
	if a.CLI.Verbosity > 0 {
		return a.Log, func() {}
	}
	w, err := syslog.New(syslog.LOG_INFO|syslog.LOG_AUTHPRIV, "podspawn-spawn")
	if err != nil {
		return logr.Discard(), func() {}
	}
	return newLogger(a.CLI.LogFormat, 0, w), func() { w.Close() }
}

// loginName is the name of the effective user ("" if unknown).
func loginName() string {
	u, err := osuser.LookupId(strconv.Itoa(os.Geteuid()))
	if err != nil {
		return ""
	}
	return u.Username
}
