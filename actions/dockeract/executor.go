package dockeract

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/go-logr/logr"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/desired/config"
	"github.com/podspawn/podspawn/desired/spec"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/reconcile"
)

// API is the part of the Docker client the executor uses.
type API interface {
	ContainerCreate(ctx context.Context, config *container.Config, hostConfig *container.HostConfig, networkingConfig *network.NetworkingConfig, platform *ocispec.Platform, containerName string) (container.CreateResponse, error)
	ContainerStart(ctx context.Context, containerID string, options container.StartOptions) error
	ContainerUnpause(ctx context.Context, containerID string) error
	ContainerInspect(ctx context.Context, containerID string) (container.InspectResponse, error)
	ContainerRemove(ctx context.Context, containerID string, options container.RemoveOptions) error
	ContainerExecCreate(ctx context.Context, containerID string, options container.ExecOptions) (container.ExecCreateResponse, error)
	ContainerExecAttach(ctx context.Context, execID string, config container.ExecAttachOptions) (types.HijackedResponse, error)
	ContainerExecInspect(ctx context.Context, execID string) (container.ExecInspect, error)
	NetworkCreate(ctx context.Context, name string, options network.CreateOptions) (network.CreateResponse, error)
	NetworkInspect(ctx context.Context, networkID string, options network.InspectOptions) (network.Inspect, error)
	NetworkRemove(ctx context.Context, networkID string) error
	VolumeCreate(ctx context.Context, options volume.CreateOptions) (volume.Volume, error)
	VolumeInspect(ctx context.Context, volumeID string) (volume.Volume, error)
	VolumeRemove(ctx context.Context, volumeID string, force bool) error
	ImagePull(ctx context.Context, refStr string, options image.PullOptions) (io.ReadCloser, error)
	ContainerLogs(ctx context.Context, containerID string, options container.LogsOptions) (io.ReadCloser, error)
	ContainerAttach(ctx context.Context, containerID string, options container.AttachOptions) (types.HijackedResponse, error)
	ImageInspector
}

// Docker executes actions against Docker and the store.
type Executor struct {
	API   API
	Store actions.Store
	Now   func() time.Time
	// Log receives what an action finds out on the way that is worth
	// keeping (a crash-looping container's last output). The zero Logger
	// discards it.
	Log logr.Logger
	// HostFirewall, when set, is ensured before anything of a session is
	// created (hostfirewall.go).
	HostFirewall actions.HostFirewall
	// HomesDir is state.homes_dir, below which persistent homes are
	// made (the part of a home's path that is the admin's, not the user's).
	HomesDir string
	// HomeSize is state.home_size in bytes: each user's homes are the
	// mount of an image of that size (0: plain directories).
	HomeSize int64
	// AgentDir is state.agent_dir: a session generation's directory of
	// forwarded agent sockets is removed with its session container.
	AgentDir string
	// DiskUnsupported is defaults.disk_unsupported: with config.DiskWarn a
	// container whose disk limit the storage driver cannot apply is
	// created without it; otherwise its creation fails.
	DiskUnsupported string

	// prepared holds the containers Prepare created (preparedKey: adopted)
	// until their action is executed.
	prepared sync.Map
}

// Execute runs one action idempotently.
func (d *Executor) Execute(ctx context.Context, a reconcile.Action) (actions.Outcome, error) {
	if o, ok, err := actions.ExecuteStore(ctx, d.Store, a, d.Now()); ok {
		return o, err
	}
	var (
		o   actions.Outcome
		err error
	)
	prepared, isPrepared := d.takePrepared(a)
	// A prepared container was created after the same check.
	if !isPrepared {
		if err := d.ensureHostFirewall(ctx, a.Kind); err != nil {
			return "", fmt.Errorf("%s %s: %w", a.Kind, a.Target, err)
		}
	}
	switch a.Kind {
	case reconcile.KindRemoveContainer:
		o, err = d.removeContainer(ctx, a)
	case reconcile.KindRemoveNetwork:
		o, err = d.removeNetwork(ctx, a)
	case reconcile.KindRemoveVolume:
		o, err = d.removeVolume(ctx, a)
	case reconcile.KindCreateNetwork:
		o, err = d.createNetwork(ctx, a)
	case reconcile.KindCreateVolume:
		o, err = d.createVolume(ctx, a)
	case reconcile.KindCreateContainer:
		o, err = d.createContainer(ctx, a, prepared, isPrepared)
	case reconcile.KindKillLeaseProcesses:
		o, err = d.killLeaseProcesses(ctx, a)
	default:
		return "", fmt.Errorf("unknown action kind %q", a.Kind)
	}
	if err != nil {
		return o, fmt.Errorf("%s %s: %w", a.Kind, a.Target, err)
	}
	return o, nil
}

// owned reports whether labels say the object belongs to the action's
// session generation.
func owned(labels map[string]string, a reconcile.Action) bool {
	return labels[observed.LabelManagedBy] == observed.ManagedByValue &&
		labels[observed.LabelSession] == a.SessionID &&
		labels[observed.LabelInstance] == a.Labels[observed.LabelInstance]
}

func notOwned(kind, name string, labels map[string]string, a reconcile.Action) error {
	who := "is not managed by podspawn"
	switch {
	case labels[observed.LabelManagedBy] != observed.ManagedByValue:
	case labels[observed.LabelInstance] != a.Labels[observed.LabelInstance]:
		who = fmt.Sprintf("belongs to another podspawn state database (instance %q)", labels[observed.LabelInstance])
	default:
		who = fmt.Sprintf("belongs to another session (user %q, project %q, session %q)", labels[observed.LabelUser], labels[observed.LabelProject], labels[observed.LabelSession])
	}
	return fmt.Errorf("%s %s already exists and %s; remove or rename it: %w", kind, name, who, actions.ErrTerminal)
}

func (d *Executor) removeContainer(ctx context.Context, a reconcile.Action) (actions.Outcome, error) {
	ref := a.TargetID
	if ref == "" {
		ref = a.Target
	}
	if a.LogTail > 0 {
		d.logTail(ctx, ref, a)
	}
	err := d.API.ContainerRemove(ctx, ref, container.RemoveOptions{Force: true, RemoveVolumes: true})
	o, err := actions.OutcomeOf(true, err)
	// Gone already, or a removal in progress (another pass) finishes on its own.
	if errdefs.IsNotFound(err) || removalInProgress(err) {
		o, err = actions.Unchanged, nil
	}
	if err == nil {
		if rerr := removeAgentDir(d.AgentDir, a); rerr != nil {
			return "", rerr
		}
	}
	return o, err
}

// logTailMax bounds the output logged for one container.
const logTailMax = 4096

// logTail logs the last a.LogTail lines of the container's output before
// it is removed: a container torn down for crash-looping takes the reason
// it kept failing with it otherwise. Failing to read them never holds the
// removal up.
func (d *Executor) logTail(ctx context.Context, ref string, a reconcile.Action) {
	log := d.Log.WithValues("user", a.Key.User, "project", a.Key.Project, "container", a.Target, "reason", a.Reason)
	rc, err := d.API.ContainerLogs(ctx, ref, container.LogsOptions{ShowStdout: true, ShowStderr: true, Tail: fmt.Sprint(a.LogTail)})
	if err != nil {
		log.Error(err, "Cannot read the last output of the container before removing it")
		return
	}
	defer rc.Close()
	// Session containers have no TTY, so the stream is multiplexed.
	var out bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &out, io.LimitReader(rc, 1<<20)); err != nil {
		log.Error(err, "Cannot read the last output of the container before removing it")
		return
	}
	tail := out.String()
	if len(tail) > logTailMax {
		tail = "..." + tail[len(tail)-logTailMax:]
	}
	log.Info("Last output of the container before its removal", "detail", a.Detail, "output", tail)
}

func (d *Executor) removeNetwork(ctx context.Context, a reconcile.Action) (actions.Outcome, error) {
	ref := a.TargetID
	if ref == "" {
		ref = a.Target
	}
	err := d.API.NetworkRemove(ctx, ref)
	if errdefs.IsNotFound(err) {
		return actions.Unchanged, nil
	}
	// The session's own containers are removed before its network, so an
	// endpoint left is a container podspawn did not attach. Retryable: the
	// removal goes through once someone disconnects it.
	if activeEndpoints(err) {
		return "", fmt.Errorf("%w (a container outside this session is attached to the network; "+
			"run `docker network inspect %s` to find it and `docker network disconnect %s <container>` to detach it)", err, a.Target, a.Target)
	}
	return actions.OutcomeOf(true, err)
}

func (d *Executor) removeVolume(ctx context.Context, a reconcile.Action) (actions.Outcome, error) {
	err := d.API.VolumeRemove(ctx, a.Target, false)
	if errdefs.IsNotFound(err) {
		return actions.Unchanged, nil
	}
	return actions.OutcomeOf(true, err)
}

func (d *Executor) createNetwork(ctx context.Context, a reconcile.Action) (actions.Outcome, error) {
	_, err := d.API.NetworkCreate(ctx, a.Target, network.CreateOptions{Driver: "bridge", Labels: a.Labels, Options: sessionNetworkOptions(a.Target)})
	if err == nil {
		return actions.Changed, nil
	}
	existing, ierr := d.API.NetworkInspect(ctx, a.Target, network.InspectOptions{})
	if ierr != nil {
		if poolsExhausted(err) {
			return "", fmt.Errorf("%w (every session has its own network, and Docker's default address pools hold about 30; "+
				"add larger \"default-address-pools\" to /etc/docker/daemon.json and restart Docker, see the README's Capacity section)", err)
		}
		return "", err
	}
	if !owned(existing.Labels, a) {
		return "", notOwned("network", a.Target, existing.Labels, a)
	}
	return actions.Unchanged, nil
}

func (d *Executor) createVolume(ctx context.Context, a reconcile.Action) (actions.Outcome, error) {
	// Docker's volume create returns the existing volume instead of
	// failing, so ownership is checked before creating.
	existing, err := d.API.VolumeInspect(ctx, a.Target)
	if err == nil {
		if !owned(existing.Labels, a) {
			return "", notOwned("volume", a.Target, existing.Labels, a)
		}
		return actions.Unchanged, nil
	}
	if !errdefs.IsNotFound(err) {
		return "", err
	}
	_, err = d.API.VolumeCreate(ctx, volume.CreateOptions{Name: a.Target, Labels: a.Labels})
	return actions.OutcomeOf(true, err)
}

// adopted is an existing container of an action's name taken over.
type adopted struct {
	id string
	// ranBefore: it was started before, so its files may be the user's work.
	ranBefore bool
	// entrySetup: its command sets up the account (entrySetupArgv).
	entrySetup bool
}

// adoptContainer takes over the existing container of a's name after a
// create conflict: refused unless it carries the session's labels;
// unpaused when paused; done (actions.Unchanged) when it already runs.
// Otherwise it returns the container to start.
func (d *Executor) adoptContainer(ctx context.Context, a reconcile.Action, createErr error) (adopted, actions.Outcome, error) {
	existing, ierr := d.API.ContainerInspect(ctx, a.Target)
	if ierr != nil {
		return adopted{}, "", fmt.Errorf("%w (and inspecting the existing container failed: %v)", createErr, ierr)
	}
	if existing.Config == nil || !owned(existing.Config.Labels, a) {
		var labels map[string]string
		if existing.Config != nil {
			labels = existing.Config.Labels
		}
		return adopted{}, "", notOwned("container", a.Target, labels, a)
	}
	if existing.State != nil && existing.State.Paused {
		// Paused is not running (observed's one meaning); unpausing,
		// not restarting, gives the user their processes back as they were.
		if err := d.API.ContainerUnpause(ctx, existing.ID); err != nil {
			return adopted{}, "", fmt.Errorf("unpausing: %w", err)
		}
		return adopted{id: existing.ID}, actions.Changed, nil
	}
	if existing.State != nil && existing.State.Running {
		return adopted{id: existing.ID}, actions.Unchanged, nil
	}
	return adopted{id: existing.ID, ranBefore: existing.State != nil && ranAt(existing.State.StartedAt),
		entrySetup: hasEntrySetup(existing.Config.Cmd)}, "", nil
}

// createContainer creates and starts the action's container; isPrepared
// says Prepare created it already, as prepared.
func (d *Executor) createContainer(ctx context.Context, a reconcile.Action, prepared adopted, isPrepared bool) (actions.Outcome, error) {
	spec := a.Container
	if spec == nil {
		return "", fmt.Errorf("create-container without a container spec: %w", actions.ErrTerminal)
	}
	res := actions.Changed
	c, err := prepared, error(nil)
	if !isPrepared {
		if err := d.prepareMounts(spec); err != nil {
			return "", err
		}
		c, err = d.create(ctx, a)
	}
	switch {
	case err == nil:
	case errdefs.IsConflict(err):
		var done actions.Outcome
		if c, done, err = d.adoptContainer(ctx, a, err); err != nil || done != "" {
			return done, err
		}
		res = actions.Unchanged
	default:
		return "", err
	}
	if a.Restart != nil {
		// Recorded before the start: a start that fails, or a container
		// that dies at once, still counts towards the crash-loop limit.
		if _, err := d.Store.RecordRestart(ctx, a.SessionID, a.Restart.Count, a.Restart.NextAt, d.Now()); err != nil {
			return "", fmt.Errorf("recording restart %d: %w", a.Restart.Count, err)
		}
	}
	if err := d.start(ctx, c, spec); err != nil {
		if isPrepared && errdefs.IsNotFound(err) {
			// The prepared container is gone (the rollback of a plan
			// that failed after Prepare removed it): make it again.
			return d.createContainer(ctx, a, adopted{}, false)
		}
		return "", err
	}
	if res == actions.Unchanged {
		return actions.Changed, nil // it was adopted but had to be started
	}
	return res, nil
}

// create asks Docker for the action's container, pulling its image when
// missing; a conflict error means the name is taken.
func (d *Executor) create(ctx context.Context, a reconcile.Action) (adopted, error) {
	spec := a.Container
	cfg, host, netCfg := containerConfig(a)
	entry := d.entrySetupFits(ctx, spec)
	if entry {
		cfg.Cmd = entrySetupArgv(spec.User, spec.Shell, cfg.Cmd)
	}
	created, err := d.API.ContainerCreate(ctx, cfg, host, netCfg, nil, a.Target)
	// A missing network is also "not found"; only a missing image is pulled.
	if missingImage(err) {
		if perr := d.pull(ctx, spec.Image); perr != nil {
			return adopted{}, perr
		}
		created, err = d.API.ContainerCreate(ctx, cfg, host, netCfg, nil, a.Target)
	}
	if host.StorageOpt != nil && diskLimitUnsupported(err) {
		if d.DiskUnsupported != config.DiskWarn {
			return adopted{}, fmt.Errorf("the storage driver cannot limit the container's disk to %d bytes (defaults.disk; Docker: %v), and defaults.disk_unsupported is %q: "+
				"use a driver that supports it (overlay2 on xfs mounted with pquota, btrfs, zfs), unset defaults.disk, or set defaults.disk_unsupported: warn: %w",
				spec.DiskBytes, err, config.DiskRefuse, actions.ErrTerminal)
		}
		d.Log.Info("Creating the container without its disk limit: the storage driver cannot apply it (defaults.disk_unsupported: warn)",
			"container", a.Target, "diskBytes", spec.DiskBytes, "error", err.Error())
		host.StorageOpt = nil
		created, err = d.API.ContainerCreate(ctx, cfg, host, netCfg, nil, a.Target)
	}
	if err != nil {
		return adopted{}, err
	}
	return adopted{id: created.ID, entrySetup: entry}, nil
}

// start starts container c and, for a session container, makes sure its
// user's account is there before the user's process is started in it.
func (d *Executor) start(ctx context.Context, c adopted, spec *spec.Container) error {
	setupNeeded := spec.Role == observed.RoleSession && spec.User != ""
	if setupNeeded && c.entrySetup {
		setupErr, err := d.startWithEntrySetup(ctx, c.id, spec.User)
		if err != nil {
			return err
		}
		if setupErr != nil {
			_, err := d.failedSetup(ctx, c.id, c.ranBefore, setupErr)
			return err
		}
		return nil
	}
	if err := d.API.ContainerStart(ctx, c.id, container.StartOptions{}); err != nil {
		return fmt.Errorf("starting: %w", err)
	}
	if setupNeeded {
		if err := d.setupSession(ctx, c.id, spec); err != nil {
			_, err := d.failedSetup(ctx, c.id, c.ranBefore, err)
			return err
		}
	}
	return nil
}

// ranAt reports whether inspect's StartedAt names a real start (Docker
// writes the zero time, year 1, for a container never started).
func ranAt(startedAt string) bool {
	t, err := time.Parse(time.RFC3339Nano, startedAt)
	return err == nil && t.Year() > 1
}

func (d *Executor) pull(ctx context.Context, ref string) error {
	rc, err := d.API.ImagePull(ctx, ref, image.PullOptions{})
	if err != nil {
		return fmt.Errorf("image %s is not available locally and could not be pulled (build it or pull it first): %w", ref, err)
	}
	defer rc.Close()
	body, err := io.ReadAll(rc)
	if err != nil {
		return fmt.Errorf("pulling image %s: %w", ref, err)
	}
	if bytes.Contains(body, []byte(`"error"`)) {
		return fmt.Errorf("image %s is not available locally and could not be pulled: %s", ref, strings.TrimSpace(string(body)))
	}
	return nil
}

func containerConfig(a reconcile.Action) (*container.Config, *container.HostConfig, *network.NetworkingConfig) {
	s := a.Container
	cfg := &container.Config{
		Image: s.Image, Cmd: s.Cmd, Env: s.Env, Hostname: s.Hostname, Labels: a.Labels,
		OpenStdin: s.Role == observed.RoleSession,
	}
	host := &container.HostConfig{
		NetworkMode:    container.NetworkMode(s.Network),
		CapDrop:        s.Security.CapDrop,
		CapAdd:         s.Security.CapAdd,
		ReadonlyRootfs: s.Security.ReadonlyRootfs,
		Runtime:        s.Security.Runtime,
		Init:           boolPtr(false),
	}
	if len(s.Security.Tmpfs) > 0 {
		host.Tmpfs = s.Security.Tmpfs
	}
	if s.Security.NoNewPrivileges {
		host.SecurityOpt = []string{"no-new-privileges:true"}
	}
	if s.Security.PidsLimit > 0 {
		host.PidsLimit = &s.Security.PidsLimit
	}
	if s.CPUs > 0 {
		host.NanoCPUs = int64(s.CPUs * 1e9)
	}
	if s.MemoryBytes > 0 {
		host.Memory = s.MemoryBytes
	}
	if s.DiskBytes > 0 {
		// The storage driver's size option bounds the writable layer.
		host.StorageOpt = map[string]string{"size": strconv.FormatInt(s.DiskBytes, 10)}
	}
	for _, v := range s.Volumes {
		host.Mounts = append(host.Mounts, mount.Mount{Type: mount.TypeVolume, Source: v.Name, Target: v.Target})
	}
	for _, m := range s.Mounts {
		host.Mounts = append(host.Mounts, mount.Mount{Type: mount.TypeBind, Source: m.Source, Target: m.Target})
	}
	netCfg := &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{
		s.Network: {Aliases: s.Aliases},
	}}
	return cfg, host, netCfg
}

func boolPtr(b bool) *bool { return &b }

// setupSession checks the container's home mount, makes the user's
// account, and hands a new persistent home to the account.
func (d *Executor) setupSession(ctx context.Context, id string, spec *spec.Container) error {
	home, err := d.openHome(spec)
	if err != nil {
		return err
	}
	if home != nil {
		defer home.Close()
		if err := d.verifyHomeMount(ctx, id, spec.User, home); err != nil {
			return err
		}
	}
	uid, gid, err := d.setupUser(ctx, id, spec.User, spec.Shell)
	if err != nil || home == nil {
		return err
	}
	if uid <= 0 || gid < 0 {
		return fmt.Errorf("setting up user %s in the container: no uid and gid reported for the persistent home", spec.User)
	}
	return adoptHome(home, uid, gid)
}

// failedSetup handles a session container whose setup failed.
func (d *Executor) failedSetup(ctx context.Context, id string, ranBefore bool, err error) (actions.Outcome, error) {
	if ranBefore {
		// A container started again (it stopped, or is crash
		// looping) already has its account, and its files are the
		// user's: never removed here. One that stopped again at
		// once is the crash-loop back-off's to handle.
		if c, ierr := d.API.ContainerInspect(ctx, id); ierr == nil && c.State != nil && !c.State.Running {
			return actions.Changed, nil
		}
		return "", err
	}
	// The planner never re-creates a running container, so one left
	// running without its account would be marked running as is.
	// Remove it (even if ctx ran out) so the retry starts over.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if rerr := d.API.ContainerRemove(rctx, id, container.RemoveOptions{Force: true, RemoveVolumes: true}); rerr != nil && !errdefs.IsNotFound(rerr) {
		return "", fmt.Errorf("%w (and removing the container failed, remove it by hand: %v)", err, rerr)
	}
	return "", err
}

func (d *Executor) setupUser(ctx context.Context, id, user, shell string) (int, int, error) {
	code, out, err := Exec(ctx, d.API, id, []string{"sh", "-c", actions.UserSetupScript, "podspawn-setup", user, shell}, "root")
	if err != nil {
		return 0, 0, fmt.Errorf("setting up user %s in the container: %w", user, err)
	}
	if code != 0 {
		return 0, 0, fmt.Errorf("setting up user %s in the container: script exited %d: %s", user, code, strings.TrimSpace(out))
	}
	// The last line is "uid gid"; -1 when missing (only a home needs them).
	lines := strings.Split(strings.TrimSpace(out), "\n")
	uid, gid := -1, -1
	if _, err := fmt.Sscanf(lines[len(lines)-1], "%d %d", &uid, &gid); err != nil {
		return -1, -1, nil
	}
	return uid, gid, nil
}

// Exec runs cmd in a container without a TTY and returns its exit code and
// combined output.
func Exec(ctx context.Context, api API, id string, cmd []string, user string) (int, string, error) {
	ex, err := api.ContainerExecCreate(ctx, id, container.ExecOptions{Cmd: cmd, User: user, AttachStdout: true, AttachStderr: true})
	if err != nil {
		return -1, "", err
	}
	att, err := api.ContainerExecAttach(ctx, ex.ID, container.ExecAttachOptions{})
	if err != nil {
		return -1, "", err
	}
	defer att.Close()
	// The hijacked connection ignores ctx, so a command that hangs would
	// hold the worker (and the user's lock) past the reconcile timeout and
	// block shutdown; closing it on cancel ends the read.
	stop := context.AfterFunc(ctx, func() { att.Close() })
	defer stop()
	var buf bytes.Buffer
	_, err = stdcopy.StdCopy(&buf, &buf, att.Reader)
	if ctx.Err() != nil {
		return -1, buf.String(), fmt.Errorf("command did not finish: %w", ctx.Err())
	}
	if err != nil {
		return -1, buf.String(), err
	}
	insp, err := api.ContainerExecInspect(ctx, ex.ID)
	if err != nil {
		return -1, buf.String(), err
	}
	return insp.ExitCode, buf.String(), nil
}
