package ssh

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/actions/audit"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/test/harness"
)

// auditRecord is an audit line with the fields whose values vary from run
// to run (time, session, lease, client, duration) checked and then blanked.
type auditRecord struct {
	Event, User, Project, Actor, Reason, Container, Kind, Command, Outcome string
	Args                                                                   []string
	ExitCode                                                               *int
	// Session and Lease are replaced by the order of their first appearance.
	Session string
	Lease   int
}

var clientRE = regexp.MustCompile(`^127\.0\.0\.1:[0-9]+$`)

// readAudit parses the audit log, checks the fields that vary and returns
// the records with those fields normalised.
func readAudit(t *testing.T, paths ...string) []auditRecord {
	t.Helper()
	var data []byte
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		data = append(data, b...)
	}
	sessions, leases := map[string]string{}, map[int64]int{}
	var out []auditRecord
	for i, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		var raw map[string]any
		if err := json.Unmarshal([]byte(line), &raw); err != nil {
			t.Fatalf("line %d is not JSON: %v\n%s", i+1, err, line)
		}
		for _, f := range []string{"time", "event", "user", "project", "session"} {
			if _, ok := raw[f]; !ok {
				t.Errorf("line %d lacks %q: %s", i+1, f, line)
			}
		}
		var e audit.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("line %d: %v", i+1, err)
		}
		if ts, _ := raw["time"].(string); !strings.HasSuffix(ts, "Z") || e.Time.IsZero() {
			t.Errorf("line %d: time %q is not RFC 3339 UTC", i+1, raw["time"])
		}
		r := auditRecord{Event: e.Event, User: e.User, Project: e.Project, Actor: e.Actor, Reason: e.Reason, Container: e.Container,
			Kind: e.Kind, Command: e.Command, Outcome: e.Outcome, Args: e.Args, ExitCode: e.ExitCode}
		if e.Session != "" {
			if _, ok := sessions[e.Session]; !ok {
				sessions[e.Session] = fmt.Sprintf("s%d", len(sessions)+1)
			}
			r.Session = sessions[e.Session]
		}
		if strings.HasPrefix(e.Event, "session.connect") || e.Event == audit.SessionDisconnect {
			if e.Lease <= 0 || !clientRE.MatchString(e.Client) {
				t.Errorf("line %d: lease %d, client %q; want a lease id and 127.0.0.1:<port>", i+1, e.Lease, e.Client)
			}
			if _, ok := leases[e.Lease]; !ok {
				leases[e.Lease] = len(leases) + 1
			}
			r.Lease = leases[e.Lease]
		}
		if e.Event == audit.SessionDisconnect && (e.DurationMS == nil || *e.DurationMS < 0) {
			t.Errorf("line %d: disconnect without a duration: %s", i+1, line)
		}
		out = append(out, r)
	}
	return out
}

// TestAuditScriptedSession: add-user, a command that exits 3, its
// disconnect, a second user's session, the daemon expiring the first
// session's grace period and an admin stopping the second produce exactly
// these audit records, in this order.
func TestAuditScriptedSession(t *testing.T) {
	dir := t.TempDir()
	auditPath := filepath.Join(dir, "audit.log")
	s := newServer(t, serverOptions{Users: []string{"ssa", "ssb"}, Log: "  audit_log: " + auditPath + "\n",
		Options: harness.Options{Session: "  grace_period: 1h\n  max_lifetime: 8h\n  mode: grace-period\n"}})
	alice, bob := s.user("ssa"), s.user("ssb")

	// A tab in the command is recorded escaped.
	if r := s.runSSH(alice, nil, "", "echo hi;\texit 3"); r.Code != 3 {
		t.Fatalf("alice's command: exit %d, want 3\nstderr: %s", r.Code, r.Stderr)
	}
	s.mustSSH(bob, "true")

	d := startScopedDaemon(t, s)
	// logrotate: the file is renamed and the daemon told with SIGHUP; it
	// lets go of the old file and opens a new one at the path.
	rotated := auditPath + ".1"
	if err := os.Rename(auditPath, rotated); err != nil {
		t.Fatal(err)
	}
	d.cmd.Process.Signal(syscall.SIGHUP)
	s.waitFor("the daemon to reopen the audit log after SIGHUP", 30*time.Second, func() bool {
		open := openFiles(d.cmd.Process.Pid)
		return open[auditPath] && !open[rotated]
	})
	// End alice's grace period; updated_at tells the daemon's watcher the row changed.
	s.exec(`UPDATE sessions SET grace_expiry = ?, updated_at = ? WHERE user = ?`, time.Now().Add(-time.Second).UnixNano(), time.Now().UnixNano(), alice.Name)
	s.waitFor("the daemon to tear down alice's expired session", 60*time.Second, func() bool {
		data, _ := os.ReadFile(auditPath)
		return bytes.Contains(data, []byte(`"event":"session.destroy","user":"`+alice.Name+`"`))
	})
	if !d.alive() {
		t.Fatal("the daemon exited after SIGHUP")
	}
	d.stop(t)

	stop := s.Env.RunEnv([]string{"SUDO_USER=auditor"}, "", "stop", bob.Name)
	if stop.Code != 0 {
		t.Fatalf("podspawn stop: exit %d\n%s%s", stop.Code, stop.Stdout, stop.Stderr)
	}

	info, err := os.Stat(auditPath)
	if err != nil {
		t.Fatal(err)
	}
	if st := info.Sys().(*syscall.Stat_t); info.Mode().Perm() != 0o600 || st.Uid != 0 {
		t.Errorf("audit log mode %v uid %d, want 0600 owned by root", info.Mode().Perm(), st.Uid)
	}

	admin := audit.AdminActor(os.Getenv("SUDO_USER"), os.Getuid())
	code := func(n int) *int { return &n }
	ca, cb := desired.ContainerName(desired.SessionKey{User: alice.Name}), desired.ContainerName(desired.SessionKey{User: bob.Name})
	want := []auditRecord{
		{Event: "admin.add-user", User: alice.Name, Actor: admin, Outcome: "success"},
		{Event: "admin.add-user", User: bob.Name, Actor: admin, Outcome: "success"},
		{Event: "session.create", User: alice.Name, Session: "s1", Actor: alice.Name, Reason: "session-creating", Container: ca},
		{Event: "session.connect", User: alice.Name, Session: "s1", Actor: alice.Name, Container: ca, Lease: 1, Kind: "exec", Command: `echo hi;\x09exit 3`},
		{Event: "session.disconnect", User: alice.Name, Session: "s1", Actor: alice.Name, Container: ca, Lease: 1, Kind: "exec", Command: `echo hi;\x09exit 3`, ExitCode: code(3)},
		{Event: "session.create", User: bob.Name, Session: "s2", Actor: bob.Name, Reason: "session-creating", Container: cb},
		{Event: "session.connect", User: bob.Name, Session: "s2", Actor: bob.Name, Container: cb, Lease: 2, Kind: "exec", Command: "true"},
		{Event: "session.disconnect", User: bob.Name, Session: "s2", Actor: bob.Name, Container: cb, Lease: 2, Kind: "exec", Command: "true", ExitCode: code(0)},
		{Event: "session.destroy", User: alice.Name, Session: "s1", Actor: "controller", Reason: "grace-expired", Container: ca},
		{Event: "session.destroy", User: bob.Name, Session: "s2", Actor: "auditor", Reason: "user-requested", Container: cb},
		{Event: "admin.stop", User: bob.Name, Actor: "auditor", Outcome: "success", Args: []string{"--config", s.Env.ConfigPath, "stop", bob.Name}},
	}
	got := readAudit(t, rotated, auditPath)
	// add-user's arguments carry a generated key; check their shape only.
	for i := range got {
		if got[i].Event == "admin.add-user" {
			if a := got[i].Args; len(a) != 6 || a[2] != "add-user" || a[3] != got[i].User || a[4] != "--key" {
				t.Errorf("add-user args = %q", a)
			}
			got[i].Args = nil
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("audit records (-want +got):\n%s", diff)
	}
}

// scopedDaemon is `podspawn cleanup --daemon` behind a scope proxy, so it
// sees and removes only this test's objects on the shared Docker daemon.
type scopedDaemon struct {
	cmd    *exec.Cmd
	out    *lockedBuffer
	exited chan struct{}
	once   sync.Once
}

func startScopedDaemon(t *testing.T, s *server) *scopedDaemon {
	t.Helper()
	proxy := harness.NewScopeProxy(t)
	proxy.AddInstance(s.Env.InstanceID())
	cmd := exec.Command(s.Env.Bin, "--config", s.Env.ConfigPath, "-v", "cleanup", "--daemon", "--interval", "1h")
	cmd.Env = append(os.Environ(), "DOCKER_HOST="+proxy.Host())
	d := &scopedDaemon{cmd: cmd, out: &lockedBuffer{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = d.out, d.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(d.exited) }()
	t.Cleanup(func() {
		d.stop(t)
		if t.Failed() {
			t.Logf("daemon output:\n%s", d.out.String())
		}
	})
	s.waitFor("the daemon to watch Docker events", 60*time.Second, func() bool {
		return strings.Contains(d.out.String(), "Watching Docker events")
	})
	return d
}

func (d *scopedDaemon) alive() bool {
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

// openFiles returns the paths of the files process pid has open.
func openFiles(pid int) map[string]bool {
	out := map[string]bool{}
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if target, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil {
			out[target] = true
		}
	}
	return out
}

// stop ends the daemon with SIGTERM and waits for it to exit.
func (d *scopedDaemon) stop(t *testing.T) {
	d.once.Do(func() {
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(2 * time.Minute):
			d.cmd.Process.Kill()
			<-d.exited
			t.Error("the daemon did not exit within 2m of SIGTERM")
		}
	})
}

// setAuditConfig rewrites the log section's audit keys of s's config.
func setAuditConfig(t *testing.T, s *server, lines string) {
	t.Helper()
	data, err := os.ReadFile(s.Env.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg := regexp.MustCompile(`(?m)^  audit_[a-z]+: .*\n`).ReplaceAllString(string(data), "")
	cfg = strings.Replace(cfg, "\nlog:\n", "\nlog:\n"+lines, 1)
	if err := os.WriteFile(s.Env.ConfigPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestAuditLogRequired: an audit log that cannot be written makes stop
// fail without changing anything and spawn refuse the connection; with
// log.audit_required: false both go ahead with a warning.
func TestAuditLogRequired(t *testing.T) {
	s := newServer(t, serverOptions{Users: []string{"ssa"}})
	alice := s.user("ssa")
	s.mustSSH(alice, "true")

	// The parent of the audit log is a regular file: unwritable even for root.
	notDir := filepath.Join(t.TempDir(), "not-a-directory")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(notDir, "audit.log")
	setAuditConfig(t, s, "  audit_log: "+bad+"\n")

	r := s.Env.Run("stop", alice.Name)
	if r.Code != 1 || !strings.Contains(r.Stderr, "Error: cannot open audit log "+bad) || !strings.Contains(r.Stderr, "log.audit_required: false") ||
		!strings.Contains(r.Stderr, "nothing was changed") || r.Stdout != "" {
		t.Fatalf("stop with an unwritable audit log: exit %d\nstdout: %s\nstderr: %s", r.Code, r.Stdout, r.Stderr)
	}
	if row := s.session(alice, ""); row == nil || row.Status != string(desired.StatusGrace) {
		t.Fatalf("after the refused stop: session %+v, want it untouched in grace_period", row)
	}
	ssh := s.runSSH(alice, nil, "", "echo ran")
	if ssh.Code != 255 || strings.Contains(ssh.Stdout, "ran") || !strings.Contains(ssh.Stderr, "refusing the connection: cannot open audit log "+bad) {
		t.Fatalf("ssh with an unwritable audit log: exit %d\nstdout: %s\nstderr: %s", ssh.Code, ssh.Stdout, ssh.Stderr)
	}

	setAuditConfig(t, s, "  audit_log: "+bad+"\n  audit_required: false\n")
	if out := s.mustSSH(alice, "echo ran"); out != "ran\n" {
		t.Fatalf("ssh with audit_required false: %q", out)
	}
	r = s.Env.Run("stop", alice.Name)
	if r.Code != 0 || !strings.Contains(r.Stdout, "Destroyed session: "+alice.Name) ||
		!strings.Contains(r.Stderr, "Warning: Audit log cannot be written; continuing without it (log.audit_required is false)") {
		t.Fatalf("stop with audit_required false: exit %d\nstdout: %s\nstderr: %s", r.Code, r.Stdout, r.Stderr)
	}
	if row := s.session(alice, ""); row != nil {
		t.Fatalf("after stop: session %+v still listed", row)
	}
}
