package hostsetup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// DefaultSudoersFile is the drop-in server-setup installs.
const DefaultSudoersFile = "/etc/sudoers.d/podspawn"

// SudoersMode is what sudo requires of its files.
const SudoersMode fs.FileMode = 0o440

// RenderSudoers renders the drop-in that lets members of group run exactly
// "<binary> --config <config> spawn" as root, keeping the variables spawn
// reads from sshd. Arguments other than these are refused by sudo, so a
// user cannot pass --user or another config.
func RenderSudoers(binary, config, group string) string {
	alias := SudoersAlias(group)
	return "Cmnd_Alias " + alias + " = " + SpawnCommand(binary, config) + "\n" +
		"Defaults!" + alias + ` env_keep += "SSH_ORIGINAL_COMMAND PODSPAWN_PROJECT SSH_AUTH_SOCK SSH_CONNECTION SSH_CLIENT TERM"` + "\n" +
		"Defaults!" + alias + " !requiretty\n" +
		"%" + group + " ALL=(root) NOPASSWD: " + alias + "\n"
}

// SpawnCommand is the spawn command line: the sudoers rule allows exactly
// this, and auth-keys forces it (behind sudo -n), so they cannot drift apart.
func SpawnCommand(binary, config string) string {
	return binary + " --config " + config + " spawn"
}

// SudoersAlias is PODSPAWN_SPAWN for the default group. sudo refuses an
// alias defined twice across its files, so a second installation on the
// same host (a demo, a test, another group) gets an alias of its own.
func SudoersAlias(group string) string {
	if group == "podspawn" {
		return "PODSPAWN_SPAWN"
	}
	return "PODSPAWN_SPAWN_" + strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z':
			return r - 'a' + 'A'
		case r >= '0' && r <= '9', r == '_':
			return r
		}
		return '_'
	}, group)
}

// Sudoers installs the drop-in.
type Sudoers struct {
	Runner  Runner
	Path    string
	Content string
	DryRun  bool
	// IncludeDir is the directory sudo reads drop-ins from; a file there
	// is also checked together with the whole sudo configuration.
	IncludeDir string
}

// Apply writes the drop-in when its content, mode or owner differ. The
// new content is checked with "visudo -cf" on a temporary file before it
// replaces the old one; a drop-in sudo actually reads is then checked with
// the whole configuration ("visudo -c", which catches clashes with other
// files), and the previous state is put back if that fails.
func (s Sudoers) Apply(ctx context.Context) (Change, error) {
	c := Change{What: "sudoers " + s.Path}
	dir := filepath.Dir(s.Path)
	included := s.IncludeDir != "" && filepath.Clean(dir) == filepath.Clean(s.IncludeDir)
	if base := filepath.Base(s.Path); included && (strings.Contains(base, ".") || strings.HasSuffix(base, "~")) {
		return c, fmt.Errorf("sudo ignores files in %s whose name contains '.' or ends with '~'; choose another --sudoers-file (default %s)", dir, DefaultSudoersFile)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return c, fmt.Errorf("sudoers directory %s does not exist (is sudo installed? apt-get install sudo)", dir)
	}
	old, err := os.ReadFile(s.Path)
	existed := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return c, fmt.Errorf("reading %s: %w", s.Path, err)
	}
	if existed && bytes.Equal(old, []byte(s.Content)) {
		if c, err = EnsureFileMode(s.Path, SudoersMode, Root, s.DryRun); err != nil {
			return c, err
		}
		c.What = "sudoers " + s.Path
		return c, nil
	}
	if existed {
		c.Done, c.Would = "updated (checked with visudo)", "update "+s.Path+" with:"
	} else {
		c.Done, c.Would = "installed (checked with visudo)", "install "+s.Path+" with:"
	}
	if s.DryRun {
		for _, l := range strings.Split(strings.TrimSuffix(s.Content, "\n"), "\n") {
			c.Notes = append(c.Notes, "  "+l)
		}
		return c, nil
	}
	check := func(tmp string) error {
		if _, err := s.Runner.Run(ctx, "visudo", "-c", "-q", "-f", tmp); err != nil {
			return fmt.Errorf("visudo rejected the sudoers rules for %s (nothing was installed): %w", s.Path, err)
		}
		return nil
	}
	if err := writeFileChecked(s.Path, []byte(s.Content), SudoersMode, Root, check); err != nil {
		return c, err
	}
	if !included {
		return c, nil
	}
	if _, verr := s.Runner.Run(ctx, "visudo", "-c", "-q"); verr != nil {
		var rerr error
		if existed {
			rerr = WriteFileAtomic(s.Path, old, SudoersMode, Root)
		} else {
			rerr = os.Remove(s.Path)
		}
		if rerr != nil {
			return c, fmt.Errorf("the sudo configuration is invalid with the new %s (%v) and putting back the previous state failed (%v): fix it NOW with 'visudo -c'", s.Path, verr, rerr)
		}
		return c, fmt.Errorf("the sudo configuration is invalid together with the new %s (another file may define the same Cmnd_Alias); the previous state was put back: %w", s.Path, verr)
	}
	return c, nil
}
