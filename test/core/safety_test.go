package core_test

import (
	"context"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/test/harness"
)

func TestDryRunChangesNothing(t *testing.T) {
	e := newCoreEnv(t, harness.Options{Cleanup: "  orphan_min_age: 0s\n"})
	// Work of every kind is pending: an expired grace period, a session
	// waiting to be created, a dead lease and an orphan.
	expired := desired.SessionKey{User: harness.Uniq("ctg")}
	e.AddUser(expired.User)
	id := e.startSession(expired, harness.SeedOptions{Services: []desired.Service{dbService()}})
	e.ReleaseLeases(expired)
	e.ExecSQL(`UPDATE sessions SET status = 'grace_period', grace_expiry = ? WHERE id = ?`, time.Now().Add(-time.Minute).UnixNano(), id)

	creating := desired.SessionKey{User: harness.Uniq("cti"), Project: "web"}
	e.AddUser(creating.User)
	e.SeedCreating(creating, harness.SeedOptions{})

	orphan := desired.SessionKey{User: harness.Uniq("cth")}
	e.AddUser(orphan.User)
	e.handContainer(desired.ContainerName(orphan), sessionLabels(orphan, e.Instance, observed.RoleSession), "")

	objs, dump := e.objects(), e.DBDump()
	text := e.mustCleanup("--dry-run")
	mustContain(t, "dry-run text", text.Stdout, "podspawn will perform the following actions",
		"Plan: 2 to create, 2 to change, 6 to remove.")
	js := e.mustCleanup("--dry-run", "-o", "json")
	plan := parsePlan(t, js.Stdout)
	var raw map[string]any
	if err := json.Unmarshal([]byte(js.Stdout), &raw); err != nil || raw["format_version"] != "1" {
		t.Errorf("format_version = %v (err %v), want \"1\"", raw["format_version"], err)
	}
	c := desired.ContainerName
	want := []step{
		{"create-network", creating.String(), desired.NetworkName(creating), "session-creating"},
		{"create-container", creating.String(), c(creating), "session-creating"},
		{"mark-running", creating.String(), "session " + creating.String(), "session-creating"},
		{"mark-terminating", expired.String(), "session " + expired.String(), "grace-expired"},
		{"remove-container", expired.String(), c(expired), "grace-expired"},
		{"remove-container", expired.String(), c(expired) + "-db", "grace-expired"},
		{"remove-network", expired.String(), desired.NetworkName(expired), "grace-expired"},
		{"remove-volume", expired.String(), c(expired) + "-db-data", "grace-expired"},
		{"delete-session", expired.String(), "session " + expired.String(), "grace-expired"},
		{"remove-container", orphan.String(), c(orphan), "orphan-no-session"},
	}
	if diff := cmp.Diff(want, plan.steps()); diff != "" {
		t.Errorf("dry-run plan (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(objs, e.objects()); diff != "" {
		t.Errorf("dry run changed Docker objects (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff(dump, e.DBDump()); diff != "" {
		t.Errorf("dry run changed the database (-before +after):\n%s", diff)
	}
}

// G16: a failed Docker step keeps the row and fails the command; the next
// pass finishes the job.
func TestFailedRemovalKeepsRowAndNextPassFinishes(t *testing.T) {
	e := newCoreEnv(t, harness.Options{})
	key := desired.SessionKey{User: harness.Uniq("ctj")}
	e.AddUser(key.User)
	id := e.startSession(key, harness.SeedOptions{})
	e.ReleaseLeases(key)
	e.ExecSQL(`UPDATE sessions SET status = 'grace_period', grace_expiry = ? WHERE id = ?`, time.Now().Add(-time.Second).UnixNano(), id)

	// An unlabelled container of the operator's on the session network:
	// Docker refuses to remove a network that still has endpoints.
	blocker := e.handContainer(harness.Uniq("ctblock-"), nil, desired.NetworkName(key))

	r := e.cleanup()
	if r.Code == 0 {
		t.Fatalf("cleanup exited 0 although a removal failed:\n%s", fmtResult(r))
	}
	mustContain(t, "cleanup stdout", r.Stdout, "removed container "+desired.ContainerName(key), "Removed 1 container; changed 1 session; 0 held; 1 failed.")
	mustContain(t, "cleanup stderr", r.Stderr, "Error: 1 session failed; the next pass retries them:", key.String()+": remove-network "+desired.NetworkName(key))
	s := e.Row(key)
	if s == nil || s.Status != desired.StatusTerminating || s.TerminateReason != "grace-expired" {
		t.Fatalf("row after the failed pass = %+v, want it kept as terminating (grace-expired)", s)
	}
	if diff := cmp.Diff([]string{"network " + desired.NetworkName(key)}, harness.ObjectNames(e.objects())); diff != "" {
		t.Errorf("objects after the failed pass (-want +got):\n%s", diff)
	}
	if _, ok := e.inspect(blocker); !ok {
		t.Errorf("the blocking container %s was removed", blocker)
	}

	// The same failure in JSON: it parses, names the key, and still exits 1.
	r = e.cleanup("-o", "json")
	if r.Code != 1 {
		t.Errorf("cleanup -o json exit %d, want 1\n%s", r.Code, fmtResult(r))
	}
	var rep struct {
		FormatVersion string `json:"format_version"`
		Failed        []struct {
			Key   desired.SessionKey `json:"key"`
			Error string             `json:"error"`
		} `json:"failed"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &rep); err != nil {
		t.Fatalf("JSON report does not parse: %v\n%s", err, r.Stdout)
	}
	if rep.FormatVersion == "" || len(rep.Failed) != 1 || rep.Failed[0].Key != key {
		t.Errorf("JSON report: %+v, want format_version and one failure for %s", rep, key)
	}

	if err := e.Docker.ContainerRemove(context.Background(), blocker, container.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	r = e.mustCleanup()
	mustContain(t, "cleanup stdout", r.Stdout, "removed network "+desired.NetworkName(key), "deleted session record "+key.String())
	if got := e.objects(); len(got) != 0 {
		t.Errorf("objects left: %v", harness.ObjectNames(got))
	}
	if s := e.Row(key); s != nil {
		t.Errorf("row left: %+v", s)
	}
}

// G20: a config file that exists but is broken never falls back to the
// defaults (which name another database, and so see every object as an orphan).
func TestBrokenConfigRemovesNothing(t *testing.T) {
	e := newCoreEnv(t, harness.Options{Cleanup: "  orphan_min_age: 0s\n"})
	key := desired.SessionKey{User: harness.Uniq("ctm")}
	e.AddUser(key.User)
	e.handNetwork(desired.NetworkName(key), sessionLabels(key, e.Instance, observed.RoleSession))
	e.handContainer(desired.ContainerName(key), sessionLabels(key, e.Instance, observed.RoleSession), desired.NetworkName(key))
	before := e.objects()
	// With the valid config the orphans would go.
	if p := parsePlan(t, e.mustCleanup("--dry-run", "-o", "json").Stdout); len(p.steps()) != 2 {
		t.Fatalf("setup: the orphans are not planned for removal: %+v", p.steps())
	}

	good, err := os.ReadFile(e.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.ConfigPath, []byte("session:\n  grace_period: 60\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{nil, {"--dry-run"}} {
		r := e.cleanup(args...)
		if r.Code == 0 {
			t.Errorf("cleanup %v exited 0 with a broken config:\n%s", args, fmtResult(r))
		}
		mustContain(t, "stderr", r.Stderr, "Error: config "+e.ConfigPath, "session.grace_period", `"60"`, "time unit")
		if r.Stdout != "" {
			t.Errorf("cleanup %v printed a plan or report with a broken config:\n%s", args, r.Stdout)
		}
	}
	if diff := cmp.Diff(before, e.objects()); diff != "" {
		t.Errorf("cleanup with a broken config changed Docker objects (-before +after):\n%s", diff)
	}

	// Fixing the config lets the next pass do its job.
	if err := os.WriteFile(e.ConfigPath, good, 0o644); err != nil {
		t.Fatal(err)
	}
	e.mustCleanup()
	if got := e.objects(); len(got) != 0 {
		t.Errorf("orphans left after fixing the config: %v", harness.ObjectNames(got))
	}
}

// A key directory that is missing is not "no users": nothing is removed.
func TestMissingKeyDirTouchesNothing(t *testing.T) {
	e := newCoreEnv(t, harness.Options{Cleanup: "  orphan_min_age: 0s\n"})
	key := desired.SessionKey{User: harness.Uniq("ctn")}
	e.AddUser(key.User)
	e.startSession(key, harness.SeedOptions{Services: []desired.Service{dbService()}})
	orphan := desired.SessionKey{User: harness.Uniq("cto")}
	e.handContainer(desired.ContainerName(orphan), sessionLabels(orphan, e.Instance, observed.RoleSession), "")
	objs, dump := e.objects(), e.DBDump()

	if err := os.RemoveAll(e.KeyDir); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{nil, {"--dry-run"}, {"-o", "json"}} {
		r := e.cleanup(args...)
		if r.Code == 0 {
			t.Errorf("cleanup %v exited 0 without a key directory:\n%s", args, fmtResult(r))
		}
		mustContain(t, "stderr", r.Stderr, "key directory "+e.KeyDir+" does not exist")
	}
	if diff := cmp.Diff(objs, e.objects()); diff != "" {
		t.Errorf("cleanup without a key directory changed Docker objects (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff(dump, e.DBDump()); diff != "" {
		t.Errorf("cleanup without a key directory changed the database (-before +after):\n%s", diff)
	}
}
