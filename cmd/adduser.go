package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	setup "github.com/podspawn/podspawn/actions/hostsetup"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/keys"
	"github.com/podspawn/podspawn/desired/lock"
)

// AddUserCmd registers a user's public keys and the host account sshd needs.
type AddUserCmd struct {
	Name      string   `arg:"" help:"User name, also the host account: 1-32 chars of [a-z0-9_-], starting with a lowercase letter."`
	Key       []string `help:"A public key line: type, base64 data, optional comment. Repeatable." sep:"none" placeholder:"KEY"`
	KeyFile   []string `name:"key-file" help:"A file of public keys in authorized_keys format; - reads stdin. Repeatable." sep:"none" placeholder:"FILE"`
	NoAccount bool     `help:"Do not create or adopt the host account (for hosts whose accounts are managed elsewhere, e.g. LDAP)."`
}

// Help explains the all-or-nothing rule.
func (AddUserCmd) Help() string {
	return `Every key is checked before anything is written: one invalid line refuses the
whole command and names its file and line. Keys already in the user's file (same
key, whatever the comment) are skipped. Unless --no-account is given, the host
account is created (group ssh.group, shell /bin/sh, no home, password "*": key
logins only) or, if it exists, added to the group and unlocked when it is
locked without a password. root and system accounts are refused.`
}

// Run adds the keys.
func (c *AddUserCmd) Run(a *App) error {
	if err := desired.ValidateUserName(c.Name); err != nil {
		return err
	}
	if len(c.Key) == 0 && len(c.KeyFile) == 0 {
		return errors.New("at least one --key or --key-file is required")
	}
	if os.Geteuid() != 0 {
		return errors.New("add-user must run as root: it writes the key directory and creates host accounts (try: sudo podspawn add-user ...)")
	}
	cfg, err := a.Config()
	if err != nil {
		return err
	}
	add, notes, err := c.readKeys(os.Stdin)
	if err != nil {
		return err
	}
	ctx, cancel := signalContext()
	defer cancel()
	r := setup.ExecRunner{}
	auth, found, err := setup.LookupAccount(ctx, r, cfg.SSH.AuthKeysUser)
	if err != nil {
		return err
	}
	if !found {
		return fmt.Errorf("the auth-keys account %s (ssh.auth_keys_user) does not exist: run 'podspawn server-setup' first (nothing was written)", cfg.SSH.AuthKeysUser)
	}

	// The per-user lock orders this against remove-user and other add-user
	// runs for the same user (each reads, merges and replaces the file).
	l, err := lockUser(ctx, cfg.State.LockDir, c.Name)
	if err != nil {
		return err
	}
	defer l.Unlock()

	if !c.NoAccount {
		res, err := setup.EnsureUserAccount(ctx, r, c.Name, cfg.SSH.Group)
		if err != nil {
			return fmt.Errorf("%w (no keys were written)", err)
		}
		printAccount(a.Stdout, c.Name, cfg.SSH.Group, res)
	}
	for _, n := range notes {
		fmt.Fprintf(a.Stdout, "note: %s\n", n)
	}
	// Root owns the directory; the auth-keys account reads it through its group.
	dir, _, err := keys.EnsureDir(cfg.Auth.KeyDir, auth.GID, false)
	if err != nil {
		return err
	}
	defer dir.Close()
	res, err := dir.AddKeys(c.Name, add)
	if err != nil {
		return err
	}
	if len(res.Invalid) > 0 {
		fmt.Fprintf(a.Stdout, "warning: %s's key file has %d invalid line(s), kept as they are but never offered to sshd: %v\n",
			c.Name, len(res.Invalid), lineErrors(res.Invalid))
	}
	fmt.Fprintf(a.Stdout, "added %d key(s) for %s\n", len(res.Added), c.Name)
	if len(res.Skipped) > 0 {
		fmt.Fprintf(a.Stdout, "skipped %d duplicate key(s)\n", len(res.Skipped))
	}
	return nil
}

// readKeys parses every key source. Any invalid line fails the whole
// command, listing all of them, before anything is written.
func (c *AddUserCmd) readKeys(stdin io.Reader) ([]keys.Key, []string, error) {
	var all []keys.Key
	var bad, notes []string
	take := func(src string, ks []keys.Key) {
		for _, k := range ks {
			if len(k.Options) > 0 {
				notes = append(notes, fmt.Sprintf("%s line %d: options %s are not stored (auth-keys sets its own)", src, k.Line, strings.Join(k.Options, ",")))
			}
		}
		all = append(all, ks...)
	}
	for i, k := range c.Key {
		src := fmt.Sprintf("--key #%d", i+1)
		ks, invalid := keys.Parse([]byte(k))
		for _, e := range invalid {
			msg := fmt.Sprintf("%s: %v", src, e.Err)
			if strings.Contains(k, "\n") {
				msg = fmt.Sprintf("%s line %d: %v", src, e.Line, e.Err)
			}
			if fi, err := os.Stat(strings.TrimSpace(k)); err == nil && fi.Mode().IsRegular() {
				msg += " (this is a file name: use --key-file)"
			}
			bad = append(bad, msg)
		}
		if len(ks) == 0 && len(invalid) == 0 {
			bad = append(bad, fmt.Sprintf("%s: no key in %q", src, k))
		}
		take(src, ks)
	}
	for _, f := range c.KeyFile {
		var data []byte
		var err error
		if f == "-" {
			data, err = io.ReadAll(stdin)
			f = "stdin"
		} else {
			data, err = os.ReadFile(f)
		}
		if err != nil {
			bad = append(bad, fmt.Sprintf("reading key file: %v", err))
			continue
		}
		ks, invalid := keys.Parse(data)
		for _, e := range invalid {
			bad = append(bad, fmt.Sprintf("%s:%d: %v", f, e.Line, e.Err))
		}
		if len(ks) == 0 && len(invalid) == 0 {
			bad = append(bad, fmt.Sprintf("%s: no public keys in the file", f))
		}
		take(f, ks)
	}
	if len(bad) > 0 {
		return nil, nil, fmt.Errorf("refusing to add keys for %s, nothing was written; fix these and run again:\n  %s", c.Name, strings.Join(bad, "\n  "))
	}
	return all, notes, nil
}

func printAccount(w io.Writer, name, group string, res setup.UserResult) {
	switch {
	case res.Created:
		fmt.Fprintf(w, "created host account %s (group %s, shell /bin/sh, no home, key logins only)\n", name, group)
	case res.AddedToGroup || res.Unlocked:
		var did []string
		if res.AddedToGroup {
			did = append(did, "added to group "+group)
		}
		if res.Unlocked {
			did = append(did, "unlocked for key logins")
		}
		fmt.Fprintf(w, "adopted host account %s: %s\n", name, strings.Join(did, ", "))
	default:
		fmt.Fprintf(w, "host account %s: ok\n", name)
	}
	for _, n := range res.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}

func lineErrors(es []keys.LineError) string {
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = e.Error()
	}
	return strings.Join(s, "; ")
}

// lockUser takes the per-user lock that spawn and the controller take, so
// an admin edit never races a login of the same user.
func lockUser(ctx context.Context, dir, user string) (*lock.Lock, error) {
	return lock.AcquireUser(ctx, dir, user, userLockTimeout)
}
