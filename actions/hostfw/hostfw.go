// Package hostfw keeps session containers away from the host's own
// services. Docker already keeps session networks apart from each other
// (its isolation chains), but a container reaches every service listening
// on the host's 0.0.0.0 through its network's gateway or any other address
// of the host: such traffic is addressed to the host itself, so it goes
// through the filter table's INPUT chain, which Docker leaves open.
//
// podspawn names every session network's bridge interface BridgePrefix
// plus a hash of the network's name (BridgeName), so one iptables pattern,
// "-i psp+", matches every session network and nothing else. INPUT's first
// rule sends what arrives on such a bridge to podspawn's own chain,
// PODSPAWN-INPUT, which accepts replies (ESTABLISHED,RELATED), the ports
// the operator allows and, for IPv6, neighbour discovery, and drops the
// rest. Traffic a session sends elsewhere is forwarded, not delivered to
// the host, and passes untouched: Docker's NAT, its isolation chains and
// DOCKER-USER are never written. (A published port of another container,
// reached through a host address, is rewritten to that container's address
// and forwarded; Docker's isolation already drops it between bridges.)
//
// Every write is one iptables-restore --noflush transaction, so the chain
// is never seen half filled, and nothing is written when the host already
// matches the configuration.
package hostfw

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

const (
	// Chain is podspawn's chain in the filter table.
	Chain = "PODSPAWN-INPUT"
	// BridgePrefix starts the bridge interface name of every session
	// network, and of nothing else podspawn or Docker creates (Docker's
	// own are docker0 and br-<id>).
	BridgePrefix = "psp"
	// BridgeNameOption is the bridge driver's option that names the
	// bridge interface.
	BridgeNameOption = "com.docker.network.bridge.name"
	// DefaultLockPath serialises podspawn's own readers and writers of the
	// rules (spawn, cleanup, the daemon, server-setup) on this host.
	DefaultLockPath = "/run/podspawn-hostfw.lock"
)

// bridgeHashLen keeps names within Linux's 15 characters (IFNAMSIZ - 1).
const bridgeHashLen = 12

// BridgeName is the bridge interface name of the session network called
// network: BridgePrefix and the first 12 hex digits of the name's SHA-256.
// It depends on the name only, so a re-created network gets the same one.
func BridgeName(network string) string {
	sum := sha256.Sum256([]byte(network))
	return BridgePrefix + hex.EncodeToString(sum[:])[:bridgeHashLen]
}

// IsSessionBridge reports whether name has the shape BridgeName gives.
func IsSessionBridge(name string) bool {
	h, ok := strings.CutPrefix(name, BridgePrefix)
	if !ok || len(h) != bridgeHashLen {
		return false
	}
	_, err := hex.DecodeString(h)
	return err == nil
}

// NetworkOptions are the driver options of the session network called
// network.
func NetworkOptions(network string) map[string]string {
	return map[string]string{BridgeNameOption: BridgeName(network)}
}

// Port is a port the operator lets sessions reach on the host.
type Port struct {
	Protocol string // "tcp" or "udp"
	Number   int
}

func (p Port) String() string { return fmt.Sprintf("%d/%s", p.Number, p.Protocol) }

// Family is one IP version's set of tools.
type Family struct {
	Name    string // "IPv4"
	Command string // "iptables"
	Restore string // "iptables-restore"
}

var (
	IPv4 = Family{Name: "IPv4", Command: "iptables", Restore: "iptables-restore"}
	IPv6 = Family{Name: "IPv6", Command: "ip6tables", Restore: "ip6tables-restore"}
)

// DefaultFamilies is IPv4, and IPv6 when the kernel has it.
func DefaultFamilies() []Family {
	if _, err := os.Stat("/proc/sys/net/ipv6"); err == nil {
		return []Family{IPv4, IPv6}
	}
	return []Family{IPv4}
}

// JumpRule is INPUT's rule that sends session traffic to Chain, as the
// arguments after "-A INPUT".
func JumpRule() []string {
	return []string{"-i", BridgePrefix + "+", "-j", Chain}
}

// ChainRules are Chain's rules for family f, each as the arguments after
// "-A PODSPAWN-INPUT", in the form "iptables -S" prints them (so that what
// is installed compares equal to what is wanted).
func ChainRules(f Family, allowed []Port) [][]string {
	rules := [][]string{{"-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"}}
	if f == IPv6 {
		// Neighbour discovery: without it a container on an IPv6 network
		// cannot resolve its gateway, and loses IPv6 altogether.
		for _, t := range []string{"135", "136"} {
			rules = append(rules, []string{"-p", "ipv6-icmp", "-m", "icmp6", "--icmpv6-type", t, "-j", "ACCEPT"})
		}
	}
	for _, p := range SortPorts(allowed) {
		rules = append(rules, []string{"-p", p.Protocol, "-m", p.Protocol, "--dport", strconv.Itoa(p.Number), "-j", "ACCEPT"})
	}
	return append(rules, []string{"-j", "DROP"})
}

// SortPorts returns ports sorted by number then protocol, without
// duplicates.
func SortPorts(ports []Port) []Port {
	out := slices.Clone(ports)
	slices.SortFunc(out, func(a, b Port) int {
		if a.Number != b.Number {
			return a.Number - b.Number
		}
		return strings.Compare(a.Protocol, b.Protocol)
	})
	return slices.Compact(out)
}

// Runner runs a program with stdin and returns its standard output.
type Runner interface {
	Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error)
}

// ErrNotInstalled is returned when the iptables tools are missing.
var ErrNotInstalled = errors.New("not installed")

// Firewall is the host access rules as the configuration wants them.
type Firewall struct {
	Runner Runner
	// Block says the rules must be in place; false, they must not exist.
	Block bool
	// Allowed are the ports sessions may reach on the host.
	Allowed  []Port
	Families []Family
	// LockPath is taken (flock) around every read-and-write; empty: none.
	LockPath string
}

// New is the host's firewall for this configuration: the real iptables
// tools, IPv4 and (when the kernel has it) IPv6, and DefaultLockPath.
func New(block bool, allowed []Port) *Firewall {
	return &Firewall{Runner: ExecRunner{}, Block: block, Allowed: allowed, Families: DefaultFamilies(), LockPath: DefaultLockPath}
}

// FamilyState is what one family's filter table holds of podspawn's.
type FamilyState struct {
	Family Family
	// Chain says Chain exists; Rules are its rules as "-S" prints them.
	Chain bool
	Rules []string
	// Jumps are INPUT's rules that jump to Chain, as printed; JumpAt their
	// positions in INPUT (1 is the first rule).
	Jumps  []string
	JumpAt []int
	// Foreign are rules of other chains that jump to Chain.
	Foreign []string
}

// State is the whole host's, against the configuration.
type State struct {
	Block    bool
	Allowed  []Port
	Families []FamilyState
}

// wantRules renders ChainRules as "-S" lines.
func wantRules(f Family, allowed []Port) []string {
	var out []string
	for _, r := range ChainRules(f, allowed) {
		out = append(out, "-A "+Chain+" "+strings.Join(r, " "))
	}
	return out
}

func wantJump() string { return "-A INPUT " + strings.Join(JumpRule(), " ") }

// Problems says how the host differs from the configuration, one line per
// difference; none means it matches.
func (s State) Problems() []string {
	var out []string
	for _, fs := range s.Families {
		out = append(out, fs.problems(s.Block, s.Allowed)...)
	}
	return out
}

func (fs FamilyState) problems(block bool, allowed []Port) []string {
	name := fs.Family.Name
	if !block {
		if fs.Chain || len(fs.Jumps) > 0 {
			return []string{name + ": " + Chain + " is still installed"}
		}
		return nil
	}
	var out []string
	if !fs.Chain {
		out = append(out, fmt.Sprintf("%s: chain %s is missing", name, Chain))
	} else if !slices.Equal(fs.Rules, wantRules(fs.Family, allowed)) {
		out = append(out, fmt.Sprintf("%s: %s does not hold the configured rules (%d rules, want %d)", name, Chain, len(fs.Rules), len(ChainRules(fs.Family, allowed))))
	}
	switch {
	case len(fs.Jumps) == 0:
		out = append(out, fmt.Sprintf("%s: INPUT does not send session traffic (-i %s+) to %s", name, BridgePrefix, Chain))
	case len(fs.Jumps) > 1:
		out = append(out, fmt.Sprintf("%s: INPUT jumps to %s %d times", name, Chain, len(fs.Jumps)))
	case fs.Jumps[0] != wantJump():
		out = append(out, fmt.Sprintf("%s: INPUT's jump to %s is %q, want %q", name, Chain, fs.Jumps[0], wantJump()))
	case fs.JumpAt[0] != 1:
		out = append(out, fmt.Sprintf("%s: INPUT's jump to %s is its rule %d, not the first: the rules before it may accept session traffic", name, Chain, fs.JumpAt[0]))
	}
	return out
}

// Check reads the host's rules and changes nothing.
func (fw *Firewall) Check(ctx context.Context) (State, error) {
	unlock, err := fw.lock()
	if err != nil {
		return State{}, err
	}
	defer unlock()
	return fw.read(ctx)
}

func (fw *Firewall) read(ctx context.Context) (State, error) {
	s := State{Block: fw.Block, Allowed: SortPorts(fw.Allowed)}
	for _, f := range fw.Families {
		out, err := fw.Runner.Run(ctx, nil, f.Command, "-w", "-S")
		if err != nil {
			return State{}, fmt.Errorf("reading the %s firewall: %w", f.Name, err)
		}
		s.Families = append(s.Families, parse(f, string(out)))
	}
	return s, nil
}

// parse reads "iptables -S" output (the filter table).
func parse(f Family, out string) FamilyState {
	fs := FamilyState{Family: f}
	input := 0
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		switch {
		case fields[0] == "-N" && fields[1] == Chain:
			fs.Chain = true
		case fields[0] != "-A":
		case fields[1] == Chain:
			fs.Rules = append(fs.Rules, line)
		case fields[1] == "INPUT":
			input++
			if jumpsToChain(fields) {
				fs.Jumps = append(fs.Jumps, line)
				fs.JumpAt = append(fs.JumpAt, input)
			}
		case jumpsToChain(fields):
			fs.Foreign = append(fs.Foreign, line)
		}
	}
	return fs
}

func jumpsToChain(fields []string) bool {
	for i := 0; i+1 < len(fields); i++ {
		if (fields[i] == "-j" || fields[i] == "-g") && fields[i+1] == Chain {
			return true
		}
	}
	return false
}

// Ensure makes the host match the configuration. With Block, Chain holds
// exactly ChainRules and INPUT's first rule is JumpRule; without, neither
// exists. It reads first and writes only the families that differ, each in
// one transaction, and says what it changed (nil: nothing).
func (fw *Firewall) Ensure(ctx context.Context) ([]string, error) {
	unlock, err := fw.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	s, err := fw.read(ctx)
	if err != nil {
		return nil, err
	}
	var changed []string
	for _, fs := range s.Families {
		if len(fs.problems(s.Block, s.Allowed)) == 0 {
			continue
		}
		var script, what string
		if s.Block {
			script, what = installScript(fs, s.Allowed), "installed "+Chain
			if fs.Chain {
				what = "updated " + Chain
			}
		} else {
			if len(fs.Foreign) > 0 {
				return changed, fmt.Errorf("%s: cannot remove %s: rules podspawn did not write jump to it (%s); delete them first",
					fs.Family.Name, Chain, strings.Join(fs.Foreign, "; "))
			}
			script, what = removeScript(fs), "removed "+Chain
		}
		if _, err := fw.Runner.Run(ctx, []byte(script), fs.Family.Restore, "-w", "--noflush"); err != nil {
			return changed, fmt.Errorf("writing the %s host access rules: %w", fs.Family.Name, err)
		}
		changed = append(changed, fs.Family.Name+": "+what)
	}
	return changed, nil
}

// installScript fills Chain (declaring it flushes it, or creates it) and
// puts the one jump first in INPUT, in one transaction.
func installScript(fs FamilyState, allowed []Port) string {
	var b strings.Builder
	b.WriteString("*filter\n:" + Chain + " - [0:0]\n")
	for _, r := range wantRules(fs.Family, allowed) {
		b.WriteString(r + "\n")
	}
	for _, j := range fs.Jumps {
		b.WriteString("-D" + strings.TrimPrefix(j, "-A") + "\n")
	}
	b.WriteString("-I INPUT 1 " + strings.Join(JumpRule(), " ") + "\n")
	b.WriteString("COMMIT\n")
	return b.String()
}

// removeScript deletes INPUT's jumps to Chain, then Chain.
func removeScript(fs FamilyState) string {
	var b strings.Builder
	b.WriteString("*filter\n")
	for _, j := range fs.Jumps {
		b.WriteString("-D" + strings.TrimPrefix(j, "-A") + "\n")
	}
	if fs.Chain {
		b.WriteString("-F " + Chain + "\n-X " + Chain + "\n")
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// lock takes LockPath, so that two podspawn processes never both find the
// jump missing and both insert it.
func (fw *Firewall) lock() (func(), error) {
	if fw.LockPath == "" {
		return func() {}, nil
	}
	f, err := os.OpenFile(fw.LockPath, os.O_CREATE|os.O_RDWR|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("host access rules: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("host access rules: locking %s: %w", fw.LockPath, err)
	}
	return func() { f.Close() }, nil
}
