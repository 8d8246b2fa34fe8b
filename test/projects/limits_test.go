package projects_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/test/harness"
)

// TestPodfileLimitsAreCeilings: the harness config sets defaults.cpus 1
// and memory 256m. A Podfile that asks for more is refused at add-project
// and update-project, naming field, value and ceiling; one that asks for
// less gets what it asks; a service without resources gets the ceilings;
// and a Podfile changed in the clone by hand still cannot lift them.
func TestPodfileLimitsAreCeilings(t *testing.T) {
	e := newEnv(t, harness.Options{Extra: "resources:\n  max_services_per_project: 2\n"})
	user := harness.Uniq("pjlim")
	e.AddUser(user)
	podfile := func(resources string, services int) string {
		s := fmt.Sprintf("# test run %s\nbase: %s\n%s", e.nonce, harness.Image, resources)
		if services > 0 {
			s += "services:\n"
			for i := range services {
				s += fmt.Sprintf("  - {name: s%d, image: %s, command: [sleep, \"3600\"]}\n", i, harness.Image)
			}
		}
		return s
	}

	for _, tc := range []struct{ name, podfile, want string }{
		{"the issue's Podfile", podfile("resources: {cpus: 2, memory: \"0\"}\n", 0),
			"field resources.cpus: 2 is above the ceiling of 1 (defaults.cpus in the config); ask for 1 or less, or leave it out to get the ceiling"},
		{"more memory", podfile("resources: {memory: 1g}\n", 0),
			`field resources.memory: "1g" is above the ceiling of 256m (defaults.memory in the config); ask for 256m or less, or leave it out to get the ceiling`},
		{"a service with more memory", podfile("", 0) + "services:\n  - {name: db, image: " + harness.Image + ", resources: {memory: 512m}}\n",
			`field services[0].resources.memory: "512m" is above the ceiling of 256m`},
		{"too many services", podfile("", 3),
			"field services: 3 service(s), more than the 2 allowed per project (resources.max_services_per_project in the config)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := harness.Uniq("pjbig")
			r := e.Run("add-project", name, "--repo", e.newRepo(map[string]string{"podfile.yaml": tc.podfile}))
			if r.Code != 1 || !strings.Contains(r.Stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q; want 1 and %q", r.Code, r.Stderr, tc.want)
			}
			if _, ok := e.registry()[name]; ok {
				t.Errorf("project %s registered", name)
			}
		})
	}

	// Less than the ceilings: the session gets what it asks, the service
	// without resources the ceilings.
	repo := e.newRepo(map[string]string{"podfile.yaml": podfile("resources: {cpus: 0.5, memory: 128m}\n", 1)})
	e.addProject("lim", repo)
	key := desired.SessionKey{User: user, Project: "lim"}
	e.mustSpawn(user, "lim", "true")
	ctr := desired.ContainerName(key)
	e.wantLimits(ctr, 0.5, 128<<20)
	e.wantLimits(ctr+"-s0", 1, 256<<20)

	// update-project refuses more and leaves the project as it was.
	e.commit(repo, map[string]string{"podfile.yaml": podfile("resources: {cpus: 2}\n", 1)})
	r := e.Run("update-project", "lim")
	if r.Code != 1 || !strings.Contains(r.Stderr, "field resources.cpus: 2 is above the ceiling of 1") || !strings.Contains(r.Stderr, "project lim is unchanged") {
		t.Fatalf("update-project over the ceiling: exit %d, stderr %q", r.Code, r.Stderr)
	}

	// The clone edited by hand (or the ceilings lowered after add-project):
	// a new session still gets the ceilings.
	clonePodfile := filepath.Join(e.projectsDir(), "lim", "podfile.yaml")
	if err := os.WriteFile(clonePodfile, []byte(podfile("resources: {cpus: 2, memory: \"0\"}\n", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	e.MustRun("stop", key.String())
	e.mustSpawn(user, "lim", "true")
	e.wantLimits(ctr, 1, 256<<20)
	e.wantLimits(ctr+"-s0", 1, 256<<20)

	// Without a CPU ceiling, the host's CPUs are one: Docker would refuse
	// every session of a project that asks for more.
	cfg, err := os.ReadFile(e.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cfg), "\n  cpus: 1\n") {
		t.Fatalf("the harness config no longer sets defaults.cpus 1:\n%s", cfg)
	}
	if err := os.WriteFile(e.ConfigPath, []byte(strings.Replace(string(cfg), "\n  cpus: 1\n", "\n  cpus: 0\n", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	n := runtime.NumCPU()
	r = e.Run("add-project", harness.Uniq("pjcpu"), "--repo", e.newRepo(map[string]string{"podfile.yaml": podfile(fmt.Sprintf("resources: {cpus: %d}\n", n+1), 0)}))
	if want := fmt.Sprintf("field resources.cpus: %d is more than the %d CPU(s) of this host; ask for %d or less", n+1, n, n); r.Code != 1 || !strings.Contains(r.Stderr, want) {
		t.Fatalf("add-project asking for more CPUs than the host: exit %d, stderr %q; want %q", r.Code, r.Stderr, want)
	}
}

// wantLimits checks a container's CPU and memory limits as Docker has them.
func (e *env) wantLimits(name string, cpus float64, memory int64) {
	e.t.Helper()
	info, err := e.dc.ContainerInspect(context.Background(), name)
	if err != nil {
		e.t.Fatal(err)
	}
	if got, want := info.HostConfig.NanoCPUs, int64(cpus*1e9); got != want || info.HostConfig.Memory != memory {
		e.t.Errorf("%s: NanoCPUs %d memory %d, want %d and %d", name, got, info.HostConfig.Memory, want, memory)
	}
}
