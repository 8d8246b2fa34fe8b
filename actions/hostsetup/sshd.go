package hostsetup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// Markers of the block server-setup owns in sshd_config. Everything
// between them is replaced on every run.
const (
	BeginMarker = "# BEGIN podspawn"
	EndMarker   = "# END podspawn"
	// legacyMarker starts the block the previous podspawn appended.
	legacyMarker = "# Added by podspawn server-setup"
)

// BackupSuffix is appended to sshd_config's path for the copy taken
// before each change.
const BackupSuffix = ".podspawn.bak"

// SSHDParams are the values the sshd_config block is made of.
type SSHDParams struct {
	Binary               string // absolute path of podspawn
	Config               string // absolute path of config.yaml
	AuthKeysUser         string
	Group                string
	AllowTCPForwarding   bool
	AllowAgentForwarding bool
}

// AuthorizedKeysCommand is the command line sshd runs to fetch a user's keys.
func (p SSHDParams) AuthorizedKeysCommand() string {
	return p.Binary + " --config " + p.Config + " auth-keys %u %t %k"
}

// RenderBlock renders the marked block. matchAll starts it with "Match
// all", needed when the file already has Match blocks: a global keyword
// after a Match line would otherwise belong to that Match.
func RenderBlock(p SSHDParams, matchAll bool) string {
	var b strings.Builder
	w := func(s string) { b.WriteString(s + "\n") }
	w(BeginMarker)
	w("# Managed by 'podspawn server-setup': this block is rewritten on every run; keep it last in the file.")
	if matchAll {
		w("Match all")
	}
	w("AuthorizedKeysCommand " + p.AuthorizedKeysCommand())
	w("AuthorizedKeysCommandUser " + p.AuthKeysUser)
	w("Match Group " + p.Group)
	in := func(s string) { w("    " + s) }
	in("AuthorizedKeysFile none")
	in("PasswordAuthentication no")
	in("KbdInteractiveAuthentication no")
	in("AuthenticationMethods publickey")
	if !p.AllowTCPForwarding && !p.AllowAgentForwarding {
		in("DisableForwarding yes")
	} else {
		// DisableForwarding would also switch off what the config allows,
		// so spell out each kind. Unix-socket forwarding stays off in every
		// case: it would reach the Docker socket.
		if p.AllowTCPForwarding {
			in("AllowTcpForwarding local")
		} else {
			in("AllowTcpForwarding no")
		}
		in("AllowStreamLocalForwarding no")
		if p.AllowAgentForwarding {
			in("AllowAgentForwarding yes")
		} else {
			in("AllowAgentForwarding no")
		}
		in("GatewayPorts no")
		in("PermitListen none")
	}
	in("PermitTunnel no")
	in("X11Forwarding no")
	in("PermitUserRC no")
	in("AcceptEnv PODSPAWN_PROJECT")
	w(EndMarker)
	return b.String()
}

// keyword returns the lower-cased keyword and the value of an sshd_config
// line, or "" for blank and comment lines. sshd accepts "Key value" and
// "Key=value".
func keyword(line string) (string, string) {
	s := strings.TrimSpace(line)
	if s == "" || strings.HasPrefix(s, "#") {
		return "", ""
	}
	i := strings.IndexAny(s, " \t=")
	if i < 0 {
		return strings.ToLower(s), ""
	}
	k := strings.ToLower(s[:i])
	v := strings.TrimLeft(s[i:], " \t")
	v = strings.TrimPrefix(v, "=")
	return k, strings.TrimSpace(v)
}

// Splice returns content with the podspawn block replaced by a freshly
// rendered one at the end of the file (Match blocks must come last, and
// moving ours there also fixes lines someone appended after it). The
// rest of the file is kept byte for byte, so a second run with the same
// parameters returns content unchanged. It refuses a file whose markers
// are broken, or that sets its own AuthorizedKeysCommand(User) outside
// the block, since sshd would then silently ignore ours.
func Splice(content []byte, p SSHDParams) ([]byte, error) {
	lines := strings.SplitAfter(string(content), "\n")
	if len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	var rest []string
	begin, inBlock, inLegacy := 0, false, false
	matchAll := false
	for i, line := range lines {
		n := i + 1
		t := strings.TrimSpace(line)
		switch {
		case t == BeginMarker:
			if inBlock || begin != 0 {
				return nil, fmt.Errorf("line %d: a second %q (the first is at line %d); remove the duplicate podspawn block by hand, then re-run server-setup", n, BeginMarker, begin)
			}
			begin, inBlock = n, true
			continue
		case t == EndMarker:
			if !inBlock {
				return nil, fmt.Errorf("line %d: %q without a %q before it; fix the podspawn block by hand, then re-run server-setup", n, EndMarker, BeginMarker)
			}
			inBlock = false
			continue
		case inBlock:
			continue
		case t == legacyMarker:
			// The previous podspawn's block: drop it, it is replaced.
			inLegacy = true
			continue
		}
		k, v := keyword(line)
		if inLegacy {
			if (k == "authorizedkeyscommand" && strings.Contains(v, "auth-keys")) || k == "authorizedkeyscommanduser" ||
				(k == "acceptenv" && v == "PODSPAWN_PROJECT") {
				continue
			}
			inLegacy = false
		}
		switch k {
		case "match":
			matchAll = true
		case "authorizedkeyscommand":
			if !strings.EqualFold(v, "none") {
				return nil, fmt.Errorf("line %d sets its own AuthorizedKeysCommand (%s); sshd uses the first one it reads, so podspawn's would be ignored. "+
					"Remove or comment out that line (podspawn's auth-keys must answer for every user), then re-run server-setup", n, v)
			}
		case "authorizedkeyscommanduser":
			if !strings.EqualFold(v, "none") && v != p.AuthKeysUser {
				return nil, fmt.Errorf("line %d sets AuthorizedKeysCommandUser %s; sshd uses the first one it reads, so auth-keys would not run as %s. "+
					"Remove or comment out that line, then re-run server-setup", n, v, p.AuthKeysUser)
			}
		}
		rest = append(rest, line)
	}
	if inBlock {
		return nil, fmt.Errorf("line %d: %q has no %q after it; fix the podspawn block by hand, then re-run server-setup", begin, BeginMarker, EndMarker)
	}
	var b strings.Builder
	for _, l := range rest {
		b.WriteString(l)
	}
	if b.Len() > 0 && !strings.HasSuffix(b.String(), "\n") {
		b.WriteByte('\n')
	}
	b.WriteString(RenderBlock(p, matchAll))
	return []byte(b.String()), nil
}

// SSHD edits an sshd_config file.
type SSHD struct {
	Runner Runner
	Path   string
	Params SSHDParams
	DryRun bool
}

// Apply validates the current file with "sshd -t" (an invalid file is
// never touched), writes the block, keeps the previous content in
// Path+BackupSuffix, and validates again: "sshd -t" must pass and "sshd
// -T" must show podspawn's AuthorizedKeysCommand as the one in effect
// (an Include'd file may set another, which would win). When the check
// fails the file is restored from the backup byte for byte. Changed says
// whether the file was rewritten (sshd needs a reload only then).
func (s SSHD) Apply(ctx context.Context) (c Change, changed bool, err error) {
	c = Change{What: "sshd_config " + s.Path}
	path, err := filepath.EvalSymlinks(s.Path)
	if err != nil {
		return c, false, fmt.Errorf("sshd config %s: %w (pass --sshd-config or set ssh.sshd_config)", s.Path, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return c, false, fmt.Errorf("sshd config %s: %w", path, err)
	}
	old, err := os.ReadFile(path)
	if err != nil {
		return c, false, fmt.Errorf("reading sshd config %s: %w", path, err)
	}
	if err := s.validate(ctx, path); err != nil {
		return c, false, fmt.Errorf("the current sshd config %s is invalid; fix it before running server-setup (nothing was changed): %w", path, err)
	}
	updated, err := Splice(old, s.Params)
	if err != nil {
		return c, false, fmt.Errorf("sshd config %s %w (nothing was changed)", path, err)
	}
	if bytes.Equal(old, updated) {
		if err := s.checkEffective(ctx, path); err != nil {
			return c, false, fmt.Errorf("sshd config %s has podspawn's block, but %w", path, err)
		}
		return c, false, nil
	}
	backup := s.Path + BackupSuffix
	c.Done = "updated (previous version in " + backup + ")"
	c.Would = "update " + s.Path + " (previous version to " + backup + ") so that it ends with:"
	if s.DryRun {
		block := updated[bytes.LastIndex(updated, []byte(BeginMarker)):]
		for _, l := range strings.Split(strings.TrimSuffix(string(block), "\n"), "\n") {
			c.Notes = append(c.Notes, "  "+l)
		}
		return c, false, nil
	}
	uid, gid := statOwner(fi)
	owner := Owner{Name: "", UID: uid, GID: gid}
	mode := fi.Mode().Perm()
	if err := WriteFileAtomic(backup, old, mode, owner); err != nil {
		return c, false, fmt.Errorf("backing up %s (nothing was changed): %w", path, err)
	}
	if err := WriteFileAtomic(path, updated, mode, owner); err != nil {
		return c, false, err
	}
	verr := s.validate(ctx, path)
	if verr == nil {
		verr = s.checkEffective(ctx, path)
	}
	if verr == nil {
		return c, true, nil
	}
	if rerr := WriteFileAtomic(path, old, mode, owner); rerr != nil {
		return c, true, fmt.Errorf("sshd rejected the changed %s (%v), and restoring it failed (%v): copy %s back over it by hand NOW, "+
			"before sshd is restarted", path, verr, rerr, backup)
	}
	return c, false, fmt.Errorf("sshd rejected the changed config, so %s was restored from %s (byte for byte): %w", path, backup, verr)
}

func (s SSHD) validate(ctx context.Context, path string) error {
	_, err := s.Runner.Run(ctx, "sshd", "-t", "-f", path)
	if err == nil {
		return nil
	}
	var ce *CmdError
	if errors.As(err, &ce) && strings.Contains(ce.Stderr, "Missing privilege separation directory") {
		return fmt.Errorf("%w (the ssh service creates it when it starts; create it with 'mkdir -p -m 0755 /run/sshd')", err)
	}
	return err
}

var spaces = regexp.MustCompile(`\s+`)

// checkEffective asks sshd which AuthorizedKeysCommand(User) it would use.
func (s SSHD) checkEffective(ctx context.Context, path string) error {
	out, err := s.Runner.Run(ctx, "sshd", "-T", "-f", path)
	if err != nil {
		return err
	}
	got := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), " ")
		if k == "authorizedkeyscommand" || k == "authorizedkeyscommanduser" {
			got[k] = spaces.ReplaceAllString(strings.TrimSpace(v), " ")
		}
	}
	if want := s.Params.AuthorizedKeysCommand(); got["authorizedkeyscommand"] != want {
		return fmt.Errorf("sshd would use AuthorizedKeysCommand %q instead of podspawn's %q: an Include'd file (see 'Include' lines, e.g. /etc/ssh/sshd_config.d/) "+
			"or an earlier Match block sets its own; remove it, then re-run server-setup", got["authorizedkeyscommand"], want)
	}
	if got["authorizedkeyscommanduser"] != s.Params.AuthKeysUser {
		return fmt.Errorf("sshd would run auth-keys as %q instead of %q: an Include'd file or an earlier Match block sets AuthorizedKeysCommandUser; "+
			"remove it, then re-run server-setup", got["authorizedkeyscommanduser"], s.Params.AuthKeysUser)
	}
	return nil
}

// ValidateConfigPath refuses paths that cannot be written into
// sshd_config, authorized_keys options and sudoers without quoting (sshd
// splits the command on spaces and expands %, sudoers treats , : = \ and
// spaces specially).
func ValidateConfigPath(what, p string) error {
	if !filepath.IsAbs(p) {
		return fmt.Errorf("%s %q must be an absolute path", what, p)
	}
	if !safePathRE.MatchString(p) {
		return fmt.Errorf("%s %q contains characters that sshd_config and sudoers cannot hold unquoted; "+
			"use a path made of letters, digits and / . _ + - only", what, p)
	}
	return nil
}

var safePathRE = regexp.MustCompile(`^/[A-Za-z0-9/._+-]*$`)

var accountRE = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)

// ValidateAccountName checks a group or account name from the config.
func ValidateAccountName(key, name string) error {
	if !accountRE.MatchString(name) {
		return fmt.Errorf("invalid %s %q: must be 1-32 chars of [a-z0-9_-], starting with a lowercase letter or _", key, name)
	}
	return nil
}
