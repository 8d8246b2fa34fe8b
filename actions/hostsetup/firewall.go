package hostsetup

import (
	"context"
	"fmt"
	"strings"

	"github.com/podspawn/podspawn/actions/hostfw"
)

// HostFirewall is the host access rules (hostfw.Firewall).
type HostFirewall interface {
	Check(ctx context.Context) (hostfw.State, error)
	Ensure(ctx context.Context) ([]string, error)
}

// EnsureHostFirewall installs the host access rules, or removes them when
// security.block_host_access is off; a dry run only reads them.
func EnsureHostFirewall(ctx context.Context, fw HostFirewall, dryRun bool) (Change, error) {
	c := Change{What: "host access rules (" + hostfw.Chain + ")"}
	wrap := func(err error) error {
		return fmt.Errorf("host access rules (security.block_host_access): %w", err)
	}
	st, err := fw.Check(ctx)
	if err != nil {
		return c, wrap(err)
	}
	if !st.Block {
		c.Notes = []string{"security.block_host_access is false: session containers can reach every service listening on the host's addresses"}
	}
	problems := st.Problems()
	if len(problems) == 0 {
		return c, nil
	}
	if st.Block {
		c.Would = "install the host access rules (" + strings.Join(problems, "; ") + ")"
	} else {
		c.Would = "remove " + hostfw.Chain + " and INPUT's jump to it (security.block_host_access is false)"
	}
	c.Done = "changed"
	if dryRun {
		return c, nil
	}
	changed, err := fw.Ensure(ctx)
	if err != nil {
		return c, wrap(err)
	}
	if len(changed) > 0 {
		c.Done = strings.Join(changed, "; ")
	}
	return c, nil
}
