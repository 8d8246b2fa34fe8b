package dockeract

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/actions/homeimg"
	"github.com/podspawn/podspawn/actions/hostdir"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/spec"
	"github.com/podspawn/podspawn/reconcile"
)

// prepareMounts creates the host directories the container's bind mounts
// need before Docker is asked for the container (Docker refuses a missing
// bind source). Only the last element is created, through a handle on
// its parent, and it must not be a link.
func (d *Executor) prepareMounts(spec *spec.Container) error {
	for _, m := range spec.Mounts {
		switch m.Prepare {
		case "":
		case desired.PrepareAgentDir:
			if err := ensureDir(m.Source, 0o700, 0o711); err != nil {
				return fmt.Errorf("agent directory: %w", err)
			}
		case desired.PrepareHome:
			h, err := d.homeDir(m.Source)
			if err != nil {
				return err
			}
			h.Close()
		default:
			return fmt.Errorf("mount %s: unknown preparation %q", m.Target, m.Prepare)
		}
	}
	return nil
}

// ensureDir makes path's parent (mode parentMode, root's) and path itself
// (root's, mode mode) unless they exist.
func ensureDir(path string, parentMode, mode uint32) error {
	parent, name := filepath.Split(filepath.Clean(path))
	if err := mkdirAll(parent, parentMode); err != nil {
		return err
	}
	p, err := hostdir.Open(parent)
	if err != nil {
		return err
	}
	defer p.Close()
	d, _, err := p.Sub(name, mode)
	if err != nil {
		return err
	}
	defer d.Close()
	st, err := d.Stat()
	if err != nil {
		return err
	}
	if st.Uid != 0 {
		return fmt.Errorf("%s belongs to uid %d, not root; remove it", path, st.Uid)
	}
	return nil
}

// removeAgentDir removes the agent directory of a session generation once
// its session container is gone (agentDir is state.agent_dir).
func removeAgentDir(agentDir string, a reconcile.Action) error {
	if agentDir == "" || a.SessionID == "" || a.Target != desired.ContainerName(a.Key) {
		return nil
	}
	d, err := hostdir.Open(agentDir)
	if err != nil {
		if isNotExist(err) {
			return nil
		}
		return err
	}
	defer d.Close()
	return d.RemoveAll(a.SessionID)
}

func mkdirAll(path string, mode uint32) error {
	if err := os.MkdirAll(path, os.FileMode(mode)); err != nil {
		return fmt.Errorf("creating %s: %w", path, err)
	}
	return nil
}

func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }

// homeMount returns the spec's persistent home mount, if any.
func homeMount(spec *spec.Container) (desired.Mount, bool) {
	for _, m := range spec.Mounts {
		if m.Prepare == desired.PrepareHome {
			return m, true
		}
	}
	return desired.Mount{}, false
}

// openHome opens the spec's persistent home (nil without one).
func (d *Executor) openHome(spec *spec.Container) (*hostdir.Dir, error) {
	m, ok := homeMount(spec)
	if !ok {
		return nil, nil
	}
	return d.homeDir(m.Source)
}

// homeDir opens (creating what is missing, root's and 0700) the home at
// path, <homes_dir>/<user> or <homes_dir>/<user>/<project>, one element
// at a time below homes_dir without following links: <user> is the
// user's own home, so anything in it may have been planted there.
func (d *Executor) homeDir(path string) (*hostdir.Dir, error) {
	if d.HomesDir == "" {
		return nil, fmt.Errorf("persistent home %s: no state.homes_dir: %w", path, actions.ErrTerminal)
	}
	rel, err := filepath.Rel(d.HomesDir, path)
	parts := strings.Split(rel, string(filepath.Separator))
	if err != nil || len(parts) > 2 || slices.Contains(parts, "..") || slices.Contains(parts, ".") {
		return nil, fmt.Errorf("persistent home %s is not below state.homes_dir %s: %w", path, d.HomesDir, actions.ErrTerminal)
	}
	if err := mkdirAll(d.HomesDir, 0o700); err != nil {
		return nil, err
	}
	cur, err := hostdir.Open(d.HomesDir)
	if err != nil {
		return nil, err
	}
	for i, p := range parts {
		if i == 0 {
			// <user> is the mount of the user's image when homes are capped.
			if err := homeimg.Mount(cur, p, d.HomeSize); err != nil {
				cur.Close()
				return nil, fmt.Errorf("persistent home: %w", err)
			}
		}
		next, _, err := cur.Sub(p, 0o700)
		cur.Close()
		if err != nil {
			return nil, fmt.Errorf("persistent home: %w", err)
		}
		cur = next
	}
	return cur, nil
}

// verifyHomeMount checks that what the container has at the user's home
// is the directory podspawn checked: Docker resolves a bind source by
// path, and the user could swap an element of it for a link meanwhile.
func (d *Executor) verifyHomeMount(ctx context.Context, id, user string, home *hostdir.Dir) error {
	c, err := d.API.ContainerInspect(ctx, id)
	if err != nil {
		return err
	}
	if c.State == nil || c.State.Pid <= 0 {
		return fmt.Errorf("checking the home mount: the container is not running")
	}
	want, err := home.Stat()
	if err != nil {
		return err
	}
	got, err := statInContainer(c.State.Pid, "home/"+user)
	if err != nil {
		return fmt.Errorf("checking the home mount: %w", err)
	}
	if got.Dev != want.Dev || got.Ino != want.Ino {
		return fmt.Errorf("the home mounted in the container is not %s (was it replaced by a link?); the container is removed", home.Path())
	}
	return nil
}

// statInContainer describes path inside the root of process pid, links
// in it resolved inside that root (openat2 RESOLVE_IN_ROOT), never on the host.
func statInContainer(pid int, path string) (unix.Stat_t, error) {
	var st unix.Stat_t
	root, err := unix.Open(fmt.Sprintf("/proc/%d/root", pid), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return st, err
	}
	defer unix.Close(root)
	fd, err := unix.Openat2(root, path, &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS})
	if err != nil {
		return st, err
	}
	defer unix.Close(fd)
	err = unix.Fstat(fd, &st)
	return st, err
}

// adoptHome gives a home that is still root's (just made) or another
// uid's (an image whose account got another uid) to the container user.
func adoptHome(home *hostdir.Dir, uid, gid int) error {
	st, err := home.Stat()
	if err != nil {
		return err
	}
	switch {
	case st.Uid == 0:
		return home.Chown(uid, gid, 0o700)
	case int(st.Uid) != uid || int(st.Gid) != gid:
		return home.Chown(uid, gid, st.Mode&0o7777)
	}
	return nil
}
