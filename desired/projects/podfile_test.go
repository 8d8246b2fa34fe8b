package projects

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/desired"
)

func TestParsePodfileErrorsNameTheField(t *testing.T) {
	cases := map[string]struct{ yaml, want string }{
		"missing base":        {"shell: /bin/sh\n", "field base"},
		"base injects a step": {"base: \"ubuntu:24.04\\nRUN id > /x\"\n", "field base: \"ubuntu:24.04\\nRUN id > /x\" is not an image reference"},
		"service bad image":   {"base: x\nservices:\n  - name: db\n    image: \"Postgres 16\"\n", "field services[0].image"},
		"relative shell":      {"base: x\nshell: sh\n", "field shell"},
		"bad mode":            {"base: x\nmode: forever\n", "field mode"},
		"bad env key":         {"base: x\nenv:\n  1BAD: v\n", "field env"},
		"bad memory":          {"base: x\nresources:\n  memory: lots\n", "field resources.memory"},
		"service no name":     {"base: x\nservices:\n  - image: y\n", "field services[0].name"},
		"service bad name":    {"base: x\nservices:\n  - name: Bad_Name\n    image: y\n", "field services[0].name"},
		"service no image":    {"base: x\nservices:\n  - name: db\n", "field services[0].image"},
		"duplicate service":   {"base: x\nservices:\n  - name: db\n    image: y\n  - name: db\n    image: y\n", "field services[1].name: duplicate"},
		"host path volume":    {"base: x\nservices:\n  - name: db\n    image: y\n    volumes: [\"/etc:/data\"]\n", "host paths are not allowed"},
		"volume no target":    {"base: x\nservices:\n  - name: db\n    image: y\n    volumes: [\"data\"]\n", "field services[0].volumes[0]"},
		"relative target":     {"base: x\nservices:\n  - name: db\n    image: y\n    volumes: [\"data:rel\"]\n", "absolute path"},
		"unknown field":       {"base: x\npackages: [vim]\n", "field packages not found"},
		"not yaml":            {"base: [\n", "did not find expected"},
		"service bad memory":  {"base: x\nservices:\n  - name: db\n    image: y\n    resources:\n      memory: x\n", "field services[0].resources.memory"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := ParsePodfile([]byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestApplyBuildsTheSessionSpec(t *testing.T) {
	pf, err := ParsePodfile([]byte(`base: img:1
shell: /bin/zsh
env:
  WHO: "${PODSPAWN_USER}@${PODSPAWN_PROJECT}"
resources:
  cpus: 1.5
  memory: 512m
mode: persistent
services:
  - name: postgres
    image: pg:16
    env: {POSTGRES_USER: "${PODSPAWN_USER}"}
    command: [postgres, -c, fsync=off]
    volumes: ["pgdata:/var/lib/postgresql/data"]
    resources: {memory: 256m}
on_create: echo made for ${PODSPAWN_USER}
on_start: echo hi
`))
	if err != nil {
		t.Fatal(err)
	}
	key := desired.SessionKey{User: "alice", Project: "backend"}
	spec := desired.Spec{Image: "default", Shell: "/bin/sh", CPUs: 2, MemoryBytes: 2 << 30, ContainerName: "podspawn-alice-backend"}
	mode, err := pf.Apply(&spec, key, pf.Tag("backend"))
	if err != nil {
		t.Fatal(err)
	}
	want := desired.Spec{
		Image: pf.Tag("backend"), Shell: "/bin/zsh", CPUs: 1.5, MemoryBytes: 512 << 20, ContainerName: "podspawn-alice-backend",
		Env:      []string{"WHO=alice@backend", "PODSPAWN_USER=alice", "PODSPAWN_PROJECT=backend"},
		OnCreate: "echo made for alice", OnStart: "echo hi",
		Services: []desired.Service{{
			Name: "postgres", Image: "pg:16", Env: []string{"POSTGRES_USER=alice"}, Command: []string{"postgres", "-c", "fsync=off"},
			Volumes: []desired.VolumeMount{{Name: "pgdata", Target: "/var/lib/postgresql/data"}}, MemoryBytes: 256 << 20,
		}},
	}
	if diff := cmp.Diff(want, spec); diff != "" {
		t.Fatalf("spec (-want +got):\n%s", diff)
	}
	if mode != desired.ModePersistent {
		t.Fatalf("mode = %q", mode)
	}
}

func TestTagDependsOnlyOnBytes(t *testing.T) {
	a, _ := ParsePodfile([]byte("base: x\n"))
	b, _ := ParsePodfile([]byte("base: x\n"))
	c, _ := ParsePodfile([]byte("base: x # changed\n"))
	if a.Tag("p") != b.Tag("p") || a.Tag("p") == c.Tag("p") {
		t.Fatalf("tags: %s %s %s", a.Tag("p"), b.Tag("p"), c.Tag("p"))
	}
	if !strings.HasPrefix(a.Tag("p"), "podspawn/p:podfile-") || len(a.Tag("p")) != len("podspawn/p:podfile-")+12 {
		t.Fatalf("tag format: %s", a.Tag("p"))
	}
}

func TestRegistryRoundTripAndErrors(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "projects.yaml")
	reg, err := Load(p)
	if err != nil || len(reg) != 0 {
		t.Fatalf("missing file: %v %v", reg, err)
	}
	reg["backend"] = Project{Repo: "r", LocalPath: "/x", ImageTag: "podspawn/backend:podfile-0123456789ab", Mode: desired.ModePersistent}
	if err := reg.Save(p); err != nil {
		t.Fatal(err)
	}
	got, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(reg, got); diff != "" {
		t.Fatal(diff)
	}
	for name, body := range map[string]string{
		"bad name": "Bad:\n  repo: r\n",
		"bad mode": "ok:\n  mode: sometimes\n",
		"unknown":  "ok:\n  colour: red\n",
		"garbage":  "[\n",
	} {
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(p); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: got %v, want an error naming the file", name, err)
		}
	}
}
