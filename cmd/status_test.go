package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/podspawn/podspawn/desired"
)

// seedStatusDocker gives the fake daemon three podspawn containers in
// various states (all counted) and one unlabelled container (not counted).
func seedStatusDocker(e *adminEnv) {
	f := e.docker
	f.containers = append(f.containers,
		container.Summary{ID: "c1", Names: []string{"/podspawn-alice-backend"}, State: container.StateRunning, Labels: map[string]string{"managed-by": "podspawn"}},
		container.Summary{ID: "c2", Names: []string{"/podspawn-alice-backend-db"}, State: container.StateRunning, Labels: map[string]string{"managed-by": "podspawn"}},
		container.Summary{ID: "c3", Names: []string{"/podspawn-zed"}, State: container.StateExited, Labels: map[string]string{"managed-by": "podspawn"}},
		container.Summary{ID: "c4", Names: []string{"/someone-else"}, State: container.StateRunning, Labels: map[string]string{"app": "web"}},
	)
}

const unreachableDocker = "unix:///nonexistent/docker.sock"

func TestStatusGolden(t *testing.T) {
	for _, tc := range []struct {
		name        string
		seed        bool
		unreachable bool
		args        []string
	}{
		{"status_empty", false, false, []string{"status"}},
		{"status_sessions", true, false, []string{"status"}},
		{"status_sessions_unreachable", true, true, []string{"status"}},
		{"status_empty_unreachable", false, true, []string{"status"}},
		{"status_prometheus_empty", false, false, []string{"status", "--prometheus"}},
		{"status_prometheus", true, false, []string{"status", "--prometheus"}},
		{"status_prometheus_unreachable", true, true, []string{"status", "--prometheus"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newAdminEnv(t)
			seedStatusDocker(e)
			if tc.seed {
				seedListSessions(e)
			}
			if tc.unreachable {
				t.Setenv("DOCKER_HOST", unreachableDocker)
			}
			golden(t, tc.name, e.run(tc.args...))
		})
	}
}

// A session older than 11.5 days has an age of at least 1e6 seconds,
// which the exposition format prints in exponent notation.
func TestStatusPrometheusOldSession(t *testing.T) {
	e := newAdminEnv(t)
	e.seed(session("ivan", "", desired.StatusRunning, 14*24*time.Hour, 8*time.Hour))
	golden(t, "status_prometheus_old", e.run("status", "--prometheus"))
}

func TestStatusOutputFile(t *testing.T) {
	e := newAdminEnv(t)
	seedStatusDocker(e)
	seedListSessions(e)
	dir := filepath.Join(e.root, "textfile")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "podspawn.prom")
	if err := os.WriteFile(out, []byte("old content\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	golden(t, "status_output_file", e.run("status", "--prometheus", "--output-file", out))
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "status_output_file_content", string(data))
	fi, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("mode of %s = %v, want 0644 (collectors run as other users)", out, fi.Mode().Perm())
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("textfile dir holds %v, want only podspawn.prom (no temporary file left)", names)
	}

	// An unwritable destination is an error, not a silent success.
	golden(t, "status_output_file_missing_dir", e.run("status", "--output-file", filepath.Join(e.root, "nope", "podspawn.prom")))
}

// The example of the admin commands page, reproduced exactly.
func TestStatusPageExample(t *testing.T) {
	e := newAdminEnv(t)
	seedStatusDocker(e)
	alice := session("alice", "backend", desired.StatusRunning, 150*time.Minute, 8*time.Hour)
	bob := session("bob", "", desired.StatusGrace, 45*time.Minute, 8*time.Hour)
	bob.GraceExpiry = t0.Add(30 * time.Second)
	carol := session("carol", "frontend", desired.StatusRunning, 5*time.Minute, 8*time.Hour)
	e.seed(alice, bob, carol)
	e.lease(alice, true)
	e.lease(alice, true)
	e.lease(alice, true)
	e.lease(carol, true)
	golden(t, "status_page_example", e.run("status")+e.run("status", "--prometheus"))
}
