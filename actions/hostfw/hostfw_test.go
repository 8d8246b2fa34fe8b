package hostfw_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/actions/hostfw"
)

// fakeTables plays iptables and ip6tables: "-S" prints the family's
// table, and a restore records its input (the test decides what the table
// looks like afterwards; nothing is interpreted).
type fakeTables struct {
	tables map[string]string // command ("iptables") -> "-S" output
	calls  []string          // "name args..." in order
	stdin  map[string]string // restore command -> its input
	fail   map[string]error  // command -> error
}

func newFake(v4, v6 string) *fakeTables {
	return &fakeTables{tables: map[string]string{"iptables": v4, "ip6tables": v6}, stdin: map[string]string{}, fail: map[string]error{}}
}

func (f *fakeTables) Run(_ context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	f.calls = append(f.calls, strings.Join(append([]string{name}, args...), " "))
	if err := f.fail[name]; err != nil {
		return nil, err
	}
	if strings.HasSuffix(name, "-restore") {
		f.stdin[name] = string(stdin)
		return nil, nil
	}
	return []byte(f.tables[name]), nil
}

func firewall(f *fakeTables, block bool, allowed ...hostfw.Port) *hostfw.Firewall {
	return &hostfw.Firewall{Runner: f, Block: block, Allowed: allowed, Families: []hostfw.Family{hostfw.IPv4, hostfw.IPv6}}
}

// A table with Docker's rules and a host rule in INPUT, as on a fresh host.
const bare = `-P INPUT ACCEPT
-P FORWARD DROP
-P OUTPUT ACCEPT
-N DOCKER
-N DOCKER-USER
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
-A FORWARD -j DOCKER-USER
-A DOCKER-USER -j RETURN
`

const v4Installed = `-P INPUT ACCEPT
-P FORWARD DROP
-P OUTPUT ACCEPT
-N DOCKER
-N DOCKER-USER
-N PODSPAWN-INPUT
-A INPUT -i psp+ -j PODSPAWN-INPUT
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
-A FORWARD -j DOCKER-USER
-A DOCKER-USER -j RETURN
-A PODSPAWN-INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A PODSPAWN-INPUT -j DROP
`

const v6Installed = `-P INPUT ACCEPT
-P FORWARD ACCEPT
-P OUTPUT ACCEPT
-N PODSPAWN-INPUT
-A INPUT -i psp+ -j PODSPAWN-INPUT
-A PODSPAWN-INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A PODSPAWN-INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 135 -j ACCEPT
-A PODSPAWN-INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 136 -j ACCEPT
-A PODSPAWN-INPUT -j DROP
`

func TestBridgeName(t *testing.T) {
	a := hostfw.BridgeName("podspawn-alice-default-net")
	if len(a) != 15 || !strings.HasPrefix(a, "psp") {
		t.Errorf("BridgeName = %q: want psp and 12 hex digits (15 characters, Linux's limit)", a)
	}
	if b := hostfw.BridgeName("podspawn-alice-default-net"); b != a {
		t.Errorf("BridgeName is not deterministic: %q then %q", a, b)
	}
	if b := hostfw.BridgeName("podspawn-bob-default-net"); b == a {
		t.Errorf("two networks share bridge name %q", a)
	}
	// sha256("podspawn-alice-default-net"), pinned: a change of scheme
	// would leave existing networks outside the rules.
	if want := "psp329e6ebb7243"; a != want {
		t.Errorf("BridgeName = %q, want %q", a, want)
	}
	for name, want := range map[string]bool{a: true, "psp0123456789ab": true, "psp0123456789a": false, "pspzz23456789ab": false,
		"br-0123456789ab": false, "docker0": false} {
		if got := hostfw.IsSessionBridge(name); got != want {
			t.Errorf("IsSessionBridge(%q) = %v, want %v", name, got, want)
		}
	}
	if diff := cmp.Diff(map[string]string{"com.docker.network.bridge.name": a}, hostfw.NetworkOptions("podspawn-alice-default-net")); diff != "" {
		t.Errorf("NetworkOptions (-want +got):\n%s", diff)
	}
}

func TestRules(t *testing.T) {
	allowed := []hostfw.Port{{"udp", 8080}, {"tcp", 8080}, {"udp", 53}, {"tcp", 8080}}
	if diff := cmp.Diff([]string{"-i", "psp+", "-j", "PODSPAWN-INPUT"}, hostfw.JumpRule()); diff != "" {
		t.Errorf("JumpRule (-want +got):\n%s", diff)
	}
	want4 := [][]string{
		{"-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"},
		{"-p", "udp", "-m", "udp", "--dport", "53", "-j", "ACCEPT"},
		{"-p", "tcp", "-m", "tcp", "--dport", "8080", "-j", "ACCEPT"},
		{"-p", "udp", "-m", "udp", "--dport", "8080", "-j", "ACCEPT"},
		{"-j", "DROP"},
	}
	if diff := cmp.Diff(want4, hostfw.ChainRules(hostfw.IPv4, allowed)); diff != "" {
		t.Errorf("IPv4 rules (-want +got):\n%s", diff)
	}
	want6 := [][]string{
		{"-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"},
		{"-p", "ipv6-icmp", "-m", "icmp6", "--icmpv6-type", "135", "-j", "ACCEPT"},
		{"-p", "ipv6-icmp", "-m", "icmp6", "--icmpv6-type", "136", "-j", "ACCEPT"},
		{"-p", "udp", "-m", "udp", "--dport", "53", "-j", "ACCEPT"},
		{"-p", "tcp", "-m", "tcp", "--dport", "8080", "-j", "ACCEPT"},
		{"-p", "udp", "-m", "udp", "--dport", "8080", "-j", "ACCEPT"},
		{"-j", "DROP"},
	}
	if diff := cmp.Diff(want6, hostfw.ChainRules(hostfw.IPv6, allowed)); diff != "" {
		t.Errorf("IPv6 rules (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([][]string{
		{"-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"},
		{"-j", "DROP"},
	}, hostfw.ChainRules(hostfw.IPv4, nil)); diff != "" {
		t.Errorf("IPv4 rules without allowed ports (-want +got):\n%s", diff)
	}
}

func TestEnsureInstallsOnABareHost(t *testing.T) {
	f := newFake(bare, bare)
	changed, err := firewall(f, true, hostfw.Port{"tcp", 5432}).Ensure(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"IPv4: installed PODSPAWN-INPUT", "IPv6: installed PODSPAWN-INPUT"}, changed); diff != "" {
		t.Errorf("changed (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"iptables -w -S", "ip6tables -w -S", "iptables-restore -w --noflush", "ip6tables-restore -w --noflush"}, f.calls); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
	want := map[string]string{
		"iptables-restore": `*filter
:PODSPAWN-INPUT - [0:0]
-A PODSPAWN-INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A PODSPAWN-INPUT -p tcp -m tcp --dport 5432 -j ACCEPT
-A PODSPAWN-INPUT -j DROP
-I INPUT 1 -i psp+ -j PODSPAWN-INPUT
COMMIT
`,
		"ip6tables-restore": `*filter
:PODSPAWN-INPUT - [0:0]
-A PODSPAWN-INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A PODSPAWN-INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 135 -j ACCEPT
-A PODSPAWN-INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 136 -j ACCEPT
-A PODSPAWN-INPUT -p tcp -m tcp --dport 5432 -j ACCEPT
-A PODSPAWN-INPUT -j DROP
-I INPUT 1 -i psp+ -j PODSPAWN-INPUT
COMMIT
`,
	}
	if diff := cmp.Diff(want, f.stdin); diff != "" {
		t.Errorf("restore input (-want +got):\n%s", diff)
	}
}

// The common case, on every network creation and pass: one read per
// family and no write.
func TestEnsureInSyncOnlyReads(t *testing.T) {
	f := newFake(v4Installed, v6Installed)
	fw := firewall(f, true)
	changed, err := fw.Ensure(context.Background())
	if err != nil || changed != nil {
		t.Fatalf("Ensure = %v, %v; want nothing changed", changed, err)
	}
	if diff := cmp.Diff([]string{"iptables -w -S", "ip6tables -w -S"}, f.calls); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
	s, err := fw.Check(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if p := s.Problems(); len(p) != 0 {
		t.Errorf("Problems = %q, want none", p)
	}
}

// A changed allowed_host_ports refills the chain; a jump that is not first
// (another tool inserted before it) is moved back to the top; both in the
// same transaction.
func TestEnsureRepairs(t *testing.T) {
	v4 := strings.Replace(v4Installed, "-A INPUT -i psp+ -j PODSPAWN-INPUT\n-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n",
		"-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n-A INPUT -i psp+ -j PODSPAWN-INPUT\n", 1)
	f := newFake(v4, v6Installed)
	fw := firewall(f, true, hostfw.Port{"udp", 53})
	s, err := fw.Check(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	wantProblems := []string{
		"IPv4: PODSPAWN-INPUT does not hold the configured rules (2 rules, want 3)",
		"IPv4: INPUT's jump to PODSPAWN-INPUT is its rule 2, not the first: the rules before it may accept session traffic",
		"IPv6: PODSPAWN-INPUT does not hold the configured rules (4 rules, want 5)",
	}
	if diff := cmp.Diff(wantProblems, s.Problems()); diff != "" {
		t.Errorf("Problems (-want +got):\n%s", diff)
	}
	f.calls = nil
	changed, err := fw.Ensure(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"IPv4: updated PODSPAWN-INPUT", "IPv6: updated PODSPAWN-INPUT"}, changed); diff != "" {
		t.Errorf("changed (-want +got):\n%s", diff)
	}
	want4 := `*filter
:PODSPAWN-INPUT - [0:0]
-A PODSPAWN-INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A PODSPAWN-INPUT -p udp -m udp --dport 53 -j ACCEPT
-A PODSPAWN-INPUT -j DROP
-D INPUT -i psp+ -j PODSPAWN-INPUT
-I INPUT 1 -i psp+ -j PODSPAWN-INPUT
COMMIT
`
	if diff := cmp.Diff(want4, f.stdin["iptables-restore"]); diff != "" {
		t.Errorf("IPv4 restore input (-want +got):\n%s", diff)
	}
}

func TestProblems(t *testing.T) {
	twice := strings.Replace(v4Installed, "-A INPUT -p tcp", "-A INPUT -i psp+ -j PODSPAWN-INPUT\n-A INPUT -p tcp", 1)
	other := strings.Replace(v4Installed, "-A INPUT -i psp+ -j PODSPAWN-INPUT", "-A INPUT -j PODSPAWN-INPUT", 1)
	for _, c := range []struct {
		name  string
		v4    string
		block bool
		want  []string
	}{
		{"bare", bare, true, []string{"IPv4: chain PODSPAWN-INPUT is missing", "IPv4: INPUT does not send session traffic (-i psp+) to PODSPAWN-INPUT"}},
		{"two jumps", twice, true, []string{"IPv4: INPUT jumps to PODSPAWN-INPUT 2 times"}},
		{"other jump", other, true, []string{`IPv4: INPUT's jump to PODSPAWN-INPUT is "-A INPUT -j PODSPAWN-INPUT", want "-A INPUT -i psp+ -j PODSPAWN-INPUT"`}},
		{"off and installed", v4Installed, false, []string{"IPv4: PODSPAWN-INPUT is still installed"}},
		{"off and bare", bare, false, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			fw := &hostfw.Firewall{Runner: newFake(c.v4, ""), Block: c.block, Families: []hostfw.Family{hostfw.IPv4}}
			s, err := fw.Check(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(c.want, s.Problems()); diff != "" {
				t.Errorf("Problems (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEnsureRemovesWhenOff(t *testing.T) {
	f := newFake(v4Installed, bare)
	changed, err := firewall(f, false).Ensure(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"IPv4: removed PODSPAWN-INPUT"}, changed); diff != "" {
		t.Errorf("changed (-want +got):\n%s", diff)
	}
	want := map[string]string{"iptables-restore": "*filter\n-D INPUT -i psp+ -j PODSPAWN-INPUT\n-F PODSPAWN-INPUT\n-X PODSPAWN-INPUT\nCOMMIT\n"}
	if diff := cmp.Diff(want, f.stdin); diff != "" {
		t.Errorf("restore input (-want +got):\n%s", diff)
	}

	// Nothing to remove: nothing written.
	f = newFake(bare, bare)
	if changed, err := firewall(f, false).Ensure(context.Background()); err != nil || changed != nil {
		t.Fatalf("Ensure = %v, %v; want nothing changed", changed, err)
	}
	if diff := cmp.Diff([]string{"iptables -w -S", "ip6tables -w -S"}, f.calls); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
}

// A rule podspawn did not write that jumps to the chain keeps it from
// being deleted; podspawn says so rather than touching that rule.
func TestEnsureRefusesToRemoveAReferencedChain(t *testing.T) {
	f := newFake(v4Installed+"-A FORWARD -i eth1 -j PODSPAWN-INPUT\n", bare)
	_, err := firewall(f, false).Ensure(context.Background())
	want := "IPv4: cannot remove PODSPAWN-INPUT: rules podspawn did not write jump to it (-A FORWARD -i eth1 -j PODSPAWN-INPUT); delete them first"
	if err == nil || err.Error() != want {
		t.Fatalf("Ensure error = %v, want %q", err, want)
	}
	if len(f.stdin) != 0 {
		t.Errorf("wrote %v", f.stdin)
	}
}

func TestEnsureReportsTheTool(t *testing.T) {
	f := newFake(bare, bare)
	f.fail["iptables"] = fmt.Errorf("iptables -w -S: exit status 4: Permission denied (you must be root)")
	_, err := firewall(f, true).Ensure(context.Background())
	if err == nil || err.Error() != "reading the IPv4 firewall: iptables -w -S: exit status 4: Permission denied (you must be root)" {
		t.Errorf("error = %v", err)
	}
	f = newFake(bare, bare)
	f.fail["ip6tables-restore"] = errors.New("ip6tables-restore -w --noflush: exit status 1: line 3 failed")
	changed, err := firewall(f, true).Ensure(context.Background())
	if err == nil || err.Error() != "writing the IPv6 host access rules: ip6tables-restore -w --noflush: exit status 1: line 3 failed" {
		t.Errorf("error = %v", err)
	}
	if diff := cmp.Diff([]string{"IPv4: installed PODSPAWN-INPUT"}, changed); diff != "" {
		t.Errorf("changed before the failure (-want +got):\n%s", diff)
	}
}

func TestMissingTool(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := hostfw.ExecRunner{}.Run(context.Background(), nil, "podspawn-no-such-iptables")
	if !hostfw.IsNotInstalled(err) || !strings.Contains(err.Error(), "apt-get install iptables") {
		t.Errorf("error = %v, want one that says how to install iptables", err)
	}
}
