package doctor

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/docker/docker/api/types/network"

	"github.com/podspawn/podspawn/actions/hostfw"
	"github.com/podspawn/podspawn/observed"
)

// HostFirewall reads the host access rules (hostfw.Firewall.Check); it
// changes nothing.
type HostFirewall interface {
	Check(ctx context.Context) (hostfw.State, error)
}

const hostRulesFix = "sudo podspawn cleanup (or server-setup) installs them; the cleanup daemon restores them at its next resync. " +
	"If they were there, something removed them: a firewall reload (iptables-restore, ufw, firewalld, netfilter-persistent)"

// checkHostFirewall reports whether session containers are kept away from
// the host's services: the PODSPAWN-INPUT chain and INPUT's jump to it, as
// security.block_host_access and security.allowed_host_ports want them.
func checkHostFirewall(ctx context.Context, e *Env) Result {
	sec := e.Config.Security
	if !sec.BlockHostAccess {
		return warn("security.block_host_access is false: session containers reach every service listening on the host's addresses (0.0.0.0, the gateway of their network)",
			"set security.block_host_access: true in "+e.ConfigPath+" (list the ports sessions need in security.allowed_host_ports); the next cleanup pass installs the rules")
	}
	if e.HostFirewall == nil {
		return warn("not checked: no firewall reader", "report this as a podspawn bug")
	}
	if e.Euid != 0 {
		return warn(fmt.Sprintf("not checked: reading the firewall needs root (running as uid %d)", e.Euid), "run doctor as root: sudo podspawn doctor")
	}
	st, err := e.HostFirewall.Check(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return Result{}
		}
		if hostfw.IsNotInstalled(err) {
			return fail(err.Error(), "sudo apt-get install iptables, then sudo podspawn cleanup")
		}
		return fail("cannot read the host access rules: "+err.Error(), "check that iptables works: sudo iptables -S")
	}
	if p := st.Problems(); len(p) > 0 {
		return fail("session containers can reach the host's services: "+strings.Join(p, "; "), hostRulesFix)
	}
	var families []string
	for _, f := range st.Families {
		families = append(families, f.Family.Name)
	}
	ports := "none"
	if len(st.Allowed) > 0 {
		var ps []string
		for _, p := range st.Allowed {
			ps = append(ps, p.String())
		}
		ports = strings.Join(ps, ", ")
	}
	detail := fmt.Sprintf("%s drops what session networks (-i %s+) send to the host (%s); allowed ports: %s",
		hostfw.Chain, hostfw.BridgePrefix, strings.Join(families, ", "), ports)
	if old := unnamedSessionNetworks(ctx, e); len(old) > 0 {
		return warn(fmt.Sprintf("%s; but %d session network(s) predate the rules (their bridge is not named %s...), so their containers reach the host's services: %s",
			detail, len(old), hostfw.BridgePrefix, strings.Join(old, ", ")),
			"the rules cover a session once its network is re-created: end those sessions (podspawn stop <user>) or let them expire")
	}
	return pass(detail)
}

// unnamedSessionNetworks lists podspawn's bridge networks whose bridge
// interface the rules do not match: networks an older podspawn created.
// Docker trouble yields none; the Docker checks report it.
func unnamedSessionNetworks(ctx context.Context, e *Env) []string {
	if e.Docker == nil {
		return nil
	}
	nets, err := e.Docker.NetworkList(ctx, network.ListOptions{})
	if err != nil {
		return nil
	}
	var out []string
	for _, n := range nets {
		if n.Labels[observed.LabelManagedBy] != observed.ManagedByValue || n.Driver != "bridge" {
			continue
		}
		if !hostfw.IsSessionBridge(n.Options[hostfw.BridgeNameOption]) {
			out = append(out, n.Name)
		}
	}
	slices.Sort(out)
	return out
}
