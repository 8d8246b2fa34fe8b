package hostsetup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/podspawn/podspawn/desired/config"
	"github.com/podspawn/podspawn/desired/keys"
)

// ServerSetup prepares the host. Every step is idempotent and reports
// "ok" when it found nothing to do, so a second run changes nothing.
type ServerSetup struct {
	Runner   Runner
	Reloader Reloader
	Out      io.Writer
	DryRun   bool
	NoReload bool
	// Binary and ConfigPath are absolute; they go into sshd_config, the
	// key lines and sudoers.
	Binary     string
	ConfigPath string
	Config     config.Config
	SSHDConfig string
	// SudoersFile is the drop-in path; SudoersDir is the directory sudo
	// includes (/etc/sudoers.d), for the checks only a live drop-in needs.
	SudoersFile string
	SudoersDir  string
	// HostFirewall is the host access rules; nil skips the step.
	HostFirewall HostFirewall
}

// Run performs the setup in dependency order: accounts before the files
// they own, files before the sudoers rule and the sshd block that point
// at them, and the sshd reload last. It stops at the first error; the
// steps already done are reported and stay valid.
func (s *ServerSetup) Run(ctx context.Context) error {
	cfg := s.Config
	if err := s.precheck(); err != nil {
		return err
	}
	if err := s.step(EnsureGroup(ctx, s.Runner, cfg.SSH.Group, s.DryRun)); err != nil {
		return err
	}
	c, acct, err := EnsureAuthAccount(ctx, s.Runner, cfg.SSH.AuthKeysUser, s.DryRun)
	if err := s.step(c, err); err != nil {
		return err
	}
	if err := s.dirs(ctx, acct); err != nil {
		return err
	}
	for _, p := range []string{cfg.State.DBPath, cfg.State.DBPath + "-wal", cfg.State.DBPath + "-shm"} {
		if _, err := os.Lstat(p); err != nil {
			continue
		}
		if err := s.step(EnsureFileMode(p, 0o600, Root, s.DryRun)); err != nil {
			return err
		}
	}
	if err := s.configFile(); err != nil {
		return err
	}
	if s.HostFirewall != nil {
		if err := s.step(EnsureHostFirewall(ctx, s.HostFirewall, s.DryRun)); err != nil {
			return err
		}
	}
	if !s.DryRun || acct.UID >= 0 {
		for _, p := range []string{s.ConfigPath, cfg.Auth.KeyDir} {
			if _, err := os.Stat(p); err != nil {
				continue
			}
			if err := CheckReachable(p, acct); err != nil {
				fmt.Fprintf(s.Out, "warning: sshd runs auth-keys as %s, which cannot read %s: %v; make every directory above it searchable (chmod o+x)\n", acct.Name, p, err)
			}
		}
	}
	if err := s.sudoers(ctx); err != nil {
		return err
	}
	if err := s.sshd(ctx); err != nil {
		return err
	}
	if s.DryRun {
		fmt.Fprintln(s.Out, "[dry-run] nothing was changed")
		return nil
	}
	fmt.Fprintln(s.Out, "server-setup complete")
	return nil
}

// dirs creates the directories podspawn needs, each with its owner and
// mode; the key directory has its own step (keyDir).
func (s *ServerSetup) dirs(ctx context.Context, acct Account) error {
	cfg := s.Config
	// keyDir marks the key directory, which has its own owner and step.
	dirs := []struct {
		path   string
		mode   fs.FileMode
		owner  Owner
		keyDir bool
	}{
		{filepath.Dir(s.ConfigPath), 0o755, Root, false},
		{cfg.Auth.KeyDir, keys.DirMode, Root, true},
		{cfg.State.Dir(), 0o700, Root, false},
		{cfg.State.LockDir, 0o700, Root, false},
		{cfg.State.HomesDir, 0o700, Root, false},
	}
	seen := map[string]int{}
	for i, d := range dirs {
		p := filepath.Clean(d.path)
		if j, dup := seen[p]; dup {
			if d.keyDir || dirs[j].keyDir || d.mode != dirs[j].mode {
				return fmt.Errorf("%s is used for two purposes that need different owners or modes; give auth.key_dir, the config and state paths their own directories", p)
			}
			continue
		}
		seen[p] = i
		if d.keyDir {
			if err := s.keyDir(ctx, acct); err != nil {
				return err
			}
			continue
		}
		if err := s.step(EnsureDir(p, d.mode, d.owner, s.DryRun)); err != nil {
			return err
		}
	}
	return nil
}

// sudoers installs the rule that lets podspawn users run spawn as root,
// or explains what use_sudo: false leaves to the operator.
func (s *ServerSetup) sudoers(ctx context.Context) error {
	cfg := s.Config
	if cfg.SSH.UseSudo {
		su := Sudoers{Runner: s.Runner, Path: s.SudoersFile, Content: RenderSudoers(s.Binary, s.ConfigPath, cfg.SSH.Group), DryRun: s.DryRun, IncludeDir: s.SudoersDir}
		if err := s.step(su.Apply(ctx)); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(s.Out, "sudoers %s: skipped (ssh.use_sudo is false)\n", s.SudoersFile)
		// The directories above stay root-only on purpose: granting every
		// user the database and the Docker socket is the operator's call.
		fmt.Fprintf(s.Out, "warning: with ssh.use_sudo false, spawn runs as each SSH user, who needs write access to %s and the Docker socket (root access to this host); "+
			"server-setup keeps both root-only, so connections fail until you grant them, or set ssh.use_sudo: true\n", cfg.State.Dir())
	}
	return nil
}

// sshd writes the podspawn block of sshd_config and reloads sshd when it
// changed (unless --no-reload).
func (s *ServerSetup) sshd(ctx context.Context) error {
	cfg := s.Config
	sshd := SSHD{Runner: s.Runner, Path: s.SSHDConfig, DryRun: s.DryRun, Params: SSHDParams{
		Binary: s.Binary, Config: s.ConfigPath, AuthKeysUser: cfg.SSH.AuthKeysUser, Group: cfg.SSH.Group,
		AllowTCPForwarding: cfg.SSH.AllowTCPForwarding, AllowAgentForwarding: cfg.SSH.AllowAgentForwarding,
	}}
	c, changed, err := sshd.Apply(ctx)
	if err := s.step(c, err); err != nil {
		return err
	}
	switch {
	case s.DryRun && c.Done != "" && s.NoReload:
		fmt.Fprintln(s.Out, "[dry-run] would not reload sshd (--no-reload)")
	case s.DryRun && c.Done != "":
		fmt.Fprintln(s.Out, "[dry-run] would reload sshd")
	case s.DryRun:
		fmt.Fprintln(s.Out, "sshd: ok (sshd_config unchanged, no reload needed)")
	case !changed:
		fmt.Fprintln(s.Out, "sshd: ok (sshd_config unchanged, no reload needed)")
	case s.NoReload:
		fmt.Fprintln(s.Out, "sshd: NOT reloaded (--no-reload); reload sshd to apply the new sshd_config")
	default:
		if err := s.step(s.Reloader.Reload(ctx)); err != nil {
			return err
		}
	}
	return nil
}

func (s *ServerSetup) precheck() error {
	cfg := s.Config
	if err := ValidateAccountName("ssh.group", cfg.SSH.Group); err != nil {
		return err
	}
	if err := ValidateAccountName("ssh.auth_keys_user", cfg.SSH.AuthKeysUser); err != nil {
		return err
	}
	if cfg.SSH.Group == cfg.SSH.AuthKeysUser {
		// useradd gives the auth-keys account a group of its own name.
		return fmt.Errorf("ssh.group and ssh.auth_keys_user are both %q; they must differ", cfg.SSH.Group)
	}
	if err := ValidateConfigPath("the podspawn binary path", s.Binary); err != nil {
		return err
	}
	if err := ValidateConfigPath("the config path (--config)", s.ConfigPath); err != nil {
		return err
	}
	if err := CheckSafePath(s.Binary, false); err != nil {
		return fmt.Errorf("sshd runs AuthorizedKeysCommand only from a path that root owns and nobody else can write, "+
			"and sudo would run it as root: %v; install podspawn in such a place (e.g. /usr/local/bin) and run server-setup from there", err)
	}
	// The config steers what root does under sudo; nobody else may be
	// able to replace it or a directory above it.
	for p := filepath.Dir(s.ConfigPath); ; p = filepath.Dir(p) {
		if _, err := os.Stat(p); err == nil {
			if err := CheckSafePath(p, true); err != nil {
				return fmt.Errorf("the config directory must be safe from non-root users (spawn runs as root with it): %v", err)
			}
			break
		}
		if p == "/" {
			break
		}
	}
	if cfg.SSH.UseSudo {
		if _, err := os.Stat("/usr/bin/sudo"); err != nil {
			return errors.New("ssh.use_sudo is true but /usr/bin/sudo is missing: install sudo (apt-get install sudo), or set ssh.use_sudo: false")
		}
		if err := ValidateConfigPath("--sudoers-file", s.SudoersFile); err != nil {
			return err
		}
	}
	return nil
}

// configFile writes the commented defaults when the config is missing,
// and otherwise makes sure only root can change it.
func (s *ServerSetup) configFile() error {
	c := Change{What: "config " + s.ConfigPath}
	if s.Config.Exists {
		c, err := EnsureFileMode(s.ConfigPath, 0o644, Root, s.DryRun)
		c.What = "config " + s.ConfigPath
		return s.step(c, err)
	}
	data := DefaultConfig(s.Config)
	if _, err := config.Parse(data); err != nil {
		return fmt.Errorf("BUG: the default config does not parse: %w", err)
	}
	c.Done, c.Would = "created with the defaults", "create "+s.ConfigPath+" with the defaults"
	if s.DryRun {
		return s.step(c, nil)
	}
	if err := WriteFileAtomic(s.ConfigPath, data, 0o644, Root); err != nil {
		return s.step(c, err)
	}
	return s.step(c, nil)
}

// keyDir creates the key directory or migrates it, and its key files, to
// root with the auth-keys account's group (an older podspawn gave both to
// that account, 0700 and 0600). Everything goes through a handle on the
// directory: an entry the account left there, a link say, is reported
// and never followed.
func (s *ServerSetup) keyDir(ctx context.Context, acct Account) error {
	dir := s.Config.Auth.KeyDir
	group := groupName(ctx, s.Runner, acct)
	c := Change{What: "directory " + dir}
	d, fix, err := keys.EnsureDir(dir, acct.GID, s.DryRun)
	if err != nil {
		return err
	}
	switch {
	case fix.Created:
		c.Done = fmt.Sprintf("created (%04o root:%s)", keys.DirMode, group)
		c.Would = fmt.Sprintf("create directory %s (%04o root:%s)", dir, keys.DirMode, group)
	case fix.Changed():
		fixes := strings.Join(fix.Describe(group), ", ")
		c.Done, c.Would = "fixed "+fixes, fmt.Sprintf("fix %s (%s)", dir, fixes)
	}
	if err := s.step(c, nil); err != nil || d == nil {
		// d is nil in a dry run that would create the directory.
		return err
	}
	defer d.Close()
	users, err := keys.ListUsers(dir)
	if err != nil || len(users) == 0 {
		return err
	}
	c = Change{What: fmt.Sprintf("key files in %s (%d)", dir, len(users))}
	var fixed []string
	for _, u := range users {
		fix, err := d.FixFile(u, s.DryRun)
		var nr *keys.NotRegularError
		switch {
		case errors.As(err, &nr):
			c.Notes = append(c.Notes, nr.Error()+"; it was left as it is")
		case errors.Is(err, fs.ErrNotExist):
			// Removed since the listing.
		case err != nil:
			return err
		case fix.Changed():
			fixed = append(fixed, u)
		}
	}
	if len(fixed) > 0 {
		c.Done = fmt.Sprintf("fixed owner and mode of %d file(s): %v", len(fixed), fixed)
		c.Would = fmt.Sprintf("fix owner and mode (root:%s, %04o) of key files %v", group, keys.FileMode, fixed)
	}
	return s.step(c, nil)
}

// groupName names the auth-keys account's primary group for messages; in
// a dry run before the account exists, useradd will give it a group of
// its own name.
func groupName(ctx context.Context, r Runner, acct Account) string {
	if acct.GID < 0 {
		return acct.Name
	}
	out, err := r.Run(ctx, "getent", "group", strconv.Itoa(acct.GID))
	if name, _, ok := strings.Cut(firstLine(out), ":"); err == nil && ok && name != "" {
		return name
	}
	return strconv.Itoa(acct.GID)
}

// step prints one step's result and passes its error on.
func (s *ServerSetup) step(c Change, err error) error {
	if err != nil {
		return err
	}
	switch {
	case c.Done == "":
		fmt.Fprintf(s.Out, "%s: ok\n", c.What)
	case s.DryRun:
		fmt.Fprintf(s.Out, "[dry-run] would %s\n", c.Would)
	default:
		fmt.Fprintf(s.Out, "%s: %s\n", c.What, c.Done)
	}
	for _, n := range c.Notes {
		if len(n) > 0 && n[0] == ' ' {
			fmt.Fprintln(s.Out, n)
		} else {
			fmt.Fprintf(s.Out, "  note: %s\n", n)
		}
	}
	return nil
}
