package doctor

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/podspawn/podspawn/desired/config"
)

// sshdDir is where sshd resolves relative Include paths.
const sshdDir = "/etc/ssh"

// directive is one keyword line of an sshd_config (Include followed).
type directive struct {
	file    string
	line    int
	keyword string // lower case
	args    []string
	inMatch bool
}

func (d directive) where() string { return fmt.Sprintf("%s:%d", d.file, d.line) }

// readSSHDConfig returns the directives of path in the order sshd reads
// them, following Include. Comments and blank lines are dropped.
func readSSHDConfig(path string, depth int, inMatch bool) ([]directive, error) {
	if depth > 16 {
		return nil, fmt.Errorf("%s: Include nested too deeply", path)
	}
	f, err := os.Open(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	defer f.Close()
	var out []directive
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	n := 0
	match := inMatch
	for sc.Scan() {
		n++
		kw, args := splitDirective(sc.Text())
		if kw == "" {
			continue
		}
		switch kw {
		case "match":
			match = !(len(args) == 1 && strings.EqualFold(args[0], "all"))
		case "include":
			for _, pat := range args {
				if !filepath.IsAbs(pat) {
					pat = filepath.Join(sshdDir, pat)
				}
				files, err := filepath.Glob(pat)
				if err != nil {
					return nil, fmt.Errorf("%s:%d: bad Include pattern %q: %w", path, n, pat, err)
				}
				sort.Strings(files)
				for _, inc := range files {
					ds, err := readSSHDConfig(inc, depth+1, match)
					if err != nil {
						return nil, err
					}
					out = append(out, ds...)
				}
			}
			continue
		}
		out = append(out, directive{file: path, line: n, keyword: kw, args: args, inMatch: match})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return out, nil
}

// splitDirective splits "Keyword args" or "Keyword=args"; arguments may be
// double-quoted.
func splitDirective(line string) (string, []string) {
	line = strings.TrimSpace(line)
	if line == "" || strings.HasPrefix(line, "#") {
		return "", nil
	}
	i := strings.IndexAny(line, " \t=")
	if i < 0 {
		return strings.ToLower(line), nil
	}
	kw := strings.ToLower(line[:i])
	rest := strings.TrimLeft(line[i:], " \t")
	rest = strings.TrimLeft(strings.TrimPrefix(rest, "="), " \t")
	var args []string
	var cur strings.Builder
	inQuote, have := false, false
	for _, r := range rest {
		switch {
		case r == '"':
			inQuote, have = !inQuote, true
		case (r == ' ' || r == '\t') && !inQuote:
			if have {
				args = append(args, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if have {
		args = append(args, cur.String())
	}
	return kw, args
}

// isPodspawnAuthKeys reports whether an AuthorizedKeysCommand runs
// "<...podspawn> [flags] auth-keys ...".
func isPodspawnAuthKeys(args []string) bool {
	if len(args) < 2 || !strings.Contains(filepath.Base(args[0]), "podspawn") {
		return false
	}
	for _, a := range args[1:] {
		if a == "auth-keys" {
			return true
		}
	}
	return false
}

// commandConfig is the config file an auth-keys command line uses.
func commandConfig(args []string) string {
	for i, a := range args {
		if a == "auth-keys" {
			break
		}
		if a == "--config" && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, "--config="); ok {
			return v
		}
	}
	return config.DefaultPath
}

func checkAuthorizedKeysCommand(_ context.Context, e *Env) Result {
	path := e.Config.SSH.SSHDConfig
	ds, err := readSSHDConfig(path, 0, false)
	if err != nil {
		return fail("cannot read "+err.Error(), "run doctor as root, or fix ssh.sshd_config in "+e.ConfigPath+" to name the real sshd_config")
	}
	bin := e.Binary
	if bin == "" {
		bin = "/usr/local/bin/podspawn"
	}
	setupFix := fmt.Sprintf("sudo podspawn server-setup, or add to %s: AuthorizedKeysCommand %s --config %s auth-keys %%u %%t %%k, then AuthorizedKeysCommandUser %s",
		path, bin, e.ConfigPath, e.Config.SSH.AuthKeysUser)

	var first, ours *directive
	userSet := false
	for i := range ds {
		d := &ds[i]
		switch d.keyword {
		case "authorizedkeyscommand":
			if first == nil && !d.inMatch {
				first = d
			}
			if ours == nil && isPodspawnAuthKeys(d.args) {
				ours = d
			}
		case "authorizedkeyscommanduser":
			userSet = true
		}
	}
	switch {
	case ours == nil:
		return warn("not configured; sshd will not ask podspawn for keys", setupFix)
	case first != nil && first != ours && !ours.inMatch:
		// sshd keeps the first value it reads for a keyword.
		return warn(fmt.Sprintf("sshd uses the first AuthorizedKeysCommand, at %s (%s), not podspawn's at %s",
			first.where(), strings.Join(first.args, " "), ours.where()),
			"remove or comment out the line at "+first.where())
	case !userSet:
		return warn("AuthorizedKeysCommandUser is not set; sshd ignores AuthorizedKeysCommand without it",
			fmt.Sprintf("add 'AuthorizedKeysCommandUser %s' to %s", e.Config.SSH.AuthKeysUser, path))
	}
	if used := commandConfig(ours.args); filepath.Clean(used) != filepath.Clean(e.ConfigPath) {
		return warn(fmt.Sprintf("AuthorizedKeysCommand at %s uses config %s, but doctor checked %s", ours.where(), used, e.ConfigPath),
			fmt.Sprintf("re-run doctor with --config %s, or re-run server-setup with --config %s", used, e.ConfigPath))
	}
	return pass(ours.where())
}
