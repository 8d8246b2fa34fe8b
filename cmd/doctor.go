package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"strconv"

	"github.com/go-logr/logr"

	"github.com/podspawn/podspawn/observed/doctor"

	"github.com/podspawn/podspawn/controller"
	"github.com/podspawn/podspawn/desired/config"
	"github.com/podspawn/podspawn/desired/sqlstore"
	"github.com/podspawn/podspawn/reconcile"
)

// DoctorCmd runs the preflight checks.
type DoctorCmd struct {
	Output string `help:"Output format: text or json (json includes the detail of passing checks)." enum:"text,json" default:"text" short:"o"`
}

// Help is shown by "podspawn doctor --help".
func (DoctorCmd) Help() string {
	return `Checks, in order: Docker daemon, Docker socket, OpenSSH version, sshd config
valid, AuthorizedKeysCommand, podspawn config dir, key directory, state
directory, lock directory, disk space, default image, session networks, host
access rules, config file, state database, cleanup daemon, removal guard, audit log. Every path comes from --config (and DOCKER_HOST,
PATH).

With runtime: kubernetes, then: Kubernetes API server (reachable, its
version), Kubernetes namespace (exists; with a namespaced Role a
server-side dry run tells), Kubernetes permissions (each right of
hack/k8s/podspawn-rbac.yaml asked with a SelfSubjectAccessReview; a
failure names every missing verb and resource), image registry
(GET /v2/ of kubernetes.image_registry answers 200 or 401), network policy
enforcement (a plugin known to enforce NetworkPolicy: calico, cilium,
antrea by their API groups, or kube-router and weave-net by their Pods in
kube-system when podspawn may read them; otherwise a warning that
isolation depends on the cluster's plugin). Each check has its own timeout, so a hung Docker daemon cannot hang
doctor. Warnings and failures are followed by a "fix:" line.

Docker socket: with ssh.use_sudo (the default) podspawn users never use the
socket (spawn runs as root through sudo), so a socket only root and group
docker can use passes, and a world-accessible one is a warning (Docker
access is root access). With ssh.use_sudo off, a socket that is not
world-accessible is a warning: every podspawn user then needs group docker.

Doctor changes nothing: it opens the state database without writing to it
and creates no directory or lock file.

Exit status: 0 when no check failed (warnings allowed), 1 when any failed.`
}

// Run runs every check and exits 1 if any failed. A config that does not
// load is reported as a failed check rather than aborting, so the rest of
// the server is still diagnosed.
func (c *DoctorCmd) Run(a *App) error {
	ctx, cancel := signalContext()
	defer cancel()
	env := doctor.Env{
		ConfigPath: a.CLI.Config,
		DockerHost: os.Getenv("DOCKER_HOST"),
		Path:       os.Getenv("PATH"),
		Euid:       os.Geteuid(),
		Statfs:     doctor.Statfs,
		LookupAccount: func(name string) (int, int, error) {
			u, err := user.Lookup(name)
			if err != nil {
				return 0, 0, err
			}
			uid, err := strconv.Atoi(u.Uid)
			if err != nil {
				return 0, 0, err
			}
			gid, err := strconv.Atoi(u.Gid)
			return uid, gid, err
		},
	}
	env.Config, env.ConfigErr = config.Load(a.CLI.Config)
	if env.ConfigErr == nil {
		env.HostFirewall = newHostFirewall(env.Config)
	}
	if bin, err := os.Executable(); err == nil {
		env.Binary = bin
	}
	if dc, err := a.Docker(); err != nil {
		env.DockerErr = err
	} else {
		env.Docker = dc
	}
	if env.ConfigErr == nil && env.Config.Runtime == config.RuntimeKubernetes {
		if c, err := newKubeClient(env.Config.Kubernetes.Kubeconfig, env.Config.Kubernetes.Namespace, nil); err != nil {
			env.Kube.Err = err
		} else {
			env.Kube.API, env.Kube.RegistryAuth = c.API, registryAuth
			if c.Config != nil {
				env.Kube.Host = c.Config.Host
			}
		}
	}
	env.GuardPlan = func(ctx context.Context) (doctor.GuardView, error) { return guardView(ctx, a, env) }
	results := doctor.Run(ctx, env)
	if c.Output == "json" {
		if err := doctor.RenderJSON(a.Stdout, results); err != nil {
			return err
		}
	} else {
		doctor.RenderText(a.Stdout, results)
	}
	if _, _, failed := doctor.Summary(results); failed > 0 {
		return &ExitError{Code: 1, Err: fmt.Errorf("%d check(s) failed", failed)}
	}
	return nil
}

// guardView plans a cleanup pass from a query-only database, with the
// executor that only records, and reports what the guard holds.
func guardView(ctx context.Context, a *App, env doctor.Env) (doctor.GuardView, error) {
	if env.Docker == nil {
		return doctor.GuardView{}, fmt.Errorf("no Docker client: %w", env.DockerErr)
	}
	cfg := env.Config
	st, err := sqlstore.OpenQueryOnly(ctx, cfg.State.DBPath)
	if errors.Is(err, fs.ErrNotExist) {
		return doctor.GuardView{NoDatabase: true}, nil
	}
	if err != nil {
		return doctor.GuardView{}, err
	}
	defer st.Close()
	rt, err := a.Runtime()
	if err != nil {
		return doctor.GuardView{}, err
	}
	ctrl := &controller.Controller{Store: st, KeyDir: cfg.Auth.KeyDir, LockDir: cfg.State.LockDir, Observer: rt,
		Options: reconcile.Options{OrphanMinAge: cfg.Cleanup.OrphanMinAge.Duration, PendingTimeout: cfg.Cleanup.PendingTimeout.Duration},
		Clock:   a.Clock, Log: logr.Discard(), Guard: reconcile.GuardLimits{MaxUnplannedRemovals: cfg.Cleanup.MaxUnplannedRemovals}}
	d, err := ctrl.LoadDesired(ctx)
	if err != nil {
		return doctor.GuardView{}, err
	}
	p, err := ctrl.Plan(ctx)
	if err != nil {
		return doctor.GuardView{}, err
	}
	return doctor.GuardView{Held: len(p.Held), Holds: p.Holds, Sessions: len(d.Sessions), Users: len(d.Users)}, nil
}
