package core_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/test/harness"
)

// guardJSON is the part of a dry-run plan or a pass report the guard
// tests read.
type guardJSON struct {
	Actions []struct {
		Kind   string `json:"kind"`
		Target string `json:"target"`
	} `json:"actions"`
	Held []struct {
		Kind   string `json:"kind"`
		Target string `json:"target"`
		Reason string `json:"reason"`
	} `json:"held"`
	Holds []struct {
		Reason string               `json:"reason"`
		Keys   []desired.SessionKey `json:"keys"`
	} `json:"holds"`
}

func parseGuard(t *testing.T, out string) guardJSON {
	t.Helper()
	var g guardJSON
	if err := json.Unmarshal([]byte(out), &g); err != nil {
		t.Fatalf("parsing plan: %v\n%s", err, out)
	}
	return g
}

func (g guardJSON) heldContainers() []string {
	var out []string
	for _, a := range g.Held {
		if a.Kind == "remove-container" {
			out = append(out, a.Target)
		}
	}
	return out
}

// The reproduction: three live sessions, then auth.key_dir points
// at an empty directory (a typo, a mount that did not come up). The pass
// must not destroy them; an operator's confirmation does.
func TestGuardHoldsSessionsOfAnEmptyKeyDirectory(t *testing.T) {
	e := newCoreEnv(t, harness.Options{Cleanup: "  orphan_min_age: 30s\n  max_unplanned_removals: 2\n"})
	var keys []desired.SessionKey
	var names []string
	for _, p := range []string{"cga", "cgb", "cgc"} {
		k := desired.SessionKey{User: harness.Uniq(p)}
		e.AddUser(k.User)
		e.startSession(k, harness.SeedOptions{})
		keys = append(keys, k)
		names = append(names, desired.ContainerName(k))
	}
	before := e.objects()

	empty := filepath.Join(e.Root, "empty-keys")
	if err := os.Mkdir(empty, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(e.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.ConfigPath, []byte(strings.Replace(string(cfg), "key_dir: "+e.KeyDir, "key_dir: "+empty, 1)), 0o644); err != nil {
		t.Fatal(err)
	}

	plan := parseGuard(t, e.mustCleanup("--dry-run", "-o", "json").Stdout)
	if len(plan.Actions) != 0 || len(plan.Holds) != 1 || plan.Holds[0].Reason != "mass-removal" || len(plan.Holds[0].Keys) != 3 {
		t.Errorf("dry-run: actions %+v, holds %+v; want no action and one mass-removal hold of 3 sessions", plan.Actions, plan.Holds)
	}
	if diff := cmp.Diff(names, plan.heldContainers()); diff != "" {
		t.Errorf("held container removals (-want +got):\n%s", diff)
	}
	text := e.mustCleanup("--dry-run").Stdout
	mustContain(t, "dry-run text", text, "Held by the blast-radius guard (not done):", "Why (mass-removal): 3 of 3 session containers",
		"podspawn cleanup --allow-mass-removal", "0 skipped, 12 held.")

	r := e.cleanup()
	if r.Code != 1 {
		t.Fatalf("cleanup exit %d, want 1 (removals held)\n%s", r.Code, fmtResult(r))
	}
	mustContain(t, "cleanup stdout", r.Stdout, "Held by the blast-radius guard (not done):", "No changes; 12 held; 0 failed.")
	mustContain(t, "cleanup stderr", r.Stderr, "12 actions held by the blast-radius guard:", "mass-removal: 3 of 3 session containers")
	if diff := cmp.Diff(before, e.objects()); diff != "" {
		t.Errorf("a held pass changed Docker objects (-before +after):\n%s", diff)
	}
	for _, k := range keys {
		if s := e.Row(k); s == nil || s.Status != desired.StatusRunning {
			t.Errorf("row of %s after a held pass: %+v, want running", k, s)
		}
	}

	doc := e.RunEnv([]string{"DOCKER_HOST=" + e.Proxy.Host()}, "", "doctor", "-o", "json")
	var rep struct {
		Checks []struct{ Name, Status, Detail string } `json:"checks"`
	}
	if err := json.Unmarshal([]byte(doc.Stdout), &rep); err != nil {
		t.Fatalf("doctor -o json: %v\n%s", err, fmtResult(doc))
	}
	found := false
	for _, c := range rep.Checks {
		if c.Name == "removal guard" {
			found = true
			if c.Status != "fail" || !strings.Contains(c.Detail, "12 removal(s) held: mass-removal") {
				t.Errorf("doctor removal guard = %s: %s; want fail naming the held removals", c.Status, c.Detail)
			}
		}
	}
	if !found {
		t.Errorf("doctor has no removal guard check:\n%s", doc.Stdout)
	}

	r = e.cleanup("--allow-mass-removal")
	if r.Code != 0 {
		t.Fatalf("confirmed cleanup exit %d\n%s", r.Code, fmtResult(r))
	}
	mustContain(t, "confirmed cleanup", r.Stdout, "Removed 3 containers, 3 networks, 3 session records; 0 held; 0 failed.")
	if got := e.objects(); len(got) != 0 {
		t.Errorf("objects left after the confirmed pass: %v", harness.ObjectNames(got))
	}
	for _, k := range keys {
		if s := e.Row(k); s != nil {
			t.Errorf("row of %s after the confirmed pass: %+v, want gone", k, s)
		}
	}
}

// A fresh database beside containers of an older podspawn (managed-by,
// no instance label): they are not this database's orphans until an
// operator says so.
func TestGuardHoldsUnlabelledContainersOlderThanTheDatabase(t *testing.T) {
	e := newCoreEnv(t, harness.Options{Cleanup: "  orphan_min_age: 0s\n"})
	var names []string
	for _, p := range []string{"cgo", "cgp"} {
		user := harness.Uniq(p)
		name := desired.ContainerName(desired.SessionKey{User: user})
		e.handContainer(name, map[string]string{observed.LabelManagedBy: observed.ManagedByValue, observed.LabelUser: user}, "")
		names = append(names, name)
	}
	// A fresh database, as if state.db_path pointed somewhere new, dated a
	// minute after the containers: Docker lists creation times to the
	// second, and the guard does not call a container of the database's
	// own second older than it.
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if err := os.Remove(e.DBPath + suffix); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	first, _ := e.inspect(names[0])
	ctr, err := e.Docker.ContainerInspect(context.Background(), first.ID)
	if err != nil {
		t.Fatal(err)
	}
	created, err := time.Parse(time.RFC3339Nano, ctr.Created)
	if err != nil {
		t.Fatal(err)
	}
	e.OpenStore().Close()
	e.ExecSQL(`UPDATE schema_migrations SET applied_at = ? WHERE version = 1`, created.Add(time.Minute).UnixNano())

	plan := parseGuard(t, e.mustCleanup("--dry-run", "-o", "json").Stdout)
	if len(plan.Actions) != 0 || len(plan.Holds) != 1 || plan.Holds[0].Reason != "young-database" {
		t.Errorf("dry-run: actions %+v, holds %+v; want no action and one young-database hold", plan.Actions, plan.Holds)
	}
	held := plan.heldContainers()
	slices.Sort(names)
	slices.Sort(held)
	if diff := cmp.Diff(names, held); diff != "" {
		t.Errorf("held container removals (-want +got):\n%s", diff)
	}
	r := e.cleanup()
	if r.Code != 1 {
		t.Fatalf("cleanup exit %d, want 1 (removals held)\n%s", r.Code, fmtResult(r))
	}
	mustContain(t, "cleanup stderr", r.Stderr, "young-database: the state database was created after running podspawn containers")
	for _, n := range names {
		if o, ok := e.inspect(n); !ok || !o.Running {
			t.Errorf("container %s after a held pass: present %v running %v; want it running", n, ok, o.Running)
		}
	}

	if r := e.cleanup("--allow-mass-removal"); r.Code != 0 {
		t.Fatalf("confirmed cleanup exit %d\n%s", r.Code, fmtResult(r))
	}
	for _, n := range names {
		if _, ok := e.inspect(n); ok {
			t.Errorf("container %s survived the confirmed pass", n)
		}
	}
}

// A paused session container counts as not running (observed's one
// meaning): one pass plans to start it again and the executor unpauses it,
// keeping its processes.
func TestPausedSessionContainerIsUnpaused(t *testing.T) {
	e := newCoreEnv(t, harness.Options{})
	key := desired.SessionKey{User: harness.Uniq("cgz")}
	e.AddUser(key.User)
	e.startSession(key, harness.SeedOptions{})
	name := desired.ContainerName(key)
	if err := e.Docker.ContainerPause(context.Background(), name); err != nil {
		t.Fatal(err)
	}
	plan := parsePlan(t, e.mustCleanup("--dry-run", "-o", "json").Stdout)
	want := []step{{"create-container", key.String(), name, "container-stopped"}}
	if diff := cmp.Diff(want, plan.steps()); diff != "" {
		t.Errorf("plan for a paused session container (-want +got):\n%s", diff)
	}
	e.mustCleanup()
	ctr, err := e.Docker.ContainerInspect(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	if ctr.State == nil || ctr.State.Paused || !ctr.State.Running {
		t.Fatalf("container state after cleanup: %+v, want running and not paused", ctr.State)
	}
	if plan := parsePlan(t, e.mustCleanup("--dry-run", "-o", "json").Stdout); len(plan.steps()) != 0 {
		t.Errorf("a second pass still plans %v", plan.steps())
	}
}
