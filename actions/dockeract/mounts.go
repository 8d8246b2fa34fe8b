package dockeract

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/podspawn/podspawn/actions/hostdir"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/reconcile"
)

// prepareMounts creates the host directories the container's bind mounts
// need before Docker is asked for the container (Docker refuses a missing
// bind source). Only the last element is created, through a handle on
// its parent, and it must not be a link.
func prepareMounts(spec *reconcile.ContainerSpec) error {
	for _, m := range spec.Mounts {
		switch m.Prepare {
		case "":
		case desired.PrepareAgentDir:
			if err := ensureDir(m.Source, 0o700, 0o711); err != nil {
				return fmt.Errorf("agent directory: %w", err)
			}
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
