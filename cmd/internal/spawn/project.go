package spawn

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/config"
	"github.com/podspawn/podspawn/desired/projects"
)

// lookupProject returns the registered project. The project name is
// client input (PODSPAWN_PROJECT): a name the server does not know is
// refused rather than turned into a default session (G23).
func lookupProject(cfg config.Config, name string) (projects.Project, error) {
	reg, err := projects.Load(cfg.ProjectsFile)
	if err != nil {
		return projects.Project{}, err
	}
	p, ok := reg[name]
	if !ok {
		return projects.Project{}, fmt.Errorf("project %q is not registered on this server; ask an admin to run podspawn add-project", name)
	}
	return p, nil
}

// readProjectPodfile reads the Podfile of the project's clone.
func readProjectPodfile(name string, p projects.Project) (*projects.Podfile, error) {
	if p.LocalPath == "" {
		return nil, fmt.Errorf("project %s has no local_path in the projects file; an admin must remove and re-add it", name)
	}
	path := filepath.Join(p.LocalPath, p.PodfilePath)
	if p.PodfilePath == "" {
		var err error
		if path, err = projects.Find(p.LocalPath); err != nil {
			return nil, fmt.Errorf("project %s: %w", name, err)
		}
	}
	pf, err := projects.ReadPodfile(path)
	if err != nil {
		return nil, fmt.Errorf("project %s: %w; an admin must fix it and run: podspawn update-project %s", name, err, name)
	}
	return pf, nil
}

// resolveProject turns spec (the server defaults) into the session spec of
// a registered project and returns the session mode. Precedence of the
// mode: the registry's entry (the admin's word), then the Podfile, then
// session.mode from the config.
func resolveProject(cfg config.Config, key desired.SessionKey, spec *desired.Spec) (desired.Mode, error) {
	p, err := lookupProject(cfg, key.Project)
	if err != nil {
		return "", err
	}
	pf, err := readProjectPodfile(key.Project, p)
	if err != nil {
		return "", err
	}
	if p.ImageTag == "" {
		return "", fmt.Errorf("project %s has no image; run: podspawn update-project %s", key.Project, key.Project)
	}
	pfMode, err := pf.Apply(spec, key, p.ImageTag)
	if err != nil {
		return "", fmt.Errorf("project %s: podfile: %w", key.Project, err)
	}
	mode := cfg.Session.Mode
	if pfMode != "" {
		mode = pfMode
	}
	if p.Mode != "" {
		mode = p.Mode
	}
	return mode, nil
}

// checkProject is run before a new generation of a project session is
// recorded: it refuses an unregistered project, an unreadable Podfile and
// a missing image with errors that say what to do, so no row is written
// for a session that cannot start. Docker is asked here, outside the
// database transaction that records the generation.
func (s *Sessions) checkProject(ctx context.Context, key desired.SessionKey) error {
	if key.Project == "" {
		return nil
	}
	p, err := lookupProject(s.Config, key.Project)
	if err != nil {
		return err
	}
	pf, err := readProjectPodfile(key.Project, p)
	if err != nil {
		return err
	}
	if p.ImageTag == "" {
		return fmt.Errorf("project %s has no image; run: podspawn update-project %s", key.Project, key.Project)
	}
	if tag := pf.Tag(key.Project); tag != p.ImageTag {
		// The clone was edited by hand: the image only carries the base,
		// so the session still starts, from the image the registry names.
		s.Log.Info("Podfile differs from the project's built image; run update-project to rebuild", "project", key.Project, "image", p.ImageTag, "podfileImage", tag)
	}
	ok, err := actions.ImageExists(ctx, s.Docker, p.ImageTag)
	if err != nil {
		return fmt.Errorf("checking image %s of project %s: %w", p.ImageTag, key.Project, err)
	}
	if !ok {
		return fmt.Errorf("image %s not built; run: podspawn update-project %s", p.ImageTag, key.Project)
	}
	return nil
}
