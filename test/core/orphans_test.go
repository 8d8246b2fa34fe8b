package core_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/sqlstore"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/test/harness"
)

var managedOnly = map[string]string{observed.LabelManagedBy: observed.ManagedByValue}

// sessionLabels are the labels podspawn would put on a session's objects.
func sessionLabels(key desired.SessionKey, instance, role string) map[string]string {
	return map[string]string{
		observed.LabelManagedBy: observed.ManagedByValue, observed.LabelUser: key.User, observed.LabelProject: key.Project,
		observed.LabelSession: sqlstore.NewSessionID(), observed.LabelInstance: instance, observed.LabelRole: role,
	}
}

func TestOrphanContainerAndNetworkRemoved(t *testing.T) {
	e := newCoreEnv(t, harness.Options{Cleanup: "  orphan_min_age: 0s\n"})

	// Left by a crash of something that labelled only managed-by.
	bareNet := harness.Uniq("ctorph-net-")
	e.handNetwork(bareNet, managedOnly)
	bareCtr := harness.Uniq("ctorph-ctr-")
	e.handContainer(bareCtr, managedOnly, bareNet)

	// Left by a crash between creating a session's objects and its row.
	key := desired.SessionKey{User: harness.Uniq("ctd"), Project: "web"}
	e.AddUser(key.User)
	e.handNetwork(desired.NetworkName(key), sessionLabels(key, e.Instance, observed.RoleSession))
	e.handContainer(desired.ContainerName(key), sessionLabels(key, e.Instance, observed.RoleSession), desired.NetworkName(key))

	hand := []string{bareNet, bareCtr}
	plan := parsePlan(t, e.mustCleanup("--dry-run", "-o", "json").Stdout)
	want := []step{
		{"remove-container", "", bareCtr, "orphan-no-session"},
		{"remove-network", "", bareNet, "orphan-no-session"},
		{"remove-container", key.String(), desired.ContainerName(key), "orphan-no-session"},
		{"remove-network", key.String(), desired.NetworkName(key), "orphan-no-session"},
	}
	if diff := cmp.Diff(want, plan.steps()); diff != "" {
		t.Fatalf("dry-run plan (-want +got):\n%s", diff)
	}

	r := e.mustCleanup()
	mustContain(t, "cleanup output", r.Stdout, "removed container "+bareCtr, "removed network "+bareNet,
		"removed container "+desired.ContainerName(key), "removed network "+desired.NetworkName(key), "Removed 2 containers, 2 networks; 0 held; 0 failed.")
	if got := e.objects(hand...); len(got) != 0 {
		t.Errorf("orphans left: %v", harness.ObjectNames(got))
	}
	if refused := e.Proxy.Refused(); len(refused) != 0 {
		t.Errorf("podspawn tried to remove objects this test does not own: %v", refused)
	}
}

func TestYoungOrphanKeptAndReported(t *testing.T) {
	e := newCoreEnv(t, harness.Options{Cleanup: "  orphan_min_age: 1h\n"})
	bareNet := harness.Uniq("ctyoung-net-")
	e.handNetwork(bareNet, managedOnly)
	bareCtr := harness.Uniq("ctyoung-ctr-")
	e.handContainer(bareCtr, managedOnly, bareNet)
	key := desired.SessionKey{User: harness.Uniq("cty")}
	e.AddUser(key.User)
	e.handContainer(desired.ContainerName(key), sessionLabels(key, e.Instance, observed.RoleSession), "")
	hand := []string{bareNet, bareCtr}
	before := e.objects(hand...)

	r := e.mustCleanup("--dry-run")
	mustContain(t, "dry-run text", r.Stdout, "No changes.", "Left alone:", bareCtr, bareNet, desired.ContainerName(key),
		// The remaining age depends on how long the test took so far.
		"orphan-too-young", "no session record; removable in ")
	plan := parsePlan(t, e.mustCleanup("--dry-run", "-o", "json").Stdout)
	if diff := cmp.Diff([]step{}, plan.steps()); diff != "" {
		t.Errorf("dry-run actions (-want +got):\n%s", diff)
	}
	wantSkips := []step{
		{"container", "", bareCtr, "orphan-too-young"},
		{"network", "", bareNet, "orphan-too-young"},
		{"container", key.String(), desired.ContainerName(key), "orphan-too-young"},
	}
	if diff := cmp.Diff(wantSkips, plan.skips()); diff != "" {
		t.Errorf("dry-run skips (-want +got):\n%s", diff)
	}

	e.mustCleanup()
	if diff := cmp.Diff(before, e.objects(hand...)); diff != "" {
		t.Errorf("cleanup touched young orphans (-before +after):\n%s", diff)
	}
}

func TestOtherInstanceAndUnlabelledObjectsUntouched(t *testing.T) {
	e := newCoreEnv(t, harness.Options{Cleanup: "  orphan_min_age: 0s\n"})

	// A whole session of another podspawn state database on this daemon.
	other := desired.SessionKey{User: harness.Uniq("ctf")}
	e.AddUser(other.User)
	e.handNetwork(desired.NetworkName(other), sessionLabels(other, "someother", observed.RoleSession))
	e.handContainer(desired.ContainerName(other), sessionLabels(other, "someother", observed.RoleSession), desired.NetworkName(other))
	// A container of the operator's that merely has a session-like name.
	cte := desired.SessionKey{User: harness.Uniq("cte")}
	e.AddUser(cte.User)
	e.handContainer(desired.ContainerName(cte), nil, "")
	hand := []string{desired.NetworkName(other), desired.ContainerName(other), desired.ContainerName(cte)}
	before := e.objects(hand...)
	if len(before) != 3 {
		t.Fatalf("setup: objects %v", harness.ObjectNames(before))
	}

	t.Run("no session", func(t *testing.T) {
		plan := parsePlan(t, e.mustCleanup("--dry-run", "-o", "json").Stdout)
		if diff := cmp.Diff([]step{}, plan.steps()); diff != "" {
			t.Errorf("dry-run actions (-want +got):\n%s", diff)
		}
		wantSkips := []step{
			{"container", other.String(), desired.ContainerName(other), "foreign-instance"},
			{"network", other.String(), desired.NetworkName(other), "foreign-instance"},
		}
		if diff := cmp.Diff(wantSkips, plan.skips()); diff != "" {
			t.Errorf("dry-run skips (-want +got):\n%s", diff)
		}
		e.mustCleanup()
		if diff := cmp.Diff(before, e.objects(hand...)); diff != "" {
			t.Errorf("cleanup touched objects it does not own (-before +after):\n%s", diff)
		}
	})

	t.Run("session wants the name", func(t *testing.T) {
		// A session of cte is being created: its container name is taken
		// by the unlabelled container, which must be neither adopted nor removed.
		e.SeedCreating(cte, harness.SeedOptions{})
		r := e.cleanup()
		if r.Code == 0 {
			t.Fatalf("cleanup succeeded although the session container name is taken:\n%s", fmtResult(r))
		}
		mustContain(t, "cleanup stderr", r.Stderr, "Error: 1 session failed", "container "+desired.ContainerName(cte)+" already exists and is not managed by podspawn")
		if diff := cmp.Diff(before, without(e.objects(hand...), "network", desired.NetworkName(cte))); diff != "" {
			t.Errorf("cleanup touched objects it does not own (-before +after):\n%s", diff)
		}
		if s := e.Row(cte); s == nil || s.Status != desired.StatusCreating {
			t.Errorf("row of %s = %+v, want it kept in status creating", cte, s)
		}
	})
	if refused := e.Proxy.Refused(); len(refused) != 0 {
		t.Errorf("podspawn tried to remove objects this test does not own: %v", refused)
	}
}

// without drops the named object: the network podspawn itself created for
// a session (the first step of its creation, before the name conflict).
func without(objs []harness.Object, kind, name string) []harness.Object {
	out := []harness.Object{}
	for _, o := range objs {
		if o.Kind != kind || o.Name != name {
			out = append(out, o)
		}
	}
	return out
}
