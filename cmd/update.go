package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	update "github.com/podspawn/podspawn/actions/selfupdate"
	"github.com/podspawn/podspawn/desired/lock"
)

// updatePublicKey pins the release signing key, a minisign public key, at
// build time: -ldflags "-X main.updatePublicKey=RW...". Empty by default,
// and then update.public_key in the config must name one before update
// installs anything.
var updatePublicKey string

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
newer binary is never downgraded. Every URL must be https://.

The archive podspawn_<version>_<os>_<arch>.tar.gz must come with a detached
minisign signature, <archive>.minisig, made by the release signing key,
whose trusted comment names the archive (minisign's default
"timestamp:...<TAB>file:<archive>" does). The key is update.public_key in
the config or, without it, the key built into this binary; update prints
the key ID it verified against. Nothing downloaded is unpacked or run before
the signature verifies; then the new binary is test-run ("version") and
atomically replaces this one, so any failure leaves the installed binary
untouched. Without a key, --check works but update installs nothing.
Active SSH sessions are not affected; a running cleanup daemon keeps the
old code until restarted.

A development build ("dev" or any non-semver version) is only replaced
with --force.

Exit status: 0 when up to date, updated, or with --check (whether or not an
update is available); 1 on any error (no signing key, plain http, network,
missing asset or signature, bad signature, bad archive, permissions) and
when a development build is not replaced because --force was not given.`
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
	key, err := updateKey(cfg.Update.PublicKey, updatePublicKey, cfg.Path)
	if err != nil {
		return err
	}
	client := &update.Client{HTTP: &http.Client{}, BaseURL: cfg.Update.BaseURL, Repo: cfg.Update.Repo,
		UserAgent: "podspawn/" + version, AllowInsecureHTTP: cfg.Update.AllowInsecureHTTP}
	installed, err := update.Run(ctx, client, update.Options{
		Current: version, Check: c.Check, Force: c.Force, Target: target,
		GOOS: runtime.GOOS, GOARCH: runtime.GOARCH, Key: key, ConfigPath: cfg.Path,
	}, a.Stdout)
	if err != nil {
		return err
	}
	if installed {
		if _, running, _ := lock.DaemonHolder(lock.DaemonPath(cfg.State.Dir())); running {
			fmt.Fprintln(a.Stderr, "note: the cleanup daemon still runs the old binary; restart it: sudo systemctl restart podspawn-cleanup")
		}
	}
	return nil
}

// updateKey is the configured key, else the built-in one, else nil. The
// config wins so that an administrator can follow a key rotation or a
// mirror that signs with its own key without a new build.
func updateKey(configured, builtIn, configPath string) (*update.Key, error) {
	if strings.TrimSpace(configured) != "" {
		return update.ParseKey(configured, "update.public_key in "+configPath)
	}
	if builtIn != "" {
		return update.ParseKey(builtIn, "built into this binary")
	}
	return nil, nil
}
