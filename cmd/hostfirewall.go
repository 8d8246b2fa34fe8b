package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/actions/hostfw"
	"github.com/podspawn/podspawn/controller"
	"github.com/podspawn/podspawn/desired/config"
)

// hostFirewall is the host access rules (security.block_host_access and
// security.allowed_host_ports), kept by cleanup passes, the daemon's
// resyncs, every session creation and server-setup, and read by doctor.
type hostFirewall interface {
	Ensure(ctx context.Context) ([]string, error)
	Check(ctx context.Context) (hostfw.State, error)
}

// newHostFirewall builds the real one; the tests replace it, so that no
// unit test touches the host's iptables.
var newHostFirewall = func(cfg config.Config) hostFirewall {
	ports := make([]hostfw.Port, 0, len(cfg.Security.HostPorts))
	for _, p := range cfg.Security.HostPorts {
		ports = append(ports, hostfw.Port{Protocol: p.Protocol, Number: p.Port})
	}
	return hostfw.New(cfg.Security.BlockHostAccess, ports)
}

// executorFirewall is what the executor ensures before creating a session:
// only root can write the host's firewall (spawn runs as root through
// sudo; with ssh.use_sudo off it runs as the user, and the root-run
// cleanup daemon and server-setup keep the rules).
func executorFirewall(cfg config.Config) actions.HostFirewall {
	if os.Geteuid() != 0 {
		return nil
	}
	return newHostFirewall(cfg)
}

// ensureHostFirewall brings the rules in line with the config once, for a
// daemon resync, and logs what it changed: a change outside of a config
// edit means something removed them (a firewall reload), which the
// operator should hear about. A one-shot pass prints the changes instead
// (see CleanupCmd.Run).
func (a *App) ensureHostFirewall(ctx context.Context) error {
	changed, err := a.syncHostFirewall(ctx)
	for _, c := range changed {
		a.Log.Info("Host access rules changed", "change", c)
	}
	return err
}

// syncHostFirewall brings the rules in line with the config once and
// returns what it changed (also when it then failed).
func (a *App) syncHostFirewall(ctx context.Context) ([]string, error) {
	cfg, err := a.Config()
	if err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		a.Log.V(1).Info("Not root: host access rules are left to the root-run cleanup daemon and server-setup")
		return nil, nil
	}
	changed, err := newHostFirewall(cfg).Ensure(ctx)
	if err != nil {
		return changed, fmt.Errorf("host access rules (security.block_host_access): %w", err)
	}
	return changed, nil
}

// passError is a cleanup pass's exit: its failed or held actions, or else
// the host access rules' failure.
func passError(rep controller.Report, fwErr error) error {
	err := failureError(rep)
	if fwErr == nil {
		return err
	}
	var ee *ExitError
	if errors.As(err, &ee) && ee.Err != nil {
		return &ExitError{Code: 1, Err: fmt.Errorf("%v\n%w", ee.Err, fwErr)}
	}
	return &ExitError{Code: 1, Err: fwErr}
}
