package doctor

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/actions/hostfw"
	"github.com/podspawn/podspawn/test/doctor/fakedocker"
)

// tables plays "iptables -S" and "ip6tables -S" (doctor only reads).
type tables struct {
	v4, v6 string
	err    error
}

func (t *tables) Run(_ context.Context, _ []byte, name string, args ...string) ([]byte, error) {
	if t.err != nil {
		return nil, t.err
	}
	switch name + " " + strings.Join(args, " ") {
	case "iptables -w -S":
		return []byte(t.v4), nil
	case "ip6tables -w -S":
		return []byte(t.v6), nil
	}
	return nil, fmt.Errorf("doctor ran %s %v", name, args)
}

const (
	v4Rules = `-P INPUT ACCEPT
-N PODSPAWN-INPUT
-A INPUT -i psp+ -j PODSPAWN-INPUT
-A PODSPAWN-INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A PODSPAWN-INPUT -j DROP
`
	v6Rules = `-P INPUT ACCEPT
-N PODSPAWN-INPUT
-A INPUT -i psp+ -j PODSPAWN-INPUT
-A PODSPAWN-INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A PODSPAWN-INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 135 -j ACCEPT
-A PODSPAWN-INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 136 -j ACCEPT
-A PODSPAWN-INPUT -j DROP
`
)

// installedRules is a host whose rules match the fixture's config.
func installedRules() *hostfw.Firewall {
	return rulesOn(&tables{v4: v4Rules, v6: v6Rules}, nil)
}

func rulesOn(t *tables, allowed []hostfw.Port) *hostfw.Firewall {
	return &hostfw.Firewall{Runner: t, Block: true, Allowed: allowed, Families: []hostfw.Family{hostfw.IPv4, hostfw.IPv6}}
}

func TestHostAccessRules(t *testing.T) {
	fix := hostRulesFix
	cases := []struct {
		name  string
		setup func(f *fixture)
		want  Result
	}{
		{"allowed ports", func(f *fixture) {
			v4 := strings.Replace(v4Rules, "-A PODSPAWN-INPUT -j DROP", "-A PODSPAWN-INPUT -p udp -m udp --dport 53 -j ACCEPT\n-A PODSPAWN-INPUT -p tcp -m tcp --dport 8080 -j ACCEPT\n-A PODSPAWN-INPUT -j DROP", 1)
			v6 := strings.Replace(v6Rules, "-A PODSPAWN-INPUT -j DROP", "-A PODSPAWN-INPUT -p udp -m udp --dport 53 -j ACCEPT\n-A PODSPAWN-INPUT -p tcp -m tcp --dport 8080 -j ACCEPT\n-A PODSPAWN-INPUT -j DROP", 1)
			f.env.HostFirewall = rulesOn(&tables{v4: v4, v6: v6}, []hostfw.Port{{Protocol: "tcp", Number: 8080}, {Protocol: "udp", Number: 53}})
		}, Result{Status: Pass, Detail: "PODSPAWN-INPUT drops what session networks (-i psp+) send to the host (IPv4, IPv6); allowed ports: 53/udp, 8080/tcp"}},
		{"missing", func(f *fixture) { f.env.HostFirewall = rulesOn(&tables{v4: "-P INPUT ACCEPT\n", v6: v6Rules}, nil) },
			Result{Status: Fail, Detail: "session containers can reach the host's services: IPv4: chain PODSPAWN-INPUT is missing; IPv4: INPUT does not send session traffic (-i psp+) to PODSPAWN-INPUT", Fix: fix}},
		{"config changed", func(f *fixture) {
			f.env.HostFirewall = rulesOn(&tables{v4: v4Rules, v6: v6Rules}, []hostfw.Port{{Protocol: "tcp", Number: 22}})
		},
			Result{Status: Fail, Detail: "session containers can reach the host's services: IPv4: PODSPAWN-INPUT does not hold the configured rules (2 rules, want 3); IPv6: PODSPAWN-INPUT does not hold the configured rules (4 rules, want 5)", Fix: fix}},
		{"jump not first", func(f *fixture) {
			v4 := strings.Replace(v4Rules, "-A INPUT -i psp+", "-A INPUT -j ACCEPT\n-A INPUT -i psp+", 1)
			f.env.HostFirewall = rulesOn(&tables{v4: v4, v6: v6Rules}, nil)
		}, Result{Status: Fail, Detail: "session containers can reach the host's services: IPv4: INPUT's jump to PODSPAWN-INPUT is its rule 2, not the first: the rules before it may accept session traffic", Fix: fix}},
		{"block off", func(f *fixture) { f.env.Config.Security.BlockHostAccess = false },
			Result{Status: Warn, Detail: "security.block_host_access is false: session containers reach every service listening on the host's addresses (0.0.0.0, the gateway of their network)",
				Fix: "set security.block_host_access: true in ROOT/etc/config.yaml (list the ports sessions need in security.allowed_host_ports); the next cleanup pass installs the rules"}},
		{"not root", func(f *fixture) { f.env.Euid = 1000 },
			Result{Status: Warn, Detail: "not checked: reading the firewall needs root (running as uid 1000)", Fix: "run doctor as root: sudo podspawn doctor"}},
		{"no iptables", func(f *fixture) {
			_, err := hostfw.ExecRunner{}.Run(context.Background(), nil, "podspawn-test-no-iptables")
			f.env.HostFirewall = rulesOn(&tables{err: err}, nil)
		}, Result{Status: Fail, Detail: "reading the IPv4 firewall: podspawn-test-no-iptables is not installed (Debian: apt-get install iptables); podspawn needs it to keep session containers away from the host's services",
			Fix: "sudo apt-get install iptables, then sudo podspawn cleanup"}},
		{"iptables fails", func(f *fixture) {
			f.env.HostFirewall = rulesOn(&tables{err: errors.New("iptables -w -S: exit status 3: modprobe: FATAL: Module ip_tables not found")}, nil)
		}, Result{Status: Fail, Detail: "cannot read the host access rules: reading the IPv4 firewall: iptables -w -S: exit status 3: modprobe: FATAL: Module ip_tables not found",
			Fix: "check that iptables works: sudo iptables -S"}},
		{"networks of an older podspawn", func(f *fixture) {
			nets := append(fixtureNets,
				fakedocker.Network{Name: "podspawn-bob-default-net", Labels: map[string]string{"managed-by": "podspawn"}},
				fakedocker.Network{Name: "podspawn-alice-default-net", Labels: map[string]string{"managed-by": "podspawn"}},
				fakedocker.Network{Name: "podspawn-carol-default-net", Labels: map[string]string{"managed-by": "podspawn"},
					Options: hostfw.NetworkOptions("podspawn-carol-default-net")},
				fakedocker.Network{Name: "someone-elses", Labels: map[string]string{"app": "x"}})
			f.useNetworks(fixturePools, nets)
		}, Result{Status: Warn, Detail: "PODSPAWN-INPUT drops what session networks (-i psp+) send to the host (IPv4, IPv6); allowed ports: none; " +
			"but 2 session network(s) predate the rules (their bridge is not named psp...), so their containers reach the host's services: podspawn-alice-default-net, podspawn-bob-default-net",
			Fix: "the rules cover a session once its network is re-created: end those sessions (podspawn stop <user>) or let them expire"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			tc.setup(f)
			want := tc.want
			want.Name, want.Fix = "host access rules", f.expand(want.Fix)
			if diff := cmp.Diff(want, f.result("host access rules")); diff != "" {
				t.Errorf("result (-want +got):\n%s", diff)
			}
		})
	}
}
