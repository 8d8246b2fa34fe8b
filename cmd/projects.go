package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/podspawn/podspawn/controller"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/config"
	"github.com/podspawn/podspawn/desired/lock"
	"github.com/podspawn/podspawn/desired/projects"
	"github.com/podspawn/podspawn/desired/sqlstore"
	"github.com/podspawn/podspawn/reconcile"
)

// AddProjectCmd registers a project from a git repository.
type AddProjectCmd struct {
	Name   string `arg:"" help:"Project name ([a-z][a-z0-9_-]{0,63})."`
	Repo   string `help:"Repository URL (anything git clone accepts, including a local path)." required:""`
	Branch string `help:"Branch to clone (default: the repository's default branch)."`
}

// UpdateProjectCmd pulls a project and rebuilds its image if the Podfile changed.
type UpdateProjectCmd struct {
	Name string `arg:"" help:"Project name."`
}

// RemoveProjectCmd deregisters a project and removes its clone.
type RemoveProjectCmd struct {
	Name   string `arg:"" help:"Project name."`
	Force  bool   `help:"Also destroy the live sessions of the project (without it, live sessions make the command fail)."`
	DryRun bool   `help:"Print what would be done and change nothing."`
}

// projectsLock serialises edits of the registry.
func projectsLock(ctx context.Context, cfg config.Config) (*lock.Lock, error) {
	return lock.AcquireTimeout(ctx, cfg.State.LockDir, "_projects", userLockTimeout, "the project registry", "another project command holds it")
}

// projectEdit is where every project command starts: a valid name, the
// config, and the registry read under the projects lock.
type projectEdit struct {
	ctx  context.Context
	cfg  config.Config
	reg  projects.Registry
	done func() // releases the lock, then cancels ctx
}

// beginProjectEdit validates name, loads the config, takes the projects
// lock and loads the registry; timeout 0 means no limit but a signal.
// The caller defers done.
func (a *App) beginProjectEdit(name string, timeout time.Duration) (*projectEdit, error) {
	if err := desired.ValidateProjectName(name); err != nil {
		return nil, err
	}
	cfg, err := a.Config()
	if err != nil {
		return nil, err
	}
	ctx, cancel := signalContext()
	if timeout > 0 {
		cancelSignal := cancel
		var cancelTimeout context.CancelFunc
		ctx, cancelTimeout = context.WithTimeout(ctx, timeout)
		cancel = func() { cancelTimeout(); cancelSignal() }
	}
	l, err := projectsLock(ctx, cfg)
	if err != nil {
		cancel()
		return nil, err
	}
	done := func() { l.Unlock(); cancel() }
	reg, err := projects.Load(cfg.ProjectsFile)
	if err != nil {
		done()
		return nil, err
	}
	return &projectEdit{ctx: ctx, cfg: cfg, reg: reg, done: done}, nil
}

func git(ctx context.Context, dir string, args ...string) error {
	_, err := gitOutput(ctx, dir, args...)
	return err
}

func gitOutput(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		// The output carries the remote's messages: quoted, so no escape
		// sequence reaches the operator's terminal.
		return "", fmt.Errorf("git %s: %v: %q", args[0], err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}

// buildProject reads the Podfile in dir and builds its image if missing;
// rel is the Podfile's path in dir, built says whether it had to build.
func (a *App) buildProject(ctx context.Context, name, dir string) (pf *projects.Podfile, rel string, built bool, err error) {
	rel, err = projects.Find(dir)
	if err != nil {
		return nil, "", false, err
	}
	pf, err = projects.ReadPodfile(dir, rel)
	if err != nil {
		return nil, "", false, err
	}
	cfg, err := a.Config()
	if err != nil {
		return nil, "", false, err
	}
	if err := pf.CheckLimits(projects.LimitsOf(cfg, runtime.NumCPU())); err != nil {
		return nil, "", false, fmt.Errorf("podfile %s: %w", filepath.Join(dir, rel), err)
	}
	rt, err := a.Runtime()
	if err != nil {
		return nil, "", false, err
	}
	tag := pf.Tag(name)
	exists, err := rt.ImageExists(ctx, tag)
	if err != nil {
		return nil, "", false, fmt.Errorf("checking image %s: %w", tag, err)
	}
	if !exists {
		if out, err := rt.BuildImage(ctx, tag, pf.Dockerfile(name)); err != nil {
			if strings.TrimSpace(out) != "" {
				a.Log.Error(nil, "Image build output", "image", tag, "output", out)
			}
			return nil, "", false, err
		}
	}
	return pf, rel, !exists, nil
}

// Run clones into a temporary directory and moves it into place only
// after the Podfile parsed and the image built, so any failure leaves
// neither a clone nor a registration behind.
func (c *AddProjectCmd) Run(a *App) error {
	pe, err := a.beginProjectEdit(c.Name, 10*time.Minute)
	if err != nil {
		return err
	}
	defer pe.done()
	ctx, cfg, reg := pe.ctx, pe.cfg, pe.reg
	if _, ok := reg[c.Name]; ok {
		return fmt.Errorf("project %q already registered; use update-project to rebuild it", c.Name)
	}
	final := filepath.Join(cfg.State.ProjectsDir, c.Name)
	if _, err := os.Stat(final); err == nil {
		return fmt.Errorf("%s already exists but project %q is not registered; remove the directory or choose another name", final, c.Name)
	}
	if err := os.MkdirAll(cfg.State.ProjectsDir, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(cfg.State.ProjectsDir, ".clone-"+c.Name+"-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	args := []string{"clone", "--quiet", "--single-branch"}
	if c.Branch != "" {
		args = append(args, "--branch", c.Branch)
	}
	args = append(args, "--", c.Repo, tmp)
	if err := git(ctx, cfg.State.ProjectsDir, args...); err != nil {
		return fmt.Errorf("cloning %s: %w", c.Repo, err)
	}
	pf, rel, _, err := a.buildProject(ctx, c.Name, tmp)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("moving the clone into %s: %w", final, err)
	}
	reg[c.Name] = projects.Project{Repo: c.Repo, Branch: c.Branch, LocalPath: final, ImageTag: pf.Tag(c.Name), PodfilePath: rel}
	if err := reg.Save(cfg.ProjectsFile); err != nil {
		os.RemoveAll(final)
		return fmt.Errorf("saving %s: %w", cfg.ProjectsFile, err)
	}
	fmt.Fprintf(a.Stdout, "project %s registered, image: %s\n", c.Name, pf.Tag(c.Name))
	return nil
}

// Run pulls and rebuilds only when the Podfile changed. Running sessions
// keep their image until they are recreated.
func (c *UpdateProjectCmd) Run(a *App) error {
	pe, err := a.beginProjectEdit(c.Name, 10*time.Minute)
	if err != nil {
		return err
	}
	defer pe.done()
	ctx, cfg, reg := pe.ctx, pe.cfg, pe.reg
	p, ok := reg[c.Name]
	if !ok {
		return fmt.Errorf("project %q is not registered; use add-project first", c.Name)
	}
	before, err := gitOutput(ctx, p.LocalPath, "rev-parse", "HEAD")
	if err != nil {
		return fmt.Errorf("reading the current commit of %s: %w", p.LocalPath, err)
	}
	if err := git(ctx, p.LocalPath, "pull", "--quiet", "--ff-only"); err != nil {
		return fmt.Errorf("updating %s: %w", p.LocalPath, err)
	}
	pf, rel, built, err := a.buildProject(ctx, c.Name, p.LocalPath)
	if err != nil {
		// New sessions read the Podfile from the clone: put back the
		// commit that matches the registered image.
		if rerr := git(context.WithoutCancel(ctx), p.LocalPath, "reset", "--quiet", "--hard", before); rerr != nil {
			return fmt.Errorf("%w\n  restoring %s to %s also failed: %v; fix the clone by hand", err, p.LocalPath, before, rerr)
		}
		return fmt.Errorf("%w\n  project %s is unchanged (clone restored to %.12s, image %s)", err, c.Name, before, p.ImageTag)
	}
	tag := pf.Tag(c.Name)
	if tag == p.ImageTag {
		// Same bytes, maybe moved (podfile.yaml <-> .podspawn/podfile.yaml):
		// spawn reads it from the registered path.
		if rel != p.PodfilePath {
			p.PodfilePath = rel
			reg[c.Name] = p
			if err := reg.Save(cfg.ProjectsFile); err != nil {
				return fmt.Errorf("saving %s: %w", cfg.ProjectsFile, err)
			}
		}
		if built {
			fmt.Fprintf(a.Stdout, "project %s: podfile unchanged, image %s was missing and has been rebuilt\n", c.Name, tag)
		} else {
			fmt.Fprintf(a.Stdout, "project %s: podfile unchanged, skipping rebuild\n", c.Name)
		}
		return nil
	}
	p.ImageTag = tag
	p.PodfilePath = rel
	reg[c.Name] = p
	if err := reg.Save(cfg.ProjectsFile); err != nil {
		return fmt.Errorf("saving %s: %w", cfg.ProjectsFile, err)
	}
	fmt.Fprintf(a.Stdout, "project %s rebuilt, image: %s\n", c.Name, tag)
	return nil
}

// Run deregisters first (so no new session uses a half-removed project),
// then removes the clone. Live sessions of the project make it fail unless
// --force, which tears them down (reason project-removed).
func (c *RemoveProjectCmd) Run(a *App) error {
	pe, err := a.beginProjectEdit(c.Name, 0)
	if err != nil {
		return err
	}
	defer pe.done()
	ctx, cfg, reg := pe.ctx, pe.cfg, pe.reg
	p, ok := reg[c.Name]
	if !ok {
		return fmt.Errorf("project %q is not registered (see %s)", c.Name, cfg.ProjectsFile)
	}
	st, err := a.Store(ctx)
	if err != nil {
		return err
	}
	all, err := st.Load(ctx)
	if err != nil {
		return err
	}
	var live []desired.SessionKey
	for _, s := range all {
		if s.Key.Project == c.Name {
			live = append(live, s.Key)
		}
	}
	if len(live) > 0 && !c.Force {
		return fmt.Errorf("project %s has %d live session(s); stop them first or use --force to destroy them", c.Name, len(live))
	}
	if c.DryRun {
		fmt.Fprintf(a.Stdout, "would deregister project %s and remove %s\n", c.Name, p.LocalPath)
		if len(live) > 0 {
			fmt.Fprintf(a.Stdout, "would destroy %d session(s): %s\n", len(live), keyList(live))
		}
		return nil
	}
	var ctrl *controller.Controller
	if len(live) > 0 {
		if ctrl, err = a.Controller(ctx, ControllerOptions{}); err != nil {
			return err
		}
		// Nothing is changed while Docker is down.
		if err := dockerReady(ctx, a); err != nil {
			return err
		}
	}
	delete(reg, c.Name)
	if err := reg.Save(cfg.ProjectsFile); err != nil {
		return fmt.Errorf("saving %s: %w", cfg.ProjectsFile, err)
	}
	var failed error
	if len(live) > 0 {
		failed = a.destroyProjectSessions(ctx, ctrl, st, c.Name)
	}
	if p.LocalPath != "" && strings.HasPrefix(filepath.Clean(p.LocalPath), filepath.Clean(cfg.State.ProjectsDir)+string(filepath.Separator)) {
		if err := os.RemoveAll(p.LocalPath); err != nil {
			fmt.Fprintf(a.Stderr, "warning: could not remove %s: %v\n", p.LocalPath, err)
		}
	}
	fmt.Fprintf(a.Stdout, "removed project %s\n", c.Name)
	if p.ImageTag != "" {
		fmt.Fprintf(a.Stdout, "note: image %s still exists; run 'docker rmi ...' to remove it\n", p.ImageTag)
	}
	return failed
}

// destroyProjectSessions tears down every session of project the way stop
// and remove-user do. The project is already deregistered and spawn reads
// the registry under the user's lock, so the sessions Teardown finds once
// each lock is taken are all there will be.
func (a *App) destroyProjectSessions(ctx context.Context, ctrl *controller.Controller, st *sqlstore.Store, project string) error {
	all, err := st.Load(ctx)
	if err != nil {
		return err
	}
	var targets []controller.Target
	for _, s := range all {
		if s.Key.Project == project {
			targets = append(targets, controller.Target{User: s.Key.User, Project: project})
		}
	}
	var failures []string
	for _, res := range ctrl.Teardown(ctx, targets, reconcile.ReasonProjectRemoved, controller.TeardownHooks{Done: a.printTeardown}) {
		if res.Err != nil {
			failures = append(failures, fmt.Sprintf("%s: %v", res.Target.Key(), res.Err))
		}
		for _, r := range res.Sessions {
			if r.Err != nil {
				failures = append(failures, failureText(r.Err))
			}
		}
	}
	if len(failures) == 0 {
		return nil
	}
	return &ExitError{Code: 1, Err: fmt.Errorf("%d of %d session(s) of project %s could not be destroyed; sessions marked for removal are finished by 'podspawn cleanup', untouched ones by 'podspawn stop <user>@%s':\n  %s",
		len(failures), len(targets), project, project, strings.Join(failures, "\n  "))}
}

func keyList(ks []desired.SessionKey) string {
	s := make([]string, len(ks))
	for i, k := range ks {
		s[i] = k.String()
	}
	return strings.Join(s, ", ")
}
