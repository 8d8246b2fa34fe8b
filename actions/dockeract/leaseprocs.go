package dockeract

import (
	"context"
	"fmt"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/reconcile"
)

// leaseKillNotRunnable are the exit codes of an exec that could not start
// (no sh in the image, or the user missing from its passwd file). The
// script itself runs only builtins, so it never exits with them.
var leaseKillNotRunnable = map[int]bool{126: true, 127: true}

// killLeaseProcesses runs actions.LeaseKillScript in the container the plan saw.
// A container that is gone or stopped took its processes with it, so the
// kill succeeds without doing anything; so does a scan that finds none.
func (d *Executor) killLeaseProcesses(ctx context.Context, a reconcile.Action) (actions.Outcome, error) {
	if a.LeaseID <= 0 || a.Key.User == "" {
		return "", fmt.Errorf("%s without a lease id or user: %w", a.Kind, actions.ErrTerminal)
	}
	ref := a.TargetID
	if ref == "" {
		ref = a.Target
	}
	code, out, err := Exec(ctx, d.API, ref, []string{"sh", "-c", actions.LeaseKillScript, "podspawn-kill", desired.LeaseMarker(a.LeaseID)}, a.Key.User)
	switch {
	case errdefs.IsNotFound(err):
		return actions.Unchanged, nil
	case notRunning(err):
		return actions.Unchanged, nil
	case err != nil:
		return "", err
	case leaseKillNotRunnable[code]:
		return "", fmt.Errorf("cannot run sh as %s in the container (exit %d: %s); the image needs sh to end a dead connection's processes, "+
			"and the lease is kept (it counts as a connection) until the container stops or is removed ('podspawn stop %s'): %w",
			a.Key.User, code, strings.TrimSpace(out), a.Key, actions.ErrTerminal)
	case code != 0:
		return "", fmt.Errorf("killing the processes of connection %d: exit %d: %s", a.LeaseID, code, strings.TrimSpace(out))
	}
	if strings.Contains(out, "killed ") {
		return actions.Changed, nil
	}
	return actions.Unchanged, nil
}
