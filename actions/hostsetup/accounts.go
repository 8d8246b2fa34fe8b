package hostsetup

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// GECOS markers of the accounts podspawn creates, so that later runs can
// tell them from accounts someone else made.
const (
	UserGECOS = "podspawn user"
	AuthGECOS = "podspawn auth-keys"
)

// MinUserUID is the first uid of regular accounts (UID_MIN of login.defs);
// below it are system accounts, which podspawn never turns into users.
const MinUserUID = 1000

// Account is one passwd entry.
type Account struct {
	Name  string
	UID   int
	GID   int
	GECOS string
	Home  string
	Shell string
}

// Group is one group entry.
type Group struct {
	Name    string
	GID     int
	Members []string
}

// getentNotFound is getent's exit code for "no such key".
const getentNotFound = 2

// LookupAccount finds name in the passwd database (files, LDAP, ...).
func LookupAccount(ctx context.Context, r Runner, name string) (Account, bool, error) {
	out, err := r.Run(ctx, "getent", "passwd", name)
	if ExitCode(err) == getentNotFound {
		return Account{}, false, nil
	}
	if err != nil {
		return Account{}, false, fmt.Errorf("looking up account %s: %w", name, err)
	}
	f := strings.Split(strings.TrimSpace(firstLine(out)), ":")
	if len(f) != 7 || f[0] != name {
		return Account{}, false, fmt.Errorf("looking up account %s: unexpected getent output %q", name, firstLine(out))
	}
	uid, err1 := strconv.Atoi(f[2])
	gid, err2 := strconv.Atoi(f[3])
	if err1 != nil || err2 != nil {
		return Account{}, false, fmt.Errorf("looking up account %s: unexpected getent output %q", name, firstLine(out))
	}
	return Account{Name: name, UID: uid, GID: gid, GECOS: f[4], Home: f[5], Shell: f[6]}, true, nil
}

// LookupGroup finds name in the group database.
func LookupGroup(ctx context.Context, r Runner, name string) (Group, bool, error) {
	out, err := r.Run(ctx, "getent", "group", name)
	if ExitCode(err) == getentNotFound {
		return Group{}, false, nil
	}
	if err != nil {
		return Group{}, false, fmt.Errorf("looking up group %s: %w", name, err)
	}
	f := strings.Split(strings.TrimSpace(firstLine(out)), ":")
	if len(f) != 4 || f[0] != name {
		return Group{}, false, fmt.Errorf("looking up group %s: unexpected getent output %q", name, firstLine(out))
	}
	gid, err := strconv.Atoi(f[2])
	if err != nil {
		return Group{}, false, fmt.Errorf("looking up group %s: unexpected getent output %q", name, firstLine(out))
	}
	g := Group{Name: name, GID: gid}
	if f[3] != "" {
		g.Members = strings.Split(f[3], ",")
	}
	return g, true, nil
}

// passwordField is the account's password field in the shadow database.
func passwordField(ctx context.Context, r Runner, name string) (string, error) {
	out, err := r.Run(ctx, "getent", "shadow", name)
	if ExitCode(err) == getentNotFound {
		return "", fmt.Errorf("account %s has no shadow entry; run 'pwconv' or check /etc/shadow", name)
	}
	if err != nil {
		return "", fmt.Errorf("reading the shadow entry of %s: %w", name, err)
	}
	f := strings.Split(strings.TrimSpace(firstLine(out)), ":")
	if len(f) < 2 || f[0] != name {
		return "", fmt.Errorf("reading the shadow entry of %s: unexpected getent output", name)
	}
	return f[1], nil
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\n")
	return s
}

// Change is what one setup step did, or would do in a dry run. An empty
// Done means the step found everything in order.
type Change struct {
	What  string // "group podspawn"
	Done  string // "created"
	Would string // "create group podspawn"
	// Notes are printed after the step whether or not it changed anything.
	Notes []string
}

// EnsureGroup creates the podspawn group (a system group) if it is missing.
func EnsureGroup(ctx context.Context, r Runner, name string, dryRun bool) (Change, error) {
	c := Change{What: "group " + name}
	if _, found, err := LookupGroup(ctx, r, name); err != nil || found {
		return c, err
	}
	c.Done, c.Would = "created", "create group "+name
	if dryRun {
		return c, nil
	}
	if _, err := r.Run(ctx, "groupadd", "--system", name); err != nil {
		return c, fmt.Errorf("creating group %s: %w", name, err)
	}
	return c, nil
}

// EnsureAuthAccount creates the system account sshd runs auth-keys as:
// no home, no login shell, no password. An existing account is used as it
// is, unless it is root.
func EnsureAuthAccount(ctx context.Context, r Runner, name string, dryRun bool) (Change, Account, error) {
	c := Change{What: "account " + name}
	if name == "root" {
		return c, Account{}, fmt.Errorf("ssh.auth_keys_user must be a dedicated unprivileged account, not root (the default is podspawn-auth)")
	}
	acct, found, err := LookupAccount(ctx, r, name)
	if err != nil {
		return c, Account{}, err
	}
	if found {
		if acct.UID == 0 {
			return c, Account{}, fmt.Errorf("ssh.auth_keys_user %s has uid 0; it must be a dedicated unprivileged account (the default is podspawn-auth)", name)
		}
		return c, acct, nil
	}
	c.Done, c.Would = "created (system account, no login)", "create system account "+name+" (no home, no login shell)"
	if dryRun {
		return c, Account{Name: name, UID: -1, GID: -1}, nil
	}
	args := []string{"--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", "--comment", AuthGECOS}
	// useradd refuses --user-group when a group of that name is left over.
	if _, gfound, err := LookupGroup(ctx, r, name); err != nil {
		return c, Account{}, err
	} else if gfound {
		args = append(args, "--gid", name)
	} else {
		args = append(args, "--user-group")
	}
	if _, err := r.Run(ctx, "useradd", append(args, name)...); err != nil {
		return c, Account{}, fmt.Errorf("creating account %s: %w", name, err)
	}
	acct, found, err = LookupAccount(ctx, r, name)
	if err == nil && !found {
		err = fmt.Errorf("account %s not found right after useradd created it", name)
	}
	return c, acct, err
}

// UserResult is what EnsureUserAccount did.
type UserResult struct {
	Account      Account
	Created      bool
	AddedToGroup bool
	Unlocked     bool
	// Notes are things the operator must know (a shell that blocks logins,
	// a locked real password that was left alone).
	Notes []string
}

// EnsureUserAccount creates the host account sshd needs for a podspawn
// user, or adopts an existing one. A new account gets the podspawn group,
// login shell /bin/sh (sshd runs the forced command through it), no home
// and the password "*" (key logins work, password logins cannot). An
// existing account is only added to the group and, if it is locked with
// "!" and has no real password, unlocked; a real password is never
// changed. root and system accounts podspawn did not create are refused.
func EnsureUserAccount(ctx context.Context, r Runner, name, group string) (UserResult, error) {
	g, found, err := LookupGroup(ctx, r, group)
	if err != nil {
		return UserResult{}, err
	}
	if !found {
		return UserResult{}, fmt.Errorf("group %s (ssh.group) does not exist: run 'podspawn server-setup' first, or use --no-account if you manage host accounts yourself", group)
	}
	acct, found, err := LookupAccount(ctx, r, name)
	if err != nil {
		return UserResult{}, err
	}
	if !found {
		// Home "/": sshd chdirs there before the forced command; a missing
		// home would greet every login with "Could not chdir". The account
		// never gets a host shell, so / is as good as any.
		_, err := r.Run(ctx, "useradd", "--no-user-group", "--gid", group, "--groups", group,
			"--no-create-home", "--home-dir", "/", "--shell", "/bin/sh",
			"--comment", UserGECOS, "--password", "*", name)
		if err != nil {
			return UserResult{}, fmt.Errorf("creating host account %s: %w", name, err)
		}
		acct, found, err := LookupAccount(ctx, r, name)
		if err == nil && !found {
			err = fmt.Errorf("host account %s not found right after useradd created it", name)
		}
		return UserResult{Account: acct, Created: true}, err
	}
	if acct.UID == 0 || name == "root" {
		return UserResult{}, fmt.Errorf("refusing to make %s a podspawn user: it is a root account; pick another user name", name)
	}
	if acct.UID < MinUserUID && acct.GECOS != UserGECOS {
		return UserResult{}, fmt.Errorf("refusing to make %s a podspawn user: it is a system account (uid %d < %d); "+
			"pick another user name, or, if you manage this account yourself and know what you are doing, run add-user with --no-account",
			name, acct.UID, MinUserUID)
	}
	res := UserResult{Account: acct}
	if acct.GID != g.GID && !slices.Contains(g.Members, name) {
		if _, err := r.Run(ctx, "usermod", "--append", "--groups", group, name); err != nil {
			return UserResult{}, fmt.Errorf("adding %s to group %s: %w", name, group, err)
		}
		res.AddedToGroup = true
	}
	pw, err := passwordField(ctx, r, name)
	if err != nil {
		return res, err
	}
	if rest := strings.TrimLeft(pw, "!"); rest != pw {
		if rest == "" || rest == "*" {
			// Locked and no password behind the "!": unlocking with "*"
			// enables key logins and still allows no password login.
			if _, err := r.Run(ctx, "usermod", "--password", "*", name); err != nil {
				return res, fmt.Errorf("unlocking %s for key logins: %w", name, err)
			}
			res.Unlocked = true
		} else {
			res.Notes = append(res.Notes, fmt.Sprintf("%s has a locked password (passwd -l); podspawn never changes a real password. "+
				"If sshd runs with 'UsePAM no' it refuses locked accounts: run 'usermod -U %s' (re-enables the password) "+
				"or 'usermod -p \"*\" %s' (removes it) to allow key logins", name, name, name))
		}
	}
	switch filepath.Base(acct.Shell) {
	case "nologin", "false":
		res.Notes = append(res.Notes, fmt.Sprintf("%s has login shell %s; sshd runs the forced command through the login shell, "+
			"so this user cannot log in until you run 'usermod -s /bin/sh %s'", name, acct.Shell, name))
	}
	if acct.GECOS != UserGECOS {
		res.Notes = append(res.Notes, fmt.Sprintf("%s is an existing host account: as a member of group %s it now logs in over SSH "+
			"only into its podspawn container (no host shell, no ~/.ssh/authorized_keys, no password)", name, group))
	}
	return res, nil
}
