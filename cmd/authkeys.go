package main

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"

	setup "github.com/podspawn/podspawn/actions/hostsetup"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/config"
	"github.com/podspawn/podspawn/desired/keys"
)

// AuthKeysCmd is sshd's AuthorizedKeysCommand. It runs as an unprivileged
// account and reads only the config and the user's key file.
//
// Exit codes: 0 with the user's key lines (none for an unknown or invalid
// user name); 1 with nothing printed when the config or the key file
// cannot be read, so sshd denies and logs the failure (fail closed).
type AuthKeysCmd struct {
	User    string `arg:"" help:"User name sshd asks about (%u)."`
	KeyType string `arg:"" optional:"" help:"Type of the key being tried (%t); with the key data only that key is printed."`
	KeyData string `arg:"" optional:"" help:"Base64 key being tried (%k)."`
}

// Run prints the authorized_keys lines.
func (c *AuthKeysCmd) Run(a *App) (err error) {
	defer func() {
		// Nothing has been printed when a panic gets here: output is
		// written in one piece at the end.
		if r := recover(); r != nil {
			fmt.Fprintf(a.Stderr, "auth-keys: internal error, denying: %v\n%s", r, debug.Stack())
			err = &ExitError{Code: 1}
		}
	}()
	deny := func(e error) error {
		fmt.Fprintf(a.Stderr, "auth-keys: denying %s: %v\n", c.User, e)
		return &ExitError{Code: 1}
	}
	if desired.ValidateUserName(c.User) != nil {
		return nil
	}
	cfg, err := config.Load(a.CLI.Config)
	if err != nil {
		return deny(err)
	}
	bin, err := os.Executable()
	if err != nil {
		return deny(fmt.Errorf("finding the podspawn binary: %w", err))
	}
	cfgPath, err := filepath.Abs(a.CLI.Config)
	if err != nil {
		return deny(err)
	}
	uf, err := keys.Read(cfg.Auth.KeyDir, c.User)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err == nil && uf.ReadErr != nil {
		err = uf.ReadErr
	}
	if err != nil {
		return deny(fmt.Errorf("reading key file: %w", err))
	}
	for _, bad := range uf.Invalid {
		fmt.Fprintf(a.Stderr, "auth-keys: %s: skipping %v\n", c.User, bad)
	}
	out, err := renderAuthorizedKeys(cfg, bin, cfgPath, c.User, uf.Keys, c.KeyType, c.KeyData)
	if err != nil {
		return deny(err)
	}
	_, err = a.Stdout.Write(out)
	return err
}

// forcedCommand is the command every key of user is restricted to. sshd
// passes it to the user's shell, and with sudo it must be exactly the
// command the sudoers drop-in allows, so both come from setup.
func forcedCommand(cfg config.Config, bin, cfgPath, user string) (string, error) {
	if err := setup.ValidateConfigPath("podspawn binary", bin); err != nil {
		return "", fmt.Errorf("cannot be used in a forced command: %w; install podspawn and its config under plain paths", err)
	}
	if err := setup.ValidateConfigPath("config", cfgPath); err != nil {
		return "", fmt.Errorf("cannot be used in a forced command: %w; install podspawn and its config under plain paths", err)
	}
	if cfg.SSH.UseSudo {
		return "/usr/bin/sudo -n " + setup.SpawnCommand(bin, cfgPath), nil
	}
	return setup.SpawnCommand(bin, cfgPath) + " --user " + user, nil
}

// renderAuthorizedKeys renders one line per key: podspawn's own options
// (any options the file had are dropped, so the line stays valid, G21) and
// the key. With keyType and keyData set (sshd's %t %k), only that key.
func renderAuthorizedKeys(cfg config.Config, bin, cfgPath, user string, ks []keys.Key, keyType, keyData string) ([]byte, error) {
	if err := desired.ValidateUserName(user); err != nil {
		return nil, err
	}
	cmd, err := forcedCommand(cfg, bin, cfgPath, user)
	if err != nil {
		return nil, err
	}
	opts := []string{`command="` + cmd + `"`, "restrict", "pty"}
	if cfg.SSH.AllowAgentForwarding {
		opts = append(opts, "agent-forwarding")
	}
	if cfg.SSH.AllowTCPForwarding {
		opts = append(opts, "port-forwarding")
	}
	prefix := strings.Join(opts, ",")
	var b bytes.Buffer
	for _, k := range ks {
		if keyType != "" && k.PublicKey.Type() != keyType {
			continue
		}
		if keyData != "" && base64.StdEncoding.EncodeToString(k.PublicKey.Marshal()) != keyData {
			continue
		}
		line := k.Authorized()
		if strings.ContainsAny(line, "\r\n") {
			continue
		}
		fmt.Fprintf(&b, "%s %s\n", prefix, line)
	}
	return b.Bytes(), nil
}
