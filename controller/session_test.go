package controller

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-logr/logr"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/config"
	"github.com/podspawn/podspawn/desired/projects"
)

// imageAnswer answers ImageExists from err (a missing image is ok=false).
type imageAnswer struct {
	missing bool
	err     error
}

func (i imageAnswer) ImageExists(context.Context, string) (bool, error) {
	return !i.missing && i.err == nil, i.err
}

// projectConfig registers project "backend" with podfile in a temp dir.
func projectConfig(t *testing.T, podfile string, p projects.Project) config.Config {
	t.Helper()
	dir := t.TempDir()
	clone := filepath.Join(dir, "projects", "backend")
	if err := os.MkdirAll(clone, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(clone, "podfile.yaml"), []byte(podfile), 0o644); err != nil {
		t.Fatal(err)
	}
	p.LocalPath = clone
	cfg := config.Defaults()
	cfg.ProjectsFile = filepath.Join(dir, "projects.yaml")
	if err := (projects.Registry{"backend": p}).Save(cfg.ProjectsFile); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestCheckProject(t *testing.T) {
	const tag = "podspawn/backend:podfile-0123456789ab"
	tests := map[string]struct {
		key   desired.SessionKey
		image imageAnswer
		want  string
	}{
		"default session needs nothing": {key: desired.SessionKey{User: "alice"}, image: imageAnswer{err: errors.New("not asked")}},
		"image present":                 {key: desired.SessionKey{User: "alice", Project: "backend"}},
		"image missing":                 {key: desired.SessionKey{User: "alice", Project: "backend"}, image: imageAnswer{missing: true}, want: "image " + tag + " not built; run: podspawn update-project backend"},
		"docker fails":                  {key: desired.SessionKey{User: "alice", Project: "backend"}, image: imageAnswer{err: errors.New("daemon down")}, want: "checking image " + tag + " of project backend: daemon down"},
		"unregistered":                  {key: desired.SessionKey{User: "alice", Project: "web"}, want: `project "web" is not registered`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s := &Sessions{Config: projectConfig(t, "base: img:1\n", projects.Project{ImageTag: tag}), Images: tc.image, Log: logr.Discard()}
			err := s.checkProject(context.Background(), tc.key)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("checkProject = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("checkProject = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}
