package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	setup "github.com/podspawn/podspawn/actions/hostsetup"
)

// ServerSetupCmd prepares the host: group, auth-keys account, directories,
// default config, sudoers drop-in and the sshd_config block.
type ServerSetupCmd struct {
	SSHDConfig  string `name:"sshd-config" help:"sshd_config to edit (default: ssh.sshd_config from the config, /etc/ssh/sshd_config)." type:"path" placeholder:"PATH"`
	SudoersFile string `help:"sudoers drop-in to write; sudo reads only files in /etc/sudoers.d without a '.' in their name." default:"/etc/sudoers.d/podspawn" type:"path" placeholder:"PATH"`
	DryRun      bool   `help:"Print what would be done ([dry-run] would ... lines) and change nothing."`
	NoReload    bool   `help:"Do not reload sshd after changing sshd_config."`
}

// Help explains what the command touches.
func (ServerSetupCmd) Help() string {
	return `Safe to run again: each step prints "ok" when it finds nothing to do.
It creates the group ssh.group and the account ssh.auth_keys_user, the key,
state, lock and homes directories with their modes, a commented default
config at --config if there is none, the sudoers drop-in (checked with
visudo before it is installed), the host access rules (the PODSPAWN-INPUT
iptables chain; removed instead when security.block_host_access is false),
and a "# BEGIN podspawn" ... "# END podspawn" block at the end of sshd_config. sshd_config is checked with "sshd -t" before
and after the change; on failure it is restored from <path>.podspawn.bak.`
}

// Run performs the setup.
func (c *ServerSetupCmd) Run(a *App) error {
	if os.Geteuid() != 0 {
		return errors.New("server-setup must run as root: it creates accounts and edits sshd_config and sudoers (try: sudo podspawn server-setup)")
	}
	ctx, cancel := signalContext()
	defer cancel()
	cfg, err := a.Config()
	if err != nil {
		return err
	}
	bin, err := executable()
	if err != nil {
		return err
	}
	cfgPath, err := filepath.Abs(a.CLI.Config)
	if err != nil {
		return fmt.Errorf("resolving --config %s: %w", a.CLI.Config, err)
	}
	sshdConfig := c.SSHDConfig
	if sshdConfig == "" {
		sshdConfig = cfg.SSH.SSHDConfig
	}
	r := setup.ExecRunner{}
	s := &setup.ServerSetup{
		Runner: r, Reloader: setup.DefaultReloader(r), Out: a.Stdout,
		DryRun: c.DryRun, NoReload: c.NoReload,
		Binary: bin, ConfigPath: cfgPath, Config: cfg,
		SSHDConfig: sshdConfig, SudoersFile: c.SudoersFile, SudoersDir: filepath.Dir(setup.DefaultSudoersFile),
		HostFirewall: newHostFirewall(cfg),
	}
	return s.Run(ctx)
}

// executable is the absolute, symlink-free path of the running binary:
// the path sshd and sudo will run.
func executable() (string, error) {
	p, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("finding the podspawn binary: %w", err)
	}
	if r, err := filepath.EvalSymlinks(p); err == nil {
		p = r
	}
	return p, nil
}
