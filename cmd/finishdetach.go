package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/podspawn/podspawn/desired"
)

// FinishDetachCmd reconciles one key after its last connection ended:
// spawn starts it, detached, to tear down a session that ends at
// disconnect once the client already has its exit code.
type FinishDetachCmd struct {
	User    string `arg:"" help:"User of the session."`
	Project string `help:"Project of the session (empty: the default session)."`
}

// Run reconciles the key under the user's lock.
func (c *FinishDetachCmd) Run(a *App) error {
	key := desired.SessionKey{User: c.User, Project: c.Project}
	if !key.Valid() {
		return fmt.Errorf("invalid session %q", key.String())
	}
	cfg, err := a.Config()
	if err != nil {
		return err
	}
	log, closeLog := spawnLogger(a, cfg.Log.File)
	defer closeLog()
	a.Log = log
	ctx, cancel := context.WithTimeout(context.Background(), userLockTimeout+2*time.Minute)
	defer cancel()
	ctrl, err := a.Controller(ctx, ControllerOptions{Workers: 1})
	if err != nil {
		log.Error(err, "Finishing a disconnect failed; the next cleanup pass does it", "user", key.User, "project", key.Project)
		return err
	}
	if rep := ctrl.ReconcileKey(ctx, key); rep.Err != nil {
		log.Error(rep.Err, "Finishing a disconnect failed; the next cleanup pass does it", "user", key.User, "project", key.Project)
		return rep.Err
	}
	return nil
}

// startFinishDetach starts this binary's finish-detach for key in its own
// session with no terminal and no pipes to sshd, so neither sshd nor sudo
// waits for it.
func startFinishDetach(a *App, key desired.SessionKey) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	args := []string{"--config", a.CLI.Config, "--log-format", a.CLI.LogFormat, "finish-detach", key.User}
	if key.Project != "" {
		args = append(args, "--project", key.Project)
	}
	cmd := exec.Command(exe, args...) // nil stdio is /dev/null
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	return cmd.Process.Release()
}
