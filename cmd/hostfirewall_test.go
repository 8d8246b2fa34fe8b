package main

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/actions/hostfw"
	"github.com/podspawn/podspawn/desired/config"
)

// fakeHostFirewall stands in for the host's iptables in every test of
// this package: no unit test may change the host's firewall.
type fakeHostFirewall struct {
	mu      sync.Mutex
	cfgs    []config.Security // the config of each Ensure call
	changed []string
	err     error
	state   hostfw.State
}

var testFirewall = &fakeHostFirewall{}

func TestMain(m *testing.M) {
	newHostFirewall = func(cfg config.Config) hostFirewall {
		return &boundFirewall{f: testFirewall, cfg: cfg.Security}
	}
	os.Exit(m.Run())
}

type boundFirewall struct {
	f   *fakeHostFirewall
	cfg config.Security
}

func (b *boundFirewall) Ensure(context.Context) ([]string, error) {
	b.f.mu.Lock()
	defer b.f.mu.Unlock()
	b.f.cfgs = append(b.f.cfgs, b.cfg)
	return b.f.changed, b.f.err
}

func (b *boundFirewall) Check(context.Context) (hostfw.State, error) {
	b.f.mu.Lock()
	defer b.f.mu.Unlock()
	return b.f.state, b.f.err
}

// useFirewall resets the fake for one test.
func useFirewall(t *testing.T, changed []string, err error) *fakeHostFirewall {
	t.Helper()
	f := testFirewall
	f.mu.Lock()
	f.cfgs, f.changed, f.err = nil, changed, err
	f.mu.Unlock()
	t.Cleanup(func() {
		f.mu.Lock()
		f.cfgs, f.changed, f.err = nil, nil, nil
		f.mu.Unlock()
	})
	return f
}

func (f *fakeHostFirewall) calls() []config.Security {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]config.Security(nil), f.cfgs...)
}

// A cleanup pass brings the rules in line with the config and reports
// what it changed with its actions (stdout, and -o json); a dry run does
// not touch them.
func TestCleanupEnsuresHostFirewall(t *testing.T) {
	e := newAdminEnv(t)
	fw := useFirewall(t, []string{"IPv4: installed PODSPAWN-INPUT"}, nil)
	if err := os.WriteFile(e.cfgPath, append(must(os.ReadFile(e.cfgPath)), "security:\n  allowed_host_ports: [8080, 53/udp]\n"...), 0o644); err != nil {
		t.Fatal(err)
	}

	out := e.run("cleanup", "--dry-run")
	if len(fw.calls()) != 0 {
		t.Errorf("cleanup --dry-run ensured the host access rules:\n%s", out)
	}

	out = e.run("cleanup")
	calls := fw.calls()
	if len(calls) != 1 {
		t.Fatalf("cleanup ensured the rules %d times, want once:\n%s", len(calls), out)
	}
	want := []config.HostPort{{Protocol: "udp", Port: 53}, {Protocol: "tcp", Port: 8080}, {Protocol: "udp", Port: 8080}}
	if diff := cmp.Diff(want, calls[0].HostPorts); diff != "" || !calls[0].BlockHostAccess {
		t.Errorf("firewall config: block %v, ports (-want +got):\n%s", calls[0].BlockHostAccess, diff)
	}
	want1 := "--- stdout\nchanged host access rules (IPv4: installed PODSPAWN-INPUT)\nCleanup pass complete.\n" +
		"Changed the host access rules; 0 held; 0 failed.\n--- stderr\n--- exit 0\n"
	if !strings.HasSuffix(out, want1) {
		t.Errorf("cleanup output does not end with %q:\n%s", want1, out)
	}

	out = e.run("cleanup", "-o", "json")
	for _, s := range []string{"\"host_access_rules_changed\": [\n    \"IPv4: installed PODSPAWN-INPUT\"\n  ],", "\"host_access_rules\": 1\n"} {
		if !strings.Contains(out, s) {
			t.Errorf("cleanup -o json lacks %q:\n%s", s, out)
		}
	}
}

// A pass whose rules cannot be written still cleans up, then fails.
func TestCleanupReportsHostFirewallFailure(t *testing.T) {
	e := newAdminEnv(t)
	useFirewall(t, nil, errors.New("reading the IPv4 firewall: iptables is not installed"))
	out := e.run("cleanup")
	for _, s := range []string{
		"Cleanup pass complete.\n",
		"Error: host access rules (security.block_host_access): reading the IPv4 firewall: iptables is not installed\n--- exit 1\n",
	} {
		if !strings.Contains(out, s) {
			t.Errorf("cleanup output lacks %q:\n%s", s, out)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
