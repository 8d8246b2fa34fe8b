package dockeract

import (
	"context"
	"fmt"

	"github.com/podspawn/podspawn/actions/hostfw"
	"github.com/podspawn/podspawn/reconcile"
)

// sessionNetworkOptions names the network's bridge interface so that the
// host access rules match it (hostfw.BridgeName).
func sessionNetworkOptions(network string) map[string]string {
	return hostfw.NetworkOptions(network)
}

// ensureHostFirewall makes sure the rules are in place before a session
// network or container is created, so that no container runs without
// them: a failure fails the action, and the session is not started. The
// check reads the rules and writes only when they differ, and runs again
// for every creation, also when a network left by an earlier failure is
// adopted.
func (d *Executor) ensureHostFirewall(ctx context.Context, k reconcile.Kind) error {
	if d.HostFirewall == nil || (k != reconcile.KindCreateNetwork && k != reconcile.KindCreateContainer) {
		return nil
	}
	if _, err := d.HostFirewall.Ensure(ctx); err != nil {
		return fmt.Errorf("host access rules (security.block_host_access): %w", err)
	}
	return nil
}
