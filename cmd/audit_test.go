package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/actions/audit"
)

// Admin commands record admin.<command> with their arguments and outcome;
// a cleanup pass only when it removed something; dry runs never. The
// teardowns a pass executes are session.destroy records of their reason.
func TestAdminAudit(t *testing.T) {
	e := newAdminEnv(t)
	path := filepath.Join(e.root, "audit.log")
	e.appendConfig("log:\n  audit_log: " + path + "\n")
	e.seedBusyPass()
	e.run("cleanup")
	e.run("cleanup")
	e.run("cleanup", "--dry-run")
	e.run("stop", "alice", "--dry-run")
	e.run("stop", "nobody")

	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var got []audit.Event
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var ev audit.Event
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("%v: %s", err, l)
		}
		if ev.Time.IsZero() {
			t.Errorf("no time: %s", l)
		}
		ev.Time = time.Time{}
		got = append(got, ev)
	}
	// The pass tears sessions down side by side: their order is not fixed.
	n := 0
	for n < len(got) && got[n].Event == audit.SessionDestroy {
		n++
	}
	sort.Slice(got[:n], func(i, j int) bool { return got[i].User < got[j].User })
	admin := audit.AdminActor(os.Getenv("SUDO_USER"), os.Getuid())
	want := []audit.Event{
		{Event: "session.destroy", User: "alice", Project: "backend", Session: "sess-alice-backend", Actor: "controller", Reason: "grace-expired", Container: "podspawn-alice-backend"},
		{Event: "session.destroy", User: "erin", Project: "web", Session: "sess-erin-web", Actor: admin, Reason: "user-requested", Container: "podspawn-erin-web"},
		{Event: "admin.cleanup", Actor: admin, Args: []string{"--config", e.cfgPath, "cleanup"}, Outcome: "success"},
		{Event: "admin.stop", User: "nobody", Actor: admin, Args: []string{"--config", e.cfgPath, "stop", "nobody"}, Outcome: "failure", Error: "no active session for nobody"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("audit records (-want +got):\n%s", diff)
	}
}

// An audit log that cannot be opened stops a state-changing command
// before it changes anything; log.audit_required: false lets it go on.
func TestAdminAuditFailsClosed(t *testing.T) {
	e := newAdminEnv(t)
	e.keyFile("alice", pubKey(t, 1, "a")+"\n")
	e.seedUserSessions("alice")
	notDir := filepath.Join(e.root, "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	e.appendConfig("log:\n  audit_log: " + filepath.Join(notDir, "audit.log") + "\n")
	db, objs := e.dbSnapshot(), e.docker.names()
	out := e.run("stop", "alice@backend")
	if !strings.Contains(out, "--- stderr\nError: cannot open audit log $ROOT/file/audit.log: ") || !strings.Contains(out, "nothing was changed\n--- exit 1") {
		t.Fatalf("stop with an unwritable audit log:\n%s", out)
	}
	e.assertUnchanged(db, objs)

	e.appendConfig("  audit_required: false\n")
	out = e.run("stop", "alice@backend")
	if !strings.Contains(out, "Destroyed session: alice@backend") || !strings.Contains(out, "Warning: Audit log cannot be written; continuing without it (log.audit_required is false)") ||
		!strings.HasSuffix(out, "--- exit 0\n") {
		t.Fatalf("stop with audit_required false:\n%s", out)
	}
}
