package core_test

import (
	"os/exec"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/observed/proc"
	"github.com/podspawn/podspawn/test/harness"
)

// wantSessionObjects is what a session with the db service owns in Docker.
func wantSessionObjects(key desired.SessionKey) []string {
	c := desired.ContainerName(key)
	return []string{"container " + c, "container " + c + "-db", "network " + desired.NetworkName(key), "volume " + c + "-db-data"}
}

// checkLabels verifies every object carries the full podspawn label set.
func checkLabels(t *testing.T, e *coreEnv, key desired.SessionKey, sessionID string, objs []harness.Object) {
	t.Helper()
	for _, o := range objs {
		for k, want := range map[string]string{
			observed.LabelManagedBy: observed.ManagedByValue, observed.LabelUser: key.User, observed.LabelProject: key.Project,
			observed.LabelSession: sessionID, observed.LabelInstance: e.Instance,
		} {
			if got, ok := o.Labels[k]; !ok || got != want {
				t.Errorf("%s: label %s = %q, want %q", o, k, got, want)
			}
		}
		if o.Kind == "container" && !o.Running {
			t.Errorf("%s is not running", o)
		}
	}
}

func TestGraceExpiryRemovesContainerServicesNetworkVolumeAndRow(t *testing.T) {
	e := newCoreEnv(t, harness.Options{})
	key := desired.SessionKey{User: harness.Uniq("cta")}
	e.AddUser(key.User)
	id := e.startSession(key, harness.SeedOptions{Services: []desired.Service{dbService()}})

	objs := e.objects()
	if diff := cmp.Diff(wantSessionObjects(key), harness.ObjectNames(objs)); diff != "" {
		t.Fatalf("objects after creation (-want +got):\n%s", diff)
	}
	checkLabels(t, e, key, id, objs)

	// The connection ends: the next pass starts the grace period.
	e.ReleaseLeases(key)
	before := time.Now()
	r := e.mustCleanup()
	after := time.Now()
	mustContain(t, "cleanup output", r.Stdout, "started grace period of "+key.String())
	s := e.Row(key)
	if s.Status != desired.StatusGrace {
		t.Fatalf("status after disconnect = %s, want %s", s.Status, desired.StatusGrace)
	}
	if s.GraceExpiry.Before(before.Add(time.Minute).Truncate(time.Second)) || s.GraceExpiry.After(after.Add(time.Minute)) {
		t.Errorf("grace expiry %s is not the pass time + 60s (pass ran %s..%s)", s.GraceExpiry, before, after)
	}
	if diff := cmp.Diff(objs, e.objects()); diff != "" {
		t.Fatalf("starting the grace period changed Docker objects (-before +after):\n%s", diff)
	}

	// The grace period ends.
	e.ExecSQL(`UPDATE sessions SET grace_expiry = ? WHERE id = ?`, time.Now().Add(-time.Second).UnixNano(), id)
	r = e.mustCleanup()
	mustContain(t, "cleanup output", r.Stdout, "grace-expired", "removed container "+desired.ContainerName(key),
		"removed container "+desired.ContainerName(key)+"-db", "removed network "+desired.NetworkName(key),
		"removed volume "+desired.ContainerName(key)+"-db-data", "deleted session record "+key.String())
	if got := e.objects(); len(got) != 0 {
		t.Errorf("objects left after grace expiry: %v", harness.ObjectNames(got))
	}
	if s := e.Row(key); s != nil {
		t.Errorf("row left after grace expiry: %+v", s)
	}
	if diff := cmp.Diff(map[string]any{"leases": 0}, map[string]any{"leases": len(e.DBDump()["leases"])}); diff != "" {
		t.Errorf("leases left (-want +got):\n%s", diff)
	}

	// A second pass has nothing to do.
	r = e.mustCleanup("--dry-run")
	mustContain(t, "dry run after convergence", r.Stdout, "No changes.")
}

func TestMaxLifetimeRemovesSessionEvenWithLiveLease(t *testing.T) {
	e := newCoreEnv(t, harness.Options{})
	key := desired.SessionKey{User: harness.Uniq("ctb"), Project: "web"}
	e.AddUser(key.User)
	id := e.startSession(key, harness.SeedOptions{Services: []desired.Service{dbService()}})
	if got := e.Row(key); len(got.Leases) != 1 {
		t.Fatalf("want one live lease, got %+v", got.Leases)
	}

	e.ExecSQL(`UPDATE sessions SET max_lifetime_at = ? WHERE id = ?`, time.Now().Add(-time.Second).UnixNano(), id)
	r := e.mustCleanup()
	mustContain(t, "cleanup output", r.Stdout, "lifetime-exceeded", "with 1 live connection(s)", "deleted session record "+key.String())
	if got := e.objects(); len(got) != 0 {
		t.Errorf("objects left after max lifetime: %v", harness.ObjectNames(got))
	}
	if s := e.Row(key); s != nil {
		t.Errorf("row left after max lifetime: %+v", s)
	}
	if n := len(e.DBDump()["leases"]); n != 0 {
		t.Errorf("%d leases left after max lifetime", n)
	}
}

func TestPersistentSessionUntouchedWithDeadlinesPast(t *testing.T) {
	e := newCoreEnv(t, harness.Options{})
	key := desired.SessionKey{User: harness.Uniq("ctc")}
	e.AddUser(key.User)
	id := e.startSession(key, harness.SeedOptions{Mode: desired.ModePersistent, Services: []desired.Service{dbService()}})

	// No connection, grace period and lifetime both over: the exact state
	// in which the old podspawn destroyed persistent sessions (G9).
	e.ReleaseLeases(key)
	past := time.Now().Add(-time.Hour).UnixNano()
	e.ExecSQL(`UPDATE sessions SET status = 'grace_period', grace_expiry = ?, max_lifetime_at = ? WHERE id = ?`, past, past, id)
	objs, dump := e.objects(), e.DBDump()

	r := e.mustCleanup()
	mustContain(t, "cleanup output", r.Stdout, "No changes; 0 held; 0 failed.")
	if diff := cmp.Diff(objs, e.objects()); diff != "" {
		t.Errorf("cleanup changed a persistent session's objects (-before +after):\n%s", diff)
	}
	// Every pass records its clocks (clock-step detection); nothing else changes.
	after := e.DBDump()
	delete(dump, "clock_sample")
	delete(after, "clock_sample")
	if diff := cmp.Diff(dump, after); diff != "" {
		t.Errorf("cleanup changed the database (-before +after):\n%s", diff)
	}
	p := parsePlan(t, e.mustCleanup("--dry-run", "-o", "json").Stdout)
	if diff := cmp.Diff([]step{}, p.steps()); diff != "" {
		t.Errorf("dry-run plan for a persistent session (-want +got):\n%s", diff)
	}
}

func TestDeadLeaseIsReleasedAndGraceStarts(t *testing.T) {
	e := newCoreEnv(t, harness.Options{})
	key := desired.SessionKey{User: harness.Uniq("ctk")}
	e.AddUser(key.User)

	// A stand-in for the spawn process that serves the connection.
	cmd := exec.Command("sleep", "3600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	start, err := proc.StartTime(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	ref := observed.ProcessRef{PID: cmd.Process.Pid, Start: start}
	e.startSession(key, harness.SeedOptions{Lease: ref})
	if got := e.Row(key); len(got.Leases) != 1 || got.Leases[0].PID != ref.PID {
		t.Fatalf("leases after creation = %+v, want one lease of pid %d", got.Leases, ref.PID)
	}
	// While the process lives, a pass changes nothing.
	r := e.mustCleanup()
	mustContain(t, "cleanup output", r.Stdout, "No changes; 0 held; 0 failed.")

	// The process dies without releasing its lease (SIGKILL, sshd teardown).
	cmd.Process.Kill()
	cmd.Wait()
	killed = true
	objs := e.objects()
	r = e.mustCleanup()
	mustContain(t, "cleanup output", r.Stdout, "released dead connection", "lease-dead", "started grace period of "+key.String())
	s := e.Row(key)
	if s.Status != desired.StatusGrace || len(s.Leases) != 0 {
		t.Errorf("after the lease holder died: status %s, leases %+v; want %s and none", s.Status, s.Leases, desired.StatusGrace)
	}
	if diff := cmp.Diff(objs, e.objects()); diff != "" {
		t.Errorf("releasing a lease changed Docker objects (-before +after):\n%s", diff)
	}
}

// G3, G4: a row whose container vanished is torn down completely.
func TestContainerRemovedByHandTearsDownServicesNetworkAndRow(t *testing.T) {
	e := newCoreEnv(t, harness.Options{})
	key := desired.SessionKey{User: harness.Uniq("ctl"), Project: "api"}
	e.AddUser(key.User)
	e.startSession(key, harness.SeedOptions{Services: []desired.Service{dbService()}})
	e.ReleaseLeases(key)

	if _, err := exec.Command("docker", "rm", "-f", desired.ContainerName(key)).CombinedOutput(); err != nil {
		t.Fatalf("docker rm -f: %v", err)
	}
	r := e.mustCleanup()
	mustContain(t, "cleanup output", r.Stdout, "container-gone", "removed container "+desired.ContainerName(key)+"-db",
		"removed network "+desired.NetworkName(key), "removed volume "+desired.ContainerName(key)+"-db-data", "deleted session record "+key.String())
	if got := e.objects(); len(got) != 0 {
		t.Errorf("objects left: %v", harness.ObjectNames(got))
	}
	if s := e.Row(key); s != nil {
		t.Errorf("row left: %+v", s)
	}
}
