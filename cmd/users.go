package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/podspawn/podspawn/controller"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/keys"
	"github.com/podspawn/podspawn/desired/sqlstore"
	"github.com/podspawn/podspawn/reconcile"
)

// ListUsersCmd lists the users of the key directory.
type ListUsersCmd struct{}

// Help is shown by podspawn list-users --help.
func (ListUsersCmd) Help() string {
	return `Lists the users that have a key file in auth.key_dir, with the number of valid SSH public keys in each. Lines that are not valid keys are counted separately (they never let anyone log in); files that cannot be read are marked unreadable with the reason. Entries whose names are not valid user names are ignored, with a warning on stderr.`
}

// Run prints one line per user.
func (c *ListUsersCmd) Run(a *App) error {
	cfg, err := a.Config()
	if err != nil {
		return err
	}
	dir := cfg.Auth.KeyDir
	users, err := keys.ListUsers(dir)
	if errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintln(a.Stdout, "No users registered.")
		fmt.Fprintf(a.Stderr, "Warning: key directory %s does not exist; run 'podspawn server-setup' to create it, or set auth.key_dir in %s\n", dir, cfg.Path)
		return nil
	}
	if err != nil {
		return err
	}
	warnIgnoredKeyFiles(a, dir)
	if len(users) == 0 {
		fmt.Fprintln(a.Stdout, "No users registered.")
		return nil
	}
	for _, u := range users {
		uf, err := keys.Read(dir, u)
		switch {
		case err != nil:
			// Gone since the listing, or a dangling symlink.
			fmt.Fprintf(a.Stdout, "%s  (unreadable: %s)\n", u, fsReason(err))
		case uf.ReadErr != nil:
			fmt.Fprintf(a.Stdout, "%s  (unreadable: %s)\n", u, fsReason(uf.ReadErr))
		case len(uf.Invalid) > 0:
			fmt.Fprintf(a.Stdout, "%s  (%s, %s)\n", u, countNoun(len(uf.Keys), "key", "keys"), countNoun(len(uf.Invalid), "invalid line", "invalid lines"))
		default:
			fmt.Fprintf(a.Stdout, "%s  (%s)\n", u, countNoun(len(uf.Keys), "key", "keys"))
		}
	}
	return nil
}

// warnIgnoredKeyFiles names the files that keys.ListUsers skips for not
// being valid user names, so "alice.pub" does not silently lock alice out.
func warnIgnoredKeyFiles(a *App, dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if err := desired.ValidateUserName(e.Name()); err != nil {
			fmt.Fprintf(a.Stderr, "Warning: ignoring %s: %v\n", filepath.Join(dir, e.Name()), err)
		}
	}
}

func countNoun(n int, one, many string) string {
	return fmt.Sprintf("%d %s", n, plural(n, one, many))
}

// fsReason drops the path from a file error: the line already names the user.
func fsReason(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// RemoveUserCmd removes a user's key file and, with --force, their sessions.
type RemoveUserCmd struct {
	Username string `arg:"" help:"The user to remove."`
	Force    bool   `help:"Destroy the user's active sessions (containers, services, networks); without it, a user with active sessions is refused."`
	DryRun   bool   `help:"Print the plan and change nothing."`
	Output   string `help:"Format of the --dry-run plan: text or json." enum:"text,json" default:"text" short:"o"`
}

// Help is shown by podspawn remove-user --help.
func (RemoveUserCmd) Help() string {
	return `Deletes the user's key file from auth.key_dir, so the user can no longer log in. A user with active sessions is refused unless --force is given; with --force, under the user's lock, every session of the user is marked for removal, the key file is deleted, and each session is torn down (container, service containers and volumes, network, record).

If a teardown fails, the command names it and exits 1: the key file is already gone and the failed sessions stay marked for removal, so 'podspawn cleanup' finishes the job once the cause is fixed.

The host Unix account (if any) and the persistent home directory are NOT deleted; remove them by hand if needed.

Exit status: 0 removed (or, with --dry-run, plan printed), 1 error.`
}

func activeSessions(sessions []*desired.Session) int {
	n := 0
	for _, s := range sessions {
		if s.Status != desired.StatusTerminating {
			n++
		}
	}
	return n
}

// Run removes the user.
func (c *RemoveUserCmd) Run(a *App) error {
	cfg, err := a.Config()
	if err != nil {
		return err
	}
	user := c.Username
	// keys.Path validates the name before any path is built.
	path, err := keys.Path(cfg.Auth.KeyDir, user)
	if err != nil {
		return err
	}
	ctx, cancel := signalContext()
	defer cancel()
	if err := registered(ctx, a, cfg.Auth.KeyDir, path, user); err != nil {
		return err
	}

	st, err := a.Store(ctx)
	if err != nil {
		return err
	}
	refuse := func(sessions []*desired.Session) error {
		if n := activeSessions(sessions); n > 0 && !c.Force {
			return fmt.Errorf("user %s has %d active session(s); use --force to destroy them", user, n)
		}
		return nil
	}

	if c.DryRun {
		return c.whatIf(ctx, a, st, path, refuse)
	}

	ctrl, err := a.Controller(ctx, ControllerOptions{})
	if err != nil {
		return err
	}
	res := ctrl.Teardown(ctx, []controller.Target{{User: user, AllProjects: true}}, reconcile.ReasonUserRemoved, controller.TeardownHooks{
		Check: func(_ controller.Target, sessions []*desired.Session) error {
			if err := refuse(sessions); err != nil || len(sessions) == 0 {
				return err
			}
			return dockerReady(ctx, a)
		},
		// After the marks, so a key file that cannot go still leaves the
		// sessions for cleanup to finish.
		Edit: func(_ controller.Target, sessions []*desired.Session) error {
			err := keys.Remove(cfg.Auth.KeyDir, user)
			if err != nil && len(sessions) > 0 {
				return fmt.Errorf("%w; %s can still log in, but the user's %d session(s) are marked for removal and 'podspawn cleanup' destroys them",
					err, user, len(sessions))
			}
			return err
		},
		Done: a.printTeardown,
	})[0]
	if res.Err != nil {
		return res.Err
	}
	var failures []string
	for _, r := range res.Sessions {
		if r.Err != nil {
			failures = append(failures, failureText(r.Err))
		}
	}
	destroyed := len(res.Sessions) - len(failures)
	fmt.Fprintf(a.Stdout, "removed user %s (%d session(s) destroyed)\n", user, destroyed)
	if home := filepath.Join(cfg.State.HomesDir, user); dirExists(home) {
		fmt.Fprintf(a.Stderr, "Note: the persistent home directory %s was kept; delete it by hand if its data is no longer needed.\n", home)
	}
	if len(failures) > 0 {
		return &ExitError{Code: 1, Err: fmt.Errorf("%d of %d session(s) of %s could not be destroyed; the key file is gone, so %s can no longer log in, and 'podspawn cleanup' finishes these teardowns:\n  %s",
			len(failures), len(res.Sessions), user, user, strings.Join(failures, "\n  "))}
	}
	return nil
}

// registered refuses a user without a key file, saying what becomes of
// their remaining sessions.
func registered(ctx context.Context, a *App, keyDir, path, user string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		msg := fmt.Sprintf("user %q is not registered (no key file in %s)", user, keyDir)
		// Sessions of a user without a key file are already doomed; say how
		// to end them now rather than leave the operator guessing.
		if st, serr := a.Store(ctx); serr == nil {
			if sessions, serr := st.UserSessions(ctx, user); serr == nil && len(sessions) > 0 {
				msg += fmt.Sprintf("; its %d remaining session(s) are destroyed by the next 'podspawn cleanup', or now with 'podspawn stop'", len(sessions))
			}
		}
		return errors.New(msg)
	}
	if err != nil {
		return fmt.Errorf("checking key file of %s: %w", user, err)
	}
	if fi.IsDir() {
		return fmt.Errorf("%s is a directory, not a key file; user %q is not registered", path, user)
	}
	return nil
}

// whatIf prints what remove-user would do, changing nothing.
func (c *RemoveUserCmd) whatIf(ctx context.Context, a *App, st *sqlstore.Store, path string, refuse func([]*desired.Session) error) error {
	user := c.Username
	sessions, err := st.UserSessions(ctx, user)
	if err != nil {
		return err
	}
	if err := refuse(sessions); err != nil {
		return err
	}
	ctrl, err := a.Controller(ctx, ControllerOptions{DryRun: true})
	if err != nil {
		return err
	}
	err = printWhatIf(ctx, a, ctrl, c.Output, sessions, reconcile.ReasonUserRemoved, "requested by podspawn remove-user",
		func(d *desired.State) { d.RemoveUser(user) })
	if err != nil {
		return err
	}
	note := fmt.Sprintf("Key file %s would be removed: %s could no longer log in.", path, user)
	if c.Output == "json" {
		fmt.Fprintln(a.Stderr, note)
	} else {
		fmt.Fprintln(a.Stdout, "\n"+note)
	}
	return nil
}

func dirExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}
