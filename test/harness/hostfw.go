package harness

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podspawn/podspawn/actions/hostfw"
)

// podspawn installs its host access rules (the PODSPAWN-INPUT chain and
// INPUT's jump to it) whenever it creates a session, cleans up or runs
// server-setup, and the rules outlive the process, as they should on a
// server. The tests must leave the host's firewall as they found it, so
// every env records the rules when the first env of the process starts and
// puts them back when the last one ends. hack/verify-host-clean.sh checks.
var keptFirewall struct {
	mu    sync.Mutex
	users int
	saved []hostfw.FamilyState
}

// KeepHostFirewall records podspawn's host access rules now and restores
// them when the test ends (nested and overlapping calls share the first
// record and restore after the last).
func KeepHostFirewall(t testing.TB) {
	t.Helper()
	k := &keptFirewall
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.users == 0 {
		s, err := readFirewall()
		if err != nil {
			t.Fatalf("recording the host access rules (run hack/ci-setup.sh, which installs iptables): %v", err)
		}
		k.saved = s
	}
	k.users++
	t.Cleanup(func() {
		k.mu.Lock()
		defer k.mu.Unlock()
		k.users--
		if k.users > 0 {
			return
		}
		if err := restoreFirewall(k.saved); err != nil {
			t.Errorf("restoring the host access rules as they were before the test: %v", err)
		}
	})
}

// HostFirewallState is podspawn's rules as they are now, one line per
// rule and family (for before/after comparisons).
func HostFirewallState(t testing.TB) []string {
	t.Helper()
	s, err := readFirewall()
	if err != nil {
		t.Fatal(err)
	}
	return renderFirewall(s)
}

func renderFirewall(s []hostfw.FamilyState) []string {
	out := []string{}
	for _, fs := range s {
		if fs.Chain {
			out = append(out, fs.Family.Name+" -N "+hostfw.Chain)
		}
		for _, r := range fs.Rules {
			out = append(out, fs.Family.Name+" "+r)
		}
		for i, j := range fs.Jumps {
			out = append(out, fmt.Sprintf("%s INPUT rule %d: %s", fs.Family.Name, fs.JumpAt[i], j))
		}
		for _, r := range fs.Foreign {
			out = append(out, fs.Family.Name+" "+r)
		}
	}
	return out
}

func testFirewall(block bool) *hostfw.Firewall { return hostfw.New(block, nil) }

// RemoveHostFirewall removes podspawn's host access rules, so that a test
// starts from a host without them; call KeepHostFirewall first.
func RemoveHostFirewall(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := testFirewall(false).Ensure(ctx); err != nil {
		t.Fatalf("removing the host access rules: %v", err)
	}
}

// InstallHostFirewall installs podspawn's host access rules as the
// default config wants them; call KeepHostFirewall first.
func InstallHostFirewall(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := testFirewall(true).Ensure(ctx); err != nil {
		t.Fatalf("installing the host access rules: %v", err)
	}
}

// HostFirewallInstalled is what podspawn reports when it installs the
// rules on a host without them ("IPv4: installed PODSPAWN-INPUT", ...).
func HostFirewallInstalled() []string {
	var out []string
	for _, f := range hostfw.DefaultFamilies() {
		out = append(out, f.Name+": installed "+hostfw.Chain)
	}
	return out
}

func readFirewall() ([]hostfw.FamilyState, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := testFirewall(true).Check(ctx)
	return s.Families, err
}

// restoreFirewall puts back the saved chain and jumps: none, or the saved
// rules and each jump at its saved position in INPUT.
func restoreFirewall(saved []hostfw.FamilyState) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	now, err := readFirewall()
	if err != nil {
		return err
	}
	if slices.Equal(renderFirewall(now), renderFirewall(saved)) {
		return nil
	}
	for i, fs := range saved {
		cur := now[i]
		if slices.Equal(renderFirewall([]hostfw.FamilyState{cur}), renderFirewall([]hostfw.FamilyState{fs})) {
			continue
		}
		if !fs.Chain {
			fw := testFirewall(false)
			fw.Families = []hostfw.Family{fs.Family}
			if _, err := fw.Ensure(ctx); err != nil {
				return err
			}
			continue
		}
		var b strings.Builder
		b.WriteString("*filter\n:" + hostfw.Chain + " - [0:0]\n")
		for _, r := range fs.Rules {
			b.WriteString(r + "\n")
		}
		for _, j := range cur.Jumps {
			b.WriteString("-D" + strings.TrimPrefix(j, "-A") + "\n")
		}
		for k, j := range fs.Jumps {
			b.WriteString("-I INPUT " + strconv.Itoa(fs.JumpAt[k]) + strings.TrimPrefix(j, "-A INPUT") + "\n")
		}
		b.WriteString("COMMIT\n")
		if _, err := (hostfw.ExecRunner{}).Run(ctx, []byte(b.String()), fs.Family.Restore, "-w", "--noflush"); err != nil {
			return err
		}
	}
	after, err := readFirewall()
	if err != nil {
		return err
	}
	if !slices.Equal(renderFirewall(after), renderFirewall(saved)) {
		return fmt.Errorf("after restoring: %q, want %q", renderFirewall(after), renderFirewall(saved))
	}
	return nil
}
