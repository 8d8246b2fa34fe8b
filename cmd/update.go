package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"

	"github.com/podspawn/podspawn/cmd/internal/update"
	"github.com/podspawn/podspawn/controller"
)

// UpdateCmd replaces this binary with the latest release.
type UpdateCmd struct {
	Check  bool   `help:"Only report the current and latest versions; download nothing."`
	Force  bool   `help:"Replace a development (non-release) build with the latest release."`
	Binary string `help:"Binary to replace instead of this executable (tests)." hidden:"" type:"path"`
}

// Help is shown by "podspawn update --help".
func (UpdateCmd) Help() string {
	return `Asks <update.base_url>/repos/<update.repo>/releases/latest for the newest
release and compares it with this binary's version as semantic versions; a
newer binary is never downgraded. The archive
podspawn_<version>_<os>_<arch>.tar.gz is verified against the release's
checksums.txt and test-run before it atomically replaces the binary, so any
failure leaves the installed binary untouched. Active SSH sessions are not
affected; a running cleanup daemon keeps the old code until restarted.

A development build ("dev" or any non-semver version) is only replaced
with --force.

Exit status: 0 when up to date, updated, or with --check (whether or not an
update is available); 1 on any error (network, missing asset or checksum,
checksum mismatch, bad archive, permissions) and when a development build
is not replaced because --force was not given.`
}

// Run checks and, unless --check, installs the latest release.
func (c *UpdateCmd) Run(a *App) error {
	ctx, cancel := signalContext()
	defer cancel()
	cfg, err := a.Config()
	if err != nil {
		return err
	}
	target := c.Binary
	if target == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("cannot find this executable to replace: %w", err)
		}
		target = exe
	}
	// Replace the file a symlink such as /usr/local/bin/podspawn points
	// at, not the link.
	if resolved, err := filepath.EvalSymlinks(target); err == nil {
		target = resolved
	}
	client := &update.Client{HTTP: &http.Client{}, BaseURL: cfg.Update.BaseURL, Repo: cfg.Update.Repo,
		UserAgent: "podspawn/" + version}
	installed, err := update.Run(ctx, client, update.Options{
		Current: version, Check: c.Check, Force: c.Force, Target: target,
		GOOS: runtime.GOOS, GOARCH: runtime.GOARCH,
	}, a.Stdout)
	if err != nil {
		return err
	}
	if installed {
		if _, running, _ := controller.DaemonLockHolder(controller.DaemonLockPath(cfg.State.Dir())); running {
			fmt.Fprintln(a.Stderr, "note: the cleanup daemon still runs the old binary; restart it: sudo systemctl restart podspawn-cleanup")
		}
	}
	return nil
}
