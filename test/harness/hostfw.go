package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/podspawn/podspawn/actions/hostfw"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/observed/proc"
)

// podspawn installs its host access rules (the PODSPAWN-INPUT chain and
// INPUT's jump to it) whenever it creates a session, cleans up or runs
// server-setup, and the rules outlive the process, as they should on a
// server. The tests must leave the host's firewall as they found it:
// every env holds the rules while it runs; the first holder on the host
// records them and the last one puts them back. Holders are counted across
// test processes in keepState (several packages' test binaries, or another
// engineer's run, may overlap), and a holder that died without putting
// them back (a killed test) is dropped: the next one still restores what
// the first holder recorded. hack/verify-host-clean.sh checks the result.
const (
	keepState = "/run/podspawn-test-hostfw.json"
	keepLock  = "/run/podspawn-test-hostfw.lock"
)

// keepFile is keepState's content.
type keepFile struct {
	Saved   []hostfw.FamilyState  `json:"saved"`
	Holders []observed.ProcessRef `json:"holders"`
}

// keptFirewall counts this process's holders, so that the host-wide count
// changes once per process.
var keptFirewall struct {
	mu    sync.Mutex
	users int
}

// KeepHostFirewall holds podspawn's host access rules for the test: when
// the last holder on the host ends, they are put back as the first one
// found them.
func KeepHostFirewall(t testing.TB) {
	t.Helper()
	k := &keptFirewall
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.users == 0 {
		if err := holdFirewall(); err != nil {
			t.Fatalf("recording the host access rules (run hack/ci-setup.sh, which installs iptables): %v", err)
		}
	}
	k.users++
	t.Cleanup(func() {
		k.mu.Lock()
		defer k.mu.Unlock()
		k.users--
		if k.users > 0 {
			return
		}
		if err := releaseFirewall(); err != nil {
			t.Errorf("restoring the host access rules as they were before the tests: %v", err)
		}
	})
}

// withKeepFile runs fn on keepState under keepLock, with dead holders
// dropped, and writes back what fn leaves (nil: removes the file).
func withKeepFile(fn func(kf *keepFile) (*keepFile, error)) error {
	lf, err := os.OpenFile(keepLock, os.O_CREATE|os.O_RDWR|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	defer lf.Close()
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX); err != nil {
		return err
	}
	var kf *keepFile
	data, err := os.ReadFile(keepState)
	switch {
	case err == nil:
		kf = &keepFile{}
		if err := json.Unmarshal(data, kf); err != nil {
			return fmt.Errorf("%s: %w (remove it once no test runs)", keepState, err)
		}
		alive := proc.Alive(kf.Holders)
		kf.Holders = slices.DeleteFunc(kf.Holders, func(r observed.ProcessRef) bool { return !alive[r] })
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	kf, err = fn(kf)
	if err != nil {
		return err
	}
	if kf == nil {
		return os.Remove(keepState)
	}
	out, err := json.Marshal(kf)
	if err != nil {
		return err
	}
	return os.WriteFile(keepState, out, 0o600)
}

func holdFirewall() error {
	self, err := proc.Self()
	if err != nil {
		return err
	}
	return withKeepFile(func(kf *keepFile) (*keepFile, error) {
		if kf == nil {
			// The first holder: record the host as it is. (A file left by
			// holders that all died keeps their record.)
			saved, err := readFirewall()
			if err != nil {
				return nil, err
			}
			kf = &keepFile{Saved: saved}
		}
		kf.Holders = append(kf.Holders, self)
		return kf, nil
	})
}

func releaseFirewall() error {
	self, err := proc.Self()
	if err != nil {
		return err
	}
	return withKeepFile(func(kf *keepFile) (*keepFile, error) {
		if kf == nil {
			return nil, fmt.Errorf("%s is gone: nothing recorded what to restore", keepState)
		}
		kf.Holders = slices.DeleteFunc(kf.Holders, func(r observed.ProcessRef) bool { return r == self })
		if len(kf.Holders) > 0 {
			return kf, nil
		}
		if err := restoreFirewall(kf.Saved); err != nil {
			return kf, err
		}
		return nil, nil
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
