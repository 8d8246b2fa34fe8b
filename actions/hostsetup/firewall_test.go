package hostsetup

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/actions/hostfw"
)

// fwTables plays iptables for the step: "-S" prints the table, a restore
// records its input and installs the wanted table.
type fwTables struct {
	table, after string
	restored     []string
	err          error
}

func (f *fwTables) Run(_ context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	if f.err != nil {
		return nil, f.err
	}
	if strings.HasSuffix(name, "-restore") {
		f.restored = append(f.restored, string(stdin))
		f.table = f.after
		return nil, nil
	}
	return []byte(f.table), nil
}

const fwInstalled = `-N PODSPAWN-INPUT
-A INPUT -i psp+ -j PODSPAWN-INPUT
-A PODSPAWN-INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A PODSPAWN-INPUT -j DROP
`

func TestEnsureHostFirewall(t *testing.T) {
	ctx := context.Background()
	fw := func(f *fwTables, block bool) *hostfw.Firewall {
		return &hostfw.Firewall{Runner: f, Block: block, Families: []hostfw.Family{hostfw.IPv4}}
	}

	// Dry run: reads, says what it would do, writes nothing.
	f := &fwTables{table: "-P INPUT ACCEPT\n", after: fwInstalled}
	c, err := EnsureHostFirewall(ctx, fw(f, true), true)
	if err != nil {
		t.Fatal(err)
	}
	want := Change{What: "host access rules (PODSPAWN-INPUT)", Done: "changed",
		Would: "install the host access rules (IPv4: chain PODSPAWN-INPUT is missing; IPv4: INPUT does not send session traffic (-i psp+) to PODSPAWN-INPUT)"}
	if diff := cmp.Diff(want, c); diff != "" || len(f.restored) != 0 {
		t.Errorf("dry run (-want +got):\n%s\nrestored: %q", diff, f.restored)
	}

	// Real run: installs; the second run finds nothing to do.
	c, err = EnsureHostFirewall(ctx, fw(f, true), false)
	if err != nil {
		t.Fatal(err)
	}
	want.Done = "IPv4: installed PODSPAWN-INPUT"
	if diff := cmp.Diff(want, c); diff != "" || len(f.restored) != 1 {
		t.Errorf("run (-want +got):\n%s\nrestored: %q", diff, f.restored)
	}
	c, err = EnsureHostFirewall(ctx, fw(f, true), false)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(Change{What: "host access rules (PODSPAWN-INPUT)"}, c); diff != "" || len(f.restored) != 1 {
		t.Errorf("second run (-want +got):\n%s\nrestored: %q", diff, f.restored)
	}

	// Off: removes them, with a note.
	f.after = "-P INPUT ACCEPT\n"
	c, err = EnsureHostFirewall(ctx, fw(f, false), false)
	if err != nil {
		t.Fatal(err)
	}
	want = Change{What: "host access rules (PODSPAWN-INPUT)", Done: "IPv4: removed PODSPAWN-INPUT",
		Would: "remove PODSPAWN-INPUT and INPUT's jump to it (security.block_host_access is false)",
		Notes: []string{"security.block_host_access is false: session containers can reach every service listening on the host's addresses"}}
	if diff := cmp.Diff(want, c); diff != "" {
		t.Errorf("off (-want +got):\n%s", diff)
	}

	// No iptables: an error that says what to do.
	_, err = EnsureHostFirewall(ctx, fw(&fwTables{err: errors.New("iptables is not installed (Debian: apt-get install iptables)")}, true), false)
	if err == nil || err.Error() != "host access rules (security.block_host_access): reading the IPv4 firewall: iptables is not installed (Debian: apt-get install iptables)" {
		t.Errorf("error = %v", err)
	}
}
