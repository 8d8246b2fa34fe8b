package projects

import (
	"fmt"
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
	mode, err := pf.Apply(&spec, key, pf.Tag("backend"), Limits{CPUs: 2, MemoryBytes: 2 << 30, MaxServices: 8, MaxVolumes: 4})
	if err != nil {
		t.Fatal(err)
	}
	want := desired.Spec{
		Image: pf.Tag("backend"), Shell: "/bin/zsh", CPUs: 1.5, MemoryBytes: 512 << 20, ContainerName: "podspawn-alice-backend",
		Env:      []string{"WHO=alice@backend", "PODSPAWN_USER=alice", "PODSPAWN_PROJECT=backend"},
		OnCreate: "echo made for alice", OnStart: "echo hi",
		Services: []desired.Service{{
			Name: "postgres", Image: "pg:16", Env: []string{"POSTGRES_USER=alice"}, Command: []string{"postgres", "-c", "fsync=off"},
			Volumes: []desired.VolumeMount{{Name: "pgdata", Target: "/var/lib/postgresql/data"}}, CPUs: 2, MemoryBytes: 256 << 20,
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

// TestReadPodfileStaysInTheClone: a repository controls its clone, links
// included. What resolves outside the clone is refused, never read.
func TestReadPodfileStaysInTheClone(t *testing.T) {
	const secret = "root:$6$secret:19000:0:99999:7:::\n"
	good := "base: img:1\n"
	cases := map[string]struct {
		setup   func(t *testing.T, clone, outside string)
		rel     string // "" means: found with Find
		wantErr string // "" means: reads good
	}{
		"plain file": {
			setup: func(t *testing.T, clone, _ string) { write(t, filepath.Join(clone, "podfile.yaml"), good) },
		},
		"link inside the clone": {
			setup: func(t *testing.T, clone, _ string) {
				write(t, filepath.Join(clone, "conf", "pod.yaml"), good)
				link(t, "conf/pod.yaml", filepath.Join(clone, "podfile.yaml"))
			},
		},
		"absolute link out": {
			setup:   func(t *testing.T, clone, outside string) { link(t, outside, filepath.Join(clone, "podfile.yaml")) },
			wantErr: `podfile "podfile.yaml" in the clone CLONE resolves outside the clone (a symbolic link to "OUTSIDE"); podspawn reads nothing from outside a project's clone: make it a plain file in the repository`,
		},
		"relative link out": {
			setup: func(t *testing.T, clone, _ string) {
				link(t, "../../shadow", filepath.Join(clone, ".podspawn", "podfile.yaml"))
			},
			wantErr: `podfile ".podspawn/podfile.yaml" in the clone CLONE resolves outside the clone (a symbolic link to "../../shadow")`,
		},
		"directory link out": {
			setup: func(t *testing.T, clone, outside string) {
				write(t, filepath.Join(filepath.Dir(outside), "podfile.yaml"), secret)
				os.Remove(filepath.Join(clone, ".podspawn"))
				link(t, filepath.Dir(outside), filepath.Join(clone, ".podspawn"))
			},
			wantErr: `podfile ".podspawn/podfile.yaml" in the clone CLONE resolves outside the clone; podspawn reads nothing`,
		},
		"registered path out": {
			setup:   func(t *testing.T, clone, _ string) { write(t, filepath.Join(clone, "podfile.yaml"), good) },
			rel:     "../shadow",
			wantErr: `podfile "../shadow" in the clone CLONE resolves outside the clone;`,
		},
		"link out found by Find is refused, not skipped": {
			setup: func(t *testing.T, clone, outside string) {
				link(t, outside, filepath.Join(clone, "podfile.yaml"))
				write(t, filepath.Join(clone, ".podspawn", "podfile.yaml"), good)
			},
			wantErr: `"podfile.yaml" in the clone CLONE resolves outside the clone (a symbolic link to "OUTSIDE")`,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			clone, outside := filepath.Join(dir, "clone"), filepath.Join(dir, "shadow")
			write(t, outside, secret)
			if err := os.MkdirAll(filepath.Join(clone, ".podspawn"), 0o755); err != nil {
				t.Fatal(err)
			}
			tc.setup(t, clone, outside)
			rel, err := tc.rel, error(nil)
			if rel == "" {
				rel, err = Find(clone)
			}
			var pf *Podfile
			if err == nil {
				pf, err = ReadPodfile(clone, rel)
			}
			if tc.wantErr == "" {
				if err != nil || pf.Base != "img:1" {
					t.Fatalf("got %+v, %v; want the Podfile", pf, err)
				}
				return
			}
			want := strings.NewReplacer("CLONE", clone, "OUTSIDE", outside).Replace(tc.wantErr)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("got %v\nwant an error containing %s", err, want)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("the error shows the file outside: %v", err)
			}
		})
	}
}

func write(t *testing.T, p, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func link(t *testing.T, target, p string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
}

// Errors quote what the Podfile says: no raw control character or escape
// sequence reaches the operator's terminal.
func TestPodfileErrorsQuoteTheFilesText(t *testing.T) {
	cases := map[string]struct{ yaml, want string }{
		"escape sequence in an unknown key": {"base: x\n\"\\e]0;pwned\\a\\e[2J\": 1\n", `field \x1b]0;pwned\a\x1b[2J not found`},
		"escape sequence in the base":       {"base: \"ubuntu\\e[31m\"\n", `field base: "ubuntu\x1b[31m" is not an image reference`},
		"bidi override in a service name":   {"base: x\nservices:\n  - name: \"db\\u202e\"\n    image: y\n", `field services[0].name: "db\u202e" must match`},
		"C1 control in an env key":          {"base: x\nenv:\n  \"A\\x9b2J\": v\n", `field env: "A\u009b2J" is not a valid variable name`},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := ParsePodfile([]byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %s", err, tc.want)
			}
			for _, r := range err.Error() {
				if r < 0x20 || r == 0x7f || r == 0x202e {
					t.Fatalf("raw control character %U in %q", r, err.Error())
				}
			}
		})
	}
}

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"plain text, with `quotes` and \"these\"": "plain text, with `quotes` and \"these\"",
		"\x1b[31mred\x1b[0m":                      `\x1b[31mred\x1b[0m`,
		"tab\tnewline\nbell\a":                    `tab\tnewline\nbell\a`,
		"bad \xff byte":                           `bad \xff byte`,
		"right-to-left \u202e override":           `right-to-left \u202e override`,
		"ünïcödé and 日本語":                         "ünïcödé and 日本語",
	} {
		if got := Printable(in); got != want {
			t.Errorf("Printable(%q) = %s, want %s", in, got, want)
		}
	}
}

// ceilings are the config of issue 12: defaults.cpus 1, memory 256m.
var ceilings = Limits{CPUs: 1, MemoryBytes: 256 << 20, Memory: "256m", MaxServices: 8, MaxVolumes: 4, HostCPUs: 2}

// TestApplyKeepsTheCeilings: the config's limits are ceilings that a
// Podfile may only tighten, for the session and for every service.
func TestApplyKeepsTheCeilings(t *testing.T) {
	type limits struct {
		CPUs     float64
		Memory   int64
		Services [][2]float64 // cpus, memory
	}
	cases := map[string]struct {
		podfile string
		limits  Limits
		want    limits
	}{
		"asks for more and for memory 0 (the issue's Podfile)": {
			podfile: "resources: {cpus: 2, memory: \"0\"}\nservices:\n  - {name: db, image: y}\n",
			limits:  ceilings,
			want:    limits{CPUs: 1, Memory: 256 << 20, Services: [][2]float64{{1, 256 << 20}}},
		},
		"asks for less": {
			podfile: "resources: {cpus: 0.5, memory: 128m}\nservices:\n  - {name: db, image: y, resources: {cpus: 0.25}}\n  - {name: cache, image: y, resources: {memory: 64m}}\n",
			limits:  ceilings,
			want:    limits{CPUs: 0.5, Memory: 128 << 20, Services: [][2]float64{{0.25, 256 << 20}, {1, 64 << 20}}},
		},
		"asks for nothing": {
			podfile: "services:\n  - {name: db, image: y}\n",
			limits:  ceilings,
			want:    limits{CPUs: 1, Memory: 256 << 20, Services: [][2]float64{{1, 256 << 20}}},
		},
		"no ceilings in the config": {
			podfile: "resources: {cpus: 1.5, memory: 1g}\nservices:\n  - {name: db, image: y}\n",
			limits:  Limits{MaxServices: 8},
			want:    limits{CPUs: 1.5, Memory: 1 << 30, Services: [][2]float64{{0, 0}}},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			pf, err := ParsePodfile([]byte("base: img:1\n" + tc.podfile))
			if err != nil {
				t.Fatal(err)
			}
			spec := desired.Spec{CPUs: tc.limits.CPUs, MemoryBytes: tc.limits.MemoryBytes}
			if _, err := pf.Apply(&spec, desired.SessionKey{User: "alice", Project: "p"}, "img", tc.limits); err != nil {
				t.Fatal(err)
			}
			got := limits{CPUs: spec.CPUs, Memory: spec.MemoryBytes}
			for _, s := range spec.Services {
				got.Services = append(got.Services, [2]float64{s.CPUs, float64(s.MemoryBytes)})
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("limits (-want +got):\n%s", diff)
			}
		})
	}

	// More services than allowed: no spec, whatever was registered.
	pf, _ := ParsePodfile([]byte("base: x\nservices:\n  - {name: a, image: y}\n  - {name: b, image: y}\n"))
	l := ceilings
	l.MaxServices = 1
	if _, err := pf.Apply(&desired.Spec{}, desired.SessionKey{User: "alice", Project: "p"}, "img", l); err == nil ||
		err.Error() != "2 service(s), more than the 1 allowed per project (resources.max_services_per_project)" {
		t.Errorf("Apply with too many services: %v", err)
	}
	pf, _ = ParsePodfile([]byte("base: x\nservices:\n  - {name: a, image: y, volumes: [\"v1:/a\", \"v2:/b\"]}\n"))
	l = ceilings
	l.MaxVolumes = 1
	if _, err := pf.Apply(&desired.Spec{}, desired.SessionKey{User: "alice", Project: "p"}, "img", l); err == nil ||
		err.Error() != "2 named volume(s), more than the 1 allowed per project (resources.max_volumes_per_project)" {
		t.Errorf("Apply with too many volumes: %v", err)
	}
}

// TestCheckLimits: add-project and update-project refuse a Podfile that
// asks for more than a ceiling or the host, naming field, value and limit.
func TestCheckLimits(t *testing.T) {
	svc := func(n int) string {
		var b strings.Builder
		b.WriteString("services:\n")
		for i := range n {
			fmt.Fprintf(&b, "  - {name: s%d, image: y}\n", i)
		}
		return b.String()
	}
	noCeiling := ceilings
	noCeiling.CPUs, noCeiling.MemoryBytes, noCeiling.Memory = 0, 0, "0"
	none := ceilings
	none.MaxServices = 0
	diskCeiling := ceilings
	diskCeiling.DiskBytes, diskCeiling.Disk = 10<<30, "10g"
	cases := map[string]struct {
		podfile string
		limits  Limits
		want    string // "" means accepted
	}{
		"within":                  {"resources: {cpus: 1, memory: 256m}\n" + svc(8), ceilings, ""},
		"memory 0 is the ceiling": {"resources: {memory: \"0\"}\n", ceilings, ""},
		"cpus above":              {"resources: {cpus: 2}\n", ceilings, "field resources.cpus: 2 is above the ceiling of 1 (defaults.cpus in the config); ask for 1 or less, or leave it out to get the ceiling"},
		"memory above":            {"resources: {memory: 1g}\n", ceilings, `field resources.memory: "1g" is above the ceiling of 256m (defaults.memory in the config); ask for 256m or less, or leave it out to get the ceiling`},
		"service cpus above": {"services:\n  - {name: db, image: y}\n  - {name: x, image: y, resources: {cpus: 1.5}}\n", ceilings,
			"field services[1].resources.cpus: 1.5 is above the ceiling of 1 (defaults.cpus in the config)"},
		"service memory above": {"services:\n  - {name: db, image: y, resources: {memory: 300m}}\n", ceilings,
			`field services[0].resources.memory: "300m" is above the ceiling of 256m`},
		"more CPUs than the host":                   {"resources: {cpus: 64}\n", noCeiling, "field resources.cpus: 64 is more than the 2 CPU(s) of this host; ask for 2 or less"},
		"too many services":                         {svc(9), ceilings, "field services: 9 service(s), more than the 8 allowed per project (resources.max_services_per_project in the config)"},
		"no services allowed":                       {svc(1), none, "field services: 1 service(s), more than the 0 allowed per project"},
		"volumes within (a shared one counts once)": {"services:\n  - {name: a, image: y, volumes: [\"v1:/a\", \"v2:/b\"]}\n  - {name: b, image: y, volumes: [\"v1:/c\", \"v3:/d\", \"v4:/e\"]}\n", ceilings, ""},
		"too many volumes": {"services:\n  - {name: a, image: y, volumes: [\"v1:/a\", \"v2:/b\", \"v3:/c\"]}\n  - {name: b, image: y, volumes: [\"v4:/d\", \"v5:/e\"]}\n", ceilings,
			"field services[].volumes: 5 named volume(s), more than the 4 allowed per project (resources.max_volumes_per_project in the config)"},
		"no ceilings": {"resources: {cpus: 2, memory: 64g}\n", noCeiling, ""},
		"disk within": {"resources: {disk: 5g}\n", diskCeiling, ""},
		"disk above": {"resources: {disk: 20g}\n", diskCeiling,
			`field resources.disk: "20g" is above the ceiling of 10g (defaults.disk in the config); ask for 10g or less, or leave it out to get the ceiling`},
		"service disk above": {"services:\n  - {name: db, image: y, resources: {disk: 11g}}\n", diskCeiling,
			`field services[0].resources.disk: "11g" is above the ceiling of 10g`},
		"bad disk":         {"resources: {disk: lots}\n", diskCeiling, `field resources.disk: invalid size "lots"`},
		"disk, no ceiling": {"resources: {disk: 500g}\n", ceilings, ""},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			pf, err := ParsePodfile([]byte("base: x\n" + tc.podfile))
			if err != nil {
				t.Fatal(err)
			}
			err = pf.CheckLimits(tc.limits)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v\nwant an error containing %s", err, tc.want)
			}
		})
	}
	for _, bad := range []string{".nan", ".inf", "-1"} {
		if _, err := ParsePodfile([]byte("base: x\nresources: {cpus: " + bad + "}\n")); err == nil || !strings.Contains(err.Error(), "field resources.cpus") {
			t.Errorf("cpus %s: %v", bad, err)
		}
	}
}

// TestApplyDiskCeiling: the disk limit is a ceiling like memory, for the
// session and every service.
func TestApplyDiskCeiling(t *testing.T) {
	l := ceilings
	l.DiskBytes, l.Disk = 10<<30, "10g"
	pf, err := ParsePodfile([]byte("base: x\nresources: {disk: 2g}\nservices:\n  - {name: db, image: y}\n  - {name: c, image: y, resources: {disk: 1g}}\n  - {name: d, image: y, resources: {disk: 20g}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	var spec desired.Spec
	if _, err := pf.Apply(&spec, desired.SessionKey{User: "alice", Project: "p"}, "img", l); err != nil {
		t.Fatal(err)
	}
	got := []int64{spec.DiskBytes}
	for _, s := range spec.Services {
		got = append(got, s.DiskBytes)
	}
	if diff := cmp.Diff([]int64{2 << 30, 10 << 30, 1 << 30, 10 << 30}, got); diff != "" {
		t.Fatalf("disk limits of the session and its services (-want +got):\n%s", diff)
	}
}
