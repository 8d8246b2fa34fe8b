package hostsetup

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Reloader makes a running sshd read its config again.
type Reloader struct {
	Runner Runner
	// SystemdDir exists when systemd is the init system (/run/systemd/system).
	SystemdDir string
	// PIDFile is sshd's pid file when no systemd runs it (/run/sshd.pid).
	PIDFile string
	// ProcDir is /proc, where the pid's command name is checked.
	ProcDir string
	// Signal sends sig to pid (syscall.Kill when nil).
	Signal func(pid int, sig syscall.Signal) error
}

// DefaultReloader is the reloader of a real host.
func DefaultReloader(r Runner) Reloader {
	return Reloader{Runner: r, SystemdDir: "/run/systemd/system", PIDFile: "/run/sshd.pid", ProcDir: "/proc"}
}

// Reload uses "systemctl reload" when systemd runs sshd, else SIGHUP to
// the pid in the pid file. When neither finds an sshd it does nothing and
// says that sshd must be reloaded by hand; that is not an error.
func (rl Reloader) Reload(ctx context.Context) (Change, error) {
	c := Change{What: "sshd"}
	if fi, err := os.Stat(rl.SystemdDir); err == nil && fi.IsDir() {
		for _, unit := range []string{"ssh", "sshd"} {
			if _, err := rl.Runner.Run(ctx, "systemctl", "is-active", "--quiet", unit); err != nil {
				continue
			}
			if _, err := rl.Runner.Run(ctx, "systemctl", "reload", unit); err != nil {
				return c, fmt.Errorf("the new sshd_config is valid, but 'systemctl reload %s' failed; reload sshd by hand: %w", unit, err)
			}
			c.Done = "reloaded (systemctl reload " + unit + ")"
			return c, nil
		}
	}
	if data, err := os.ReadFile(rl.PIDFile); err == nil {
		pid, perr := strconv.Atoi(strings.TrimSpace(string(data)))
		comm, cerr := os.ReadFile(fmt.Sprintf("%s/%d/comm", rl.ProcDir, pid))
		// A stale pid file may name a pid reused by another program.
		if perr == nil && pid > 1 && cerr == nil && strings.TrimSpace(string(comm)) == "sshd" {
			sig := rl.Signal
			if sig == nil {
				sig = syscall.Kill
			}
			if err := sig(pid, syscall.SIGHUP); err != nil {
				return c, fmt.Errorf("the new sshd_config is valid, but sending SIGHUP to sshd (pid %d from %s) failed; reload sshd by hand: %w", pid, rl.PIDFile, err)
			}
			c.Done = fmt.Sprintf("reloaded (SIGHUP to pid %d from %s)", pid, rl.PIDFile)
			return c, nil
		}
	}
	c.Done = "NOT reloaded: no running sshd found (no active ssh systemd unit, no live pid in " + rl.PIDFile + "); reload or start sshd by hand to apply the new sshd_config"
	return c, nil
}
