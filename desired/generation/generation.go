// Package generation builds the desired state of a new container
// generation of a session from the config, the projects registry and the
// project's Podfile. It reads files but never Docker: whether the
// project's image exists is the caller's question.
package generation

import (
	"fmt"
	"path/filepath"
	"runtime"
	"time"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/config"
	"github.com/podspawn/podspawn/desired/projects"
	"github.com/podspawn/podspawn/desired/sqlstore"
)

// New builds the row of a new generation of key. Mode, grace period and
// max lifetime are stored on the row so that teardown follows the row,
// never whichever process disconnects last (G9).
func New(cfg config.Config, key desired.SessionKey, now time.Time) (*desired.Session, error) {
	spec, mode, agent, err := resolveSpec(cfg, key)
	if err != nil {
		return nil, fmt.Errorf("resolving the session of %s: %w", key, err)
	}
	id := sqlstore.NewSessionID()
	if mode == desired.ModePersistent {
		// The home outlives the generation; the executor makes it.
		spec.Mounts = append(spec.Mounts, desired.Mount{
			Source: HomePath(cfg.State.HomesDir, key), Target: "/home/" + key.User, Prepare: desired.PrepareHome,
		})
	}
	if agent {
		// The mount must exist when the container is created, so every
		// generation gets it; a connection without an agent leaves it empty.
		spec.Mounts = append(spec.Mounts, desired.Mount{
			Source: filepath.Join(cfg.State.AgentDir, id), Target: desired.AgentMountTarget, Prepare: desired.PrepareAgentDir,
		})
	}
	return &desired.Session{
		Key:           key,
		ID:            id,
		Mode:          mode,
		Status:        desired.StatusCreating,
		CreatedAt:     now,
		MaxLifetimeAt: now.Add(cfg.Session.MaxLifetime.Duration),
		GracePeriod:   cfg.Session.GracePeriod.Duration,
		Spec:          spec,
	}, nil
}

// HomePath is the persistent home of key: <homes_dir>/<user>, or
// <homes_dir>/<user>/<project> for a project session.
func HomePath(homesDir string, key desired.SessionKey) string {
	if key.Project == "" {
		return filepath.Join(homesDir, key.User)
	}
	return filepath.Join(homesDir, key.User, key.Project)
}

// resolveSpec decides what a new generation of key runs and its teardown
// mode: the server defaults, or a registered project's image, services
// and mode.
func resolveSpec(cfg config.Config, key desired.SessionKey) (desired.Spec, desired.Mode, bool, error) {
	hostname := key.Project
	if hostname == "" {
		hostname = key.User
	}
	spec := desired.Spec{
		Image:         cfg.Defaults.Image,
		Shell:         cfg.Defaults.Shell,
		CPUs:          cfg.Defaults.CPUs,
		MemoryBytes:   cfg.Defaults.MemoryBytes,
		DiskBytes:     cfg.Defaults.DiskBytes,
		Hostname:      hostname,
		ContainerName: desired.ContainerName(key),
		NetworkName:   desired.NetworkName(key),
		Security:      cfg.SecuritySpec(),
	}
	if key.Project != "" {
		mode, agent, err := resolveProject(cfg, key, &spec)
		return spec, mode, agent && cfg.SSH.AllowAgentForwarding, err
	}
	return spec, cfg.Session.Mode, cfg.SSH.AllowAgentForwarding, nil
}

// NotRegisteredError refuses a project name the server does not know.
type NotRegisteredError struct{ Name string }

func (e *NotRegisteredError) Error() string {
	return fmt.Sprintf("project %q is not registered on this server; ask an admin to run podspawn add-project", e.Name)
}

// Project returns the registered project of key and its Podfile. The
// project name is client input (PODSPAWN_PROJECT): a name the server does
// not know is refused rather than turned into a default session (G23).
func Project(cfg config.Config, name string) (projects.Project, *projects.Podfile, error) {
	reg, err := projects.Load(cfg.ProjectsFile)
	if err != nil {
		return projects.Project{}, nil, err
	}
	p, ok := reg[name]
	if !ok {
		return projects.Project{}, nil, desired.ForUser(&NotRegisteredError{Name: name})
	}
	pf, err := readPodfile(name, p)
	if err != nil {
		return projects.Project{}, nil, err
	}
	if p.ImageTag == "" {
		return projects.Project{}, nil, fmt.Errorf("project %s has no image; run: podspawn update-project %s", name, name)
	}
	return p, pf, nil
}

// readPodfile reads the Podfile of the project's clone.
func readPodfile(name string, p projects.Project) (*projects.Podfile, error) {
	if p.LocalPath == "" {
		return nil, fmt.Errorf("project %s has no local_path in the projects file; an admin must remove and re-add it", name)
	}
	rel := p.PodfilePath
	if rel == "" {
		var err error
		if rel, err = projects.Find(p.LocalPath); err != nil {
			return nil, fmt.Errorf("project %s: %w", name, err)
		}
	}
	pf, err := projects.ReadPodfile(p.LocalPath, rel)
	if err != nil {
		return nil, fmt.Errorf("project %s: %w; an admin must fix it and run: podspawn update-project %s", name, err, name)
	}
	return pf, nil
}

// resolveProject turns spec (the server defaults) into the session spec of
// a registered project and returns the session mode. Precedence of the
// mode: the registry's entry (the admin's word), then the Podfile, then
// session.mode from the config. It also says whether the registry lets
// the project's sessions have forwarded agents.
func resolveProject(cfg config.Config, key desired.SessionKey, spec *desired.Spec) (desired.Mode, bool, error) {
	p, pf, err := Project(cfg, key.Project)
	if err != nil {
		return "", false, err
	}
	// The config's limits are ceilings here too, whatever the clone says now.
	pfMode, err := pf.Apply(spec, key, p.ImageTag, projects.LimitsOf(cfg, runtime.NumCPU()))
	if err != nil {
		return "", false, fmt.Errorf("project %s: podfile: %w", key.Project, err)
	}
	mode := cfg.Session.Mode
	if pfMode != "" {
		mode = pfMode
	}
	if p.Mode != "" {
		mode = p.Mode
	}
	return mode, p.AgentForwarding == nil || *p.AgentForwarding, nil
}
