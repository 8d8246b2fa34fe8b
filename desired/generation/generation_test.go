package generation

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/config"
	"github.com/podspawn/podspawn/desired/projects"
)

const testPodfile = `base: img:1
shell: /bin/zsh
env:
  WHO: "${PODSPAWN_USER}@${PODSPAWN_PROJECT}"
resources: {cpus: 1.5, memory: 512m}
services:
  - name: db
    image: pg:16
    env: {U: "${PODSPAWN_USER}"}
    volumes: ["data:/var/lib/db"]
on_create: echo made for ${PODSPAWN_USER}
on_start: echo hi
`

// projectConfig registers project "backend" with podfile in a temp dir.
func projectConfig(t *testing.T, podfile string, p projects.Project) config.Config {
	t.Helper()
	dir := t.TempDir()
	clone := filepath.Join(dir, "projects", "backend")
	if err := os.MkdirAll(clone, 0o755); err != nil {
		t.Fatal(err)
	}
	if podfile != "" {
		if err := os.WriteFile(filepath.Join(clone, "podfile.yaml"), []byte(podfile), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p.LocalPath = clone
	if p.ImageTag == "" {
		p.ImageTag = "podspawn/backend:podfile-0123456789ab"
	}
	cfg := config.Defaults()
	cfg.ProjectsFile = filepath.Join(dir, "projects.yaml")
	if err := (projects.Registry{"backend": p}).Save(cfg.ProjectsFile); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestNewGenerationOfAProject(t *testing.T) {
	cfg := projectConfig(t, testPodfile, projects.Project{PodfilePath: "podfile.yaml"})
	now := time.Date(2026, 11, 29, 7, 0, 0, 0, time.UTC)
	key := desired.SessionKey{User: "alice", Project: "backend"}
	got, err := New(cfg, key, now)
	if err != nil {
		t.Fatal(err)
	}
	want := &desired.Session{
		Key: key, ID: got.ID, Mode: desired.ModeGracePeriod, Status: desired.StatusCreating,
		CreatedAt: now, MaxLifetimeAt: now.Add(8 * time.Hour), GracePeriod: time.Minute,
		Spec: desired.Spec{
			Image: "podspawn/backend:podfile-0123456789ab", Shell: "/bin/zsh", CPUs: 1.5, MemoryBytes: 512 << 20,
			Env:      []string{"WHO=alice@backend", "PODSPAWN_USER=alice", "PODSPAWN_PROJECT=backend"},
			Hostname: "backend", ContainerName: "podspawn-alice-backend", NetworkName: "podspawn-alice-backend-net",
			Security: cfg.SecuritySpec(),
			// A service without resources gets the config's ceilings.
			Services: []desired.Service{{Name: "db", Image: "pg:16", Env: []string{"U=alice"},
				Volumes: []desired.VolumeMount{{Name: "data", Target: "/var/lib/db"}}, CPUs: 2, MemoryBytes: 2 << 30}},
			OnCreate: "echo made for alice", OnStart: "echo hi",
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("newGeneration mismatch (-want +got):\n%s", diff)
	}
}

func TestProjectModePrecedence(t *testing.T) {
	tests := []struct {
		registry desired.Mode
		podfile  string
		config   desired.Mode
		want     desired.Mode
	}{
		{"", "", desired.ModeGracePeriod, desired.ModeGracePeriod},
		{"", "", desired.ModePersistent, desired.ModePersistent},
		{"", "destroy-on-disconnect", desired.ModePersistent, desired.ModeDestroyOnDisconnect},
		{desired.ModePersistent, "destroy-on-disconnect", desired.ModeGracePeriod, desired.ModePersistent},
		{desired.ModeGracePeriod, "", desired.ModeDestroyOnDisconnect, desired.ModeGracePeriod},
	}
	for _, tc := range tests {
		name := fmt.Sprintf("registry=%q podfile=%q config=%q", tc.registry, tc.podfile, tc.config)
		t.Run(name, func(t *testing.T) {
			pf := "base: img:1\n"
			if tc.podfile != "" {
				pf += "mode: " + tc.podfile + "\n"
			}
			cfg := projectConfig(t, pf, projects.Project{Mode: tc.registry})
			cfg.Session.Mode = tc.config
			_, got, _, err := resolveSpec(cfg, desired.SessionKey{User: "alice", Project: "backend"})
			if err != nil || got != tc.want {
				t.Fatalf("mode = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestResolveProjectErrors(t *testing.T) {
	key := desired.SessionKey{User: "alice", Project: "backend"}
	tests := map[string]struct {
		cfg  func(t *testing.T) config.Config
		want string
	}{
		"unregistered": {
			cfg: func(t *testing.T) config.Config {
				cfg := projectConfig(t, "base: x\n", projects.Project{})
				return cfg
			},
			want: `project "web" is not registered on this server; ask an admin to run podspawn add-project`,
		},
		"no registry at all": {
			cfg: func(t *testing.T) config.Config {
				cfg := config.Defaults()
				cfg.ProjectsFile = filepath.Join(t.TempDir(), "missing.yaml")
				return cfg
			},
			want: `project "web" is not registered on this server`,
		},
		"broken registry": {
			cfg: func(t *testing.T) config.Config {
				cfg := config.Defaults()
				cfg.ProjectsFile = filepath.Join(t.TempDir(), "projects.yaml")
				os.WriteFile(cfg.ProjectsFile, []byte("web: [\n"), 0o644)
				return cfg
			},
			want: "projects file",
		},
		"podfile gone": {
			cfg: func(t *testing.T) config.Config {
				return projectConfig(t, "", projects.Project{PodfilePath: "podfile.yaml"})
			},
			want: "does not exist; an admin must fix it and run: podspawn update-project backend",
		},
		"no podfile found": {
			cfg:  func(t *testing.T) config.Config { return projectConfig(t, "", projects.Project{}) },
			want: "project backend: no podfile found",
		},
		"podfile invalid": {
			cfg:  func(t *testing.T) config.Config { return projectConfig(t, "shell: sh\n", projects.Project{}) },
			want: "field base",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			k := key
			if strings.HasPrefix(name, "unregistered") || strings.HasPrefix(name, "no registry") || strings.HasPrefix(name, "broken") {
				k.Project = "web"
			}
			_, _, _, err := resolveSpec(tc.cfg(t), k)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("resolveSpec(%s) error = %v, want it to contain %q", k, err, tc.want)
			}
		})
	}
}

func TestNewGeneration(t *testing.T) {
	cfg := config.Defaults()
	cfg.Session.Mode = desired.ModeDestroyOnDisconnect
	now := time.Date(2026, 11, 29, 7, 0, 0, 0, time.UTC)
	// Project sessions resolve from the registry: project_test.go.
	for _, key := range []desired.SessionKey{{User: "alice"}} {
		got, err := New(cfg, key, now)
		if err != nil {
			t.Fatal(err)
		}
		if len(got.ID) != 32 {
			t.Errorf("ID %q: want 32 hex chars", got.ID)
		}
		host := key.Project
		if host == "" {
			host = key.User
		}
		want := &desired.Session{
			Key: key, ID: got.ID, Mode: desired.ModeDestroyOnDisconnect, Status: desired.StatusCreating,
			CreatedAt: now, MaxLifetimeAt: now.Add(8 * time.Hour), GracePeriod: time.Minute,
			Spec: desired.Spec{
				Image: "ubuntu:24.04", Shell: "/bin/bash", CPUs: 2, MemoryBytes: 2 << 30, Hostname: host,
				ContainerName: desired.ContainerName(key), NetworkName: desired.NetworkName(key), Security: cfg.SecuritySpec(),
			},
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("New(%s) mismatch (-want +got):\n%s", key, diff)
		}
	}
}

// TestGenerationMounts: the agent mount comes with ssh.allow_agent_forwarding
// unless the project opts out; persistent mode brings the home mount, per
// project below the user's home.
func TestGenerationMounts(t *testing.T) {
	off := false
	tests := map[string]struct {
		project projects.Project
		agent   bool
		want    []desired.Mount
	}{
		"forwarding on, persistent project": {projects.Project{Mode: desired.ModePersistent}, true, []desired.Mount{
			{Source: "/h/alice/backend", Target: "/home/alice", Prepare: desired.PrepareHome},
			{Source: "/a/SESSION", Target: desired.AgentMountTarget, Prepare: desired.PrepareAgentDir},
		}},
		"project opts out of forwarding": {projects.Project{AgentForwarding: &off}, true, nil},
		"forwarding off":                 {projects.Project{}, false, nil},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cfg := projectConfig(t, "base: img:1\n", tc.project)
			cfg.SSH.AllowAgentForwarding = tc.agent
			cfg.State.HomesDir, cfg.State.AgentDir = "/h", "/a"
			s, err := New(cfg, desired.SessionKey{User: "alice", Project: "backend"}, time.Unix(0, 0))
			if err != nil {
				t.Fatal(err)
			}
			got := s.Spec.Mounts
			for i := range got {
				got[i].Source = strings.Replace(got[i].Source, s.ID, "SESSION", 1)
			}
			if diff := cmp.Diff(tc.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Fatalf("mounts (-want +got):\n%s", diff)
			}
		})
	}
}
