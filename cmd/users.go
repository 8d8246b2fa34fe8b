package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/podspawn/podspawn/actions/audit"
	"github.com/podspawn/podspawn/actions/homeimg"
	"github.com/podspawn/podspawn/actions/hostdir"
	"github.com/podspawn/podspawn/controller"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/keys"
	"github.com/podspawn/podspawn/desired/sqlstore"
	"github.com/podspawn/podspawn/reconcile"
)

// ListUsersCmd lists the users of the key directory.
type ListUsersCmd struct {
	Output string `help:"Output: text, or wide (adds the size of each persistent home)." enum:"text,wide" default:"text" short:"o"`
}

// Help is shown by podspawn list-users --help.
func (ListUsersCmd) Help() string {
	return `Lists the users that have a key file in auth.key_dir, with the number of valid SSH public keys in each. Lines that are not valid keys are counted separately (they never let anyone log in); files that cannot be read are marked unreadable with the reason. Entries whose names are not valid user names are ignored, with a warning on stderr.

With -o wide, each line also gives the size of the user's persistent home in state.homes_dir (project homes included; links in it are not followed), or "no home". With state.home_size, a capped home reads "<used> of <cap>", or says that its image is not mounted (after a reboot, until the next login). With runtime: kubernetes a home is the user's PersistentVolumeClaim: the line gives its capacity ("n/a of <capacity>": the usage is not read) and its name.`
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
	var homes homeStore
	if c.Output == "wide" {
		if homes, err = a.Homes(context.Background()); err != nil {
			return err
		}
	}
	for _, u := range users {
		line := keysSummary(dir, u)
		if homes != nil {
			line += "  home: " + homes.Describe(context.Background(), u)
		}
		fmt.Fprintln(a.Stdout, line)
	}
	return nil
}

// homeStore is where the users' persistent homes are: directories below
// state.homes_dir (Docker), or a claim per user (Kubernetes).
type homeStore interface {
	// Describe is list-users -o wide's home column of user.
	Describe(ctx context.Context, user string) string
	// Find names user's home; ok is false when there is none.
	Find(ctx context.Context, user string) (home homeRef, ok bool, err error)
	// Purge deletes user's home.
	Purge(ctx context.Context, user string) error
}

// homeRef names a home in remove-user's output.
type homeRef struct {
	// What is "directory", or empty when Name says it.
	What, Name string
	// NotHome: something else is in the home's place (a link): purged,
	// but not worth a note when kept.
	NotHome bool
}

func (h homeRef) String() string { return strings.TrimSpace(h.What + " " + h.Name) }

// dirHomes are the Docker runtime's homes, <homes_dir>/<user>.
type dirHomes struct{ dir string }

func (d dirHomes) Describe(_ context.Context, user string) string { return homeSize(d.dir, user) }

func (d dirHomes) Find(_ context.Context, user string) (homeRef, bool, error) {
	home := filepath.Join(d.dir, user)
	fi, err := os.Lstat(home)
	if err != nil {
		// A capped home's image outlives a lost mount point; it is the home.
		img := homeimg.ImagePath(d.dir, user)
		if _, ierr := os.Lstat(img); ierr == nil {
			return homeRef{What: "home image", Name: img}, true, nil
		}
		return homeRef{}, false, nil
	}
	return homeRef{What: "directory", Name: home, NotHome: !fi.IsDir()}, true, nil
}

func (d dirHomes) Purge(_ context.Context, user string) error { return purgeHome(d.dir, user) }

// keysSummary is the list-users line of user u.
func keysSummary(dir, u string) string {
	uf, err := keys.Read(dir, u)
	switch {
	case err != nil:
		// Gone since the listing, or a dangling symlink.
		return fmt.Sprintf("%s  (unreadable: %s)", u, fsReason(err))
	case uf.ReadErr != nil:
		return fmt.Sprintf("%s  (unreadable: %s)", u, fsReason(uf.ReadErr))
	case len(uf.Invalid) > 0:
		return fmt.Sprintf("%s  (%s, %s)", u, countNoun(len(uf.Keys), "key", "keys"), countNoun(len(uf.Invalid), "invalid line", "invalid lines"))
	}
	return fmt.Sprintf("%s  (%s)", u, countNoun(len(uf.Keys), "key", "keys"))
}

// homeSize is the disk use of u's persistent home, counted through
// handles: a link the user planted there is not followed.
func homeSize(homesDir, u string) string {
	root, err := hostdir.Open(homesDir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "no home"
		}
		return "unreadable: " + err.Error()
	}
	defer root.Close()
	if _, err := root.Lstat(u); errors.Is(err, fs.ErrNotExist) {
		return "no home"
	}
	h, _, err := root.Sub(u, 0o700)
	if err != nil {
		return "unreadable: " + err.Error()
	}
	defer h.Close()
	n, err := h.Usage()
	if err != nil {
		return "unreadable: " + err.Error()
	}
	img, err := homeimg.Describe(root, u)
	switch {
	case err != nil:
		return humanBytes(n) + " (image unreadable: " + err.Error() + ")"
	case img.Image && !img.Mounted:
		return "image of " + humanBytes(img.Size) + ", not mounted (the next login mounts it)"
	case img.Image:
		return humanBytes(n) + " of " + humanBytes(img.Size)
	}
	return humanBytes(n)
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
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
	// PurgeHome is explicit: a home holds the user's files, and Force is
	// about sessions.
	PurgeHome bool   `name:"purge-home" help:"With --force, also delete the user's persistent home in state.homes_dir (project homes included; on Kubernetes the user's home claim), once every session is gone."`
	DryRun    bool   `help:"Print the plan and change nothing."`
	Output    string `help:"Format of the --dry-run plan: text or json." enum:"text,json" default:"text" short:"o"`
}

// Help is shown by podspawn remove-user --help.
func (RemoveUserCmd) Help() string {
	return `Deletes the user's key file from auth.key_dir, so the user can no longer log in. A user with active sessions is refused unless --force is given; with --force, under the user's lock, every session of the user is marked for removal, the key file is deleted, and each session is torn down (container, service containers and volumes, network, record).

If a teardown fails, the command names it and exits 1: the key file is already gone and the failed sessions stay marked for removal, so 'podspawn cleanup' finishes the job once the cause is fixed.

The host Unix account (if any) is NOT deleted. The persistent home directory (<homes_dir>/<user>) is deleted only with --force --purge-home, and only when every session of the user was destroyed; links in it are removed, never followed. With runtime: kubernetes the home is the user's PersistentVolumeClaim, deleted under the same rule (the command waits until it is gone).

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
	if c.PurgeHome && !c.Force {
		return errors.New("--purge-home needs --force: the home is deleted only once the user's sessions are destroyed")
	}
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
	if err := c.finishHome(ctx, a, len(failures) == 0); err != nil {
		return err
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

// finishHome deletes the user's persistent home with --purge-home once
// every session is gone (allGone), and otherwise says it was kept.
func (c *RemoveUserCmd) finishHome(ctx context.Context, a *App, allGone bool) error {
	user := c.Username
	homes, err := a.Homes(ctx)
	if err != nil {
		return err
	}
	home, ok, err := homes.Find(ctx, user)
	if err != nil {
		return fmt.Errorf("the sessions are gone, but the persistent home of %s could not be read: %w", user, err)
	}
	if !ok {
		return nil
	}
	if !c.PurgeHome || !allGone {
		if !home.NotHome {
			fmt.Fprintf(a.Stderr, "Note: the persistent home %s was kept; 'podspawn remove-user %s --force --purge-home' deletes it.\n", home, user)
		}
		return nil
	}
	err = homes.Purge(ctx, user)
	e := audit.Event{Event: audit.HomePurge, User: audit.Text(user), Actor: a.auditActor, Outcome: audit.OutcomeSuccess}
	if err != nil {
		e.Outcome, e.Error = audit.OutcomeFailure, audit.Text(err.Error())
	}
	if w, aerr := a.Audit(); aerr == nil {
		if werr := w.Write(e); werr != nil {
			a.Log.Error(werr, "Writing audit event failed", "event", audit.HomePurge)
		}
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(a.Stdout, "deleted persistent home %s\n", home.Name)
	return nil
}

// purgeHome deletes <homesDir>/<user> through a handle on homesDir,
// removing links in it rather than following them; a capped home is
// unmounted and its image removed first.
func purgeHome(homesDir, user string) error {
	root, err := hostdir.Open(homesDir)
	if err != nil {
		return err
	}
	defer root.Close()
	if err := homeimg.Purge(root, user); err != nil {
		return err
	}
	return root.RemoveAll(user)
}
