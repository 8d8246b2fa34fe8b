// Package spawn serves one SSH connection: it works out who is connecting
// and to which project, attaches the connection to that user's session
// (creating or replacing the container generation under the per-user
// lock), runs the shell, command or sftp server inside the container with
// the client's stdio, and releases the connection when it ends.
package spawn

import (
	"errors"
	"fmt"
	"os/user"
	"strings"

	"github.com/podspawn/podspawn/desired"
)

// IdentityInput is what the process knows about who runs it.
type IdentityInput struct {
	// EUID is the effective uid of the process.
	EUID int
	// SudoUser and SudoUID come from the environment sudo sets.
	SudoUser string
	SudoUID  string
	// FlagUser is --user.
	FlagUser string
	// Group is ssh.group: podspawn users must be members.
	Group string
	// InGroup reports whether user is a member of group (nil: os/user).
	InGroup func(user, group string) (bool, error)
	// Direct is ssh.use_sudo false: sshd runs spawn as the user itself.
	// Login is then the name of EUID, the only identity trusted.
	Direct bool
	Login  string
}

// ErrNotRoot explains how spawn is meant to be run.
var ErrNotRoot = errors.New("podspawn spawn must run as root: sshd runs it as 'sudo -n podspawn --config <file> spawn' " +
	"from the key options that 'podspawn auth-keys' prints (ssh.use_sudo: true), allowed by the sudoers drop-in " +
	"/etc/sudoers.d/podspawn that 'podspawn server-setup' installs; check both")

// ResolveUser decides which user this connection is for. Under sudo the
// identity is SUDO_USER, which sudo sets and the user cannot forge, and it
// must belong to the podspawn group; root without sudo (an operator or a
// test) names the user with --user.
func ResolveUser(in IdentityInput) (string, error) {
	if in.EUID != 0 && in.Direct {
		// Without sudo the process is the user: its own login name is the
		// identity, whatever --user says. (This mode needs the user to
		// reach Docker and the database; see ssh.use_sudo.)
		if err := desired.ValidateUserName(in.Login); err != nil {
			return "", fmt.Errorf("login name: %w", err)
		}
		if in.FlagUser != "" && in.FlagUser != in.Login {
			return "", fmt.Errorf("--user %q does not match the login %q: a user can only open their own session", in.FlagUser, in.Login)
		}
		return in.Login, nil
	}
	if in.EUID != 0 {
		return "", ErrNotRoot
	}
	if in.SudoUser != "" && in.SudoUID != "0" {
		if err := desired.ValidateUserName(in.SudoUser); err != nil {
			return "", fmt.Errorf("sudo caller: %w", err)
		}
		if in.FlagUser != "" && in.FlagUser != in.SudoUser {
			return "", fmt.Errorf("--user %q does not match the sudo caller %q: a user can only open their own session", in.FlagUser, in.SudoUser)
		}
		inGroup := in.InGroup
		if inGroup == nil {
			inGroup = IsMember
		}
		ok, err := inGroup(in.SudoUser, in.Group)
		if err != nil {
			return "", fmt.Errorf("checking that %s is in group %s: %w", in.SudoUser, in.Group, err)
		}
		if !ok {
			return "", fmt.Errorf("user %s is not a member of the podspawn group %q (ssh.group); add them with 'podspawn add-user %s'", in.SudoUser, in.Group, in.SudoUser)
		}
		return in.SudoUser, nil
	}
	if in.FlagUser == "" {
		return "", errors.New("--user is required when spawn is run by root without sudo")
	}
	if err := desired.ValidateUserName(in.FlagUser); err != nil {
		return "", err
	}
	return in.FlagUser, nil
}

// IsMember reports whether the host account name is in group, as its
// primary group or a supplementary one.
func IsMember(name, group string) (bool, error) {
	u, err := user.Lookup(name)
	if err != nil {
		var unknown user.UnknownUserError
		if errors.As(err, &unknown) {
			return false, nil
		}
		return false, err
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		var unknown user.UnknownGroupError
		if errors.As(err, &unknown) {
			return false, fmt.Errorf("group %q does not exist (run 'podspawn server-setup', or fix ssh.group)", group)
		}
		return false, err
	}
	gids, err := u.GroupIds()
	if err != nil {
		return false, err
	}
	for _, gid := range gids {
		if gid == g.Gid {
			return true, nil
		}
	}
	return u.Gid == g.Gid, nil
}

// ResolveProject returns the project of the connection: --project, else
// PODSPAWN_PROJECT as sent by the client (a trailing ".pod" from the
// ssh_config Host pattern is stripped). Both are client input and become
// container, network and database names, so they are validated.
func ResolveProject(flag, env string) (string, error) {
	p := flag
	if p == "" {
		p = strings.TrimSuffix(env, ".pod")
	}
	if p == "" {
		return "", nil
	}
	if err := desired.ValidateProjectName(p); err != nil {
		return "", err
	}
	return p, nil
}
