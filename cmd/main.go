// Command podspawn gives every SSH user of a shared server their own
// Docker container, and reconciles Docker with the session database.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
	"github.com/docker/docker/client"
	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/clock"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/actions/audit"
	"github.com/podspawn/podspawn/actions/dockeract"
	"github.com/podspawn/podspawn/actions/dockerexec"
	"github.com/podspawn/podspawn/actions/k8sact"
	"github.com/podspawn/podspawn/controller"
	"github.com/podspawn/podspawn/desired/config"
	"github.com/podspawn/podspawn/desired/sqlstore"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/observed/dockerobs"
	"github.com/podspawn/podspawn/observed/k8sobs"
	"github.com/podspawn/podspawn/reconcile"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = "dev"

// CLI lists every command. Each command is a struct in its own file with
// a Run(*App) error method.
type CLI struct {
	Config    string `help:"Path of the config file." default:"/etc/podspawn/config.yaml" type:"path" env:"PODSPAWN_CONFIG"`
	LogFormat string `help:"Log format on stderr: text or json." enum:"text,json" default:"text"`
	Verbosity int    `help:"Log verbosity. Commands print only warnings and errors on stderr by default; -v adds each action taken (the daemon logs those already), -vv more." short:"v" type:"counter"`

	Cleanup       CleanupCmd       `cmd:"" help:"Reconcile Docker with the session database: expire grace periods and lifetimes, remove orphans."`
	AddProject    AddProjectCmd    `cmd:"" name:"add-project" help:"Register a project: clone it, build its Podfile image."`
	UpdateProject UpdateProjectCmd `cmd:"" name:"update-project" help:"Pull a project and rebuild its image if the Podfile changed."`
	RemoveProject RemoveProjectCmd `cmd:"" name:"remove-project" help:"Deregister a project and remove its clone (the image is kept)."`
	Version       VersionCmd       `cmd:"" help:"Print the podspawn version."`
	Doctor        DoctorCmd        `cmd:"" help:"Run preflight checks of Docker, sshd, directories, disk and state; exit 1 if any failed."`
	Update        UpdateCmd        `cmd:"" help:"Replace this binary with the latest release (checksum-verified, atomic); --check only reports."`
	AuthKeys      AuthKeysCmd      `cmd:"" name:"auth-keys" help:"sshd AuthorizedKeysCommand: print the user's keys, each forced to 'podspawn spawn'."`
	AgentDial     AgentDialCmd     `cmd:"" name:"agent-dial" hidden:"" help:"Internal: spawn's helper that connects to the forwarded agent as the SSH user."`
	Spawn         SpawnCmd         `cmd:"" help:"Forced command of every podspawn key: serve one SSH connection in the user's session container."`
	ServerSetup   ServerSetupCmd   `cmd:"" name:"server-setup" help:"Prepare this host: accounts, directories, sudoers rule and the sshd_config block (idempotent)."`

	List         ListCmd         `cmd:"" help:"List the sessions in the state database."`
	Stop         StopCmd         `cmd:"" help:"Destroy a session: its container, services, network and record."`
	Status       StatusCmd       `cmd:"" help:"Show session, connection and container counts (or Prometheus metrics)."`
	ListUsers    ListUsersCmd    `cmd:"" name:"list-users" help:"List the users of the key directory and their key counts."`
	AddUser      AddUserCmd      `cmd:"" name:"add-user" help:"Add a user's public keys and create (or adopt) the host account sshd needs."`
	FinishDetach FinishDetachCmd `cmd:"" name:"finish-detach" hidden:"" help:"Tear down a session that ended at its last disconnect (started by spawn)."`
	RemoveUser   RemoveUserCmd   `cmd:"" name:"remove-user" help:"Remove a user's key file (and, with --force, destroy their sessions)."`
}

// App carries what commands share, built lazily so that a command pays
// only for what it uses (auth-keys never opens Docker).
type App struct {
	CLI    *CLI
	Stdout io.Writer
	Stderr io.Writer
	Log    logr.Logger
	Clock  clock.WithTicker

	cfg     *config.Config
	store   *sqlstore.Store
	docker  *client.Client
	runtime Runtime
	// dockerObserver, when set before the client is made, times every
	// Docker request (the daemon's metrics).
	dockerObserver dockerobs.RequestObserver
	// kubeObserver does the same for the Kubernetes API (spawn's trace).
	kubeObserver k8sobs.RequestObserver

	// The audit log (see audit.go): the writer, why it could not be
	// opened, who this process acts for, and the executors that record
	// session.create and session.destroy.
	audit      *audit.Writer
	auditErr   error
	auditActor string
	auditExecs []*audit.Executor
}

// Runtime is the container runtime behind podspawn's own interfaces.
// Commands see only this; the Docker implementation below is the one
// place in cmd/ that knows the runtime is Docker.
type Runtime interface {
	controller.Lister
	controller.ContainerInspector
	actions.Images
	// Ping reports whether the runtime answers.
	Ping(ctx context.Context) error
	// Executor executes plan actions against the runtime and st.
	Executor(st actions.Store, fw actions.HostFirewall, log logr.Logger) actions.Executor
	// Execer runs commands in session containers.
	Execer(log logr.Logger) actions.Execer
	// Watcher streams the runtime's changes of instance's objects.
	Watcher(instance string, log logr.Logger) controller.Watcher
	// Placements maps instance's session containers (by name) to where
	// they run and the runtime's own restarts of them; nil when the
	// runtime places and restarts nothing itself (Docker).
	Placements(ctx context.Context, instance string) (map[string]observed.Placement, error)
}

// dockerRuntime is Runtime for the local Docker daemon.
type dockerRuntime struct {
	dockerobs.Lister
	dockerobs.Inspector
	dockeract.Images
	api *client.Client
	now func() time.Time
	// agentDir is state.agent_dir (the executor removes a generation's),
	// homesDir state.homes_dir (the executor makes persistent homes there).
	agentDir, homesDir string
	// homeSize is state.home_size in bytes.
	homeSize int64
	// diskUnsupported is defaults.disk_unsupported.
	diskUnsupported string
}

func newDockerRuntime(dc *client.Client, now func() time.Time) *dockerRuntime {
	return &dockerRuntime{Lister: dockerobs.Lister{API: dc}, Inspector: dockerobs.Inspector{API: dc}, Images: dockeract.Images{API: dc}, api: dc, now: now}
}

func (r *dockerRuntime) Ping(ctx context.Context) error {
	_, err := r.api.Ping(ctx)
	return err
}

func (r *dockerRuntime) Executor(st actions.Store, fw actions.HostFirewall, log logr.Logger) actions.Executor {
	return &dockeract.Executor{API: r.api, Store: st, Now: r.now, Log: log, HostFirewall: fw, DiskUnsupported: r.diskUnsupported,
		AgentDir: r.agentDir, HomesDir: r.homesDir, HomeSize: r.homeSize}
}

func (r *dockerRuntime) Execer(log logr.Logger) actions.Execer {
	return dockerexec.Execer{API: r.api, Log: log}
}

func (r *dockerRuntime) Watcher(instance string, log logr.Logger) controller.Watcher {
	return dockerobs.NewWatcher(r.api, instance, log)
}

// Placements is nil: sessions run on this host, and only podspawn restarts
// them (counted on the session row).
func (r *dockerRuntime) Placements(context.Context, string) (map[string]observed.Placement, error) {
	return nil, nil
}

// kubeRuntime is Runtime for a Kubernetes namespace (runtime: kubernetes).
type kubeRuntime struct {
	k8sobs.Lister
	k8sact.Images
	c        *k8sobs.Client
	settings k8sact.Settings
	now      func() time.Time
}

// newKubeClient connects to the cluster (tests replace it with a fake).
var newKubeClient = k8sobs.NewClient

// registryAuth reads kubernetes.image_registry_auth for a push or doctor.
var registryAuth = dockeract.RegistryAuth

func newKubeRuntime(cfg config.Config, now func() time.Time, docker func() (*client.Client, error), observe k8sobs.RequestObserver) (*kubeRuntime, error) {
	k := cfg.Kubernetes
	c, err := newKubeClient(k.Kubeconfig, k.Namespace, observe)
	if err != nil {
		return nil, err
	}
	// Project images are built on this host with Docker, as with the
	// Docker runtime, and pushed to the registry; Docker is reached only
	// when an image is built.
	images := k8sact.Images{Registry: k.ImageRegistry,
		Build: func(ctx context.Context, tag, dockerfile string) (string, error) {
			dc, err := docker()
			if err != nil {
				return "", err
			}
			return dockeract.BuildImage(ctx, dc, tag, dockerfile)
		},
		Push: func(ctx context.Context, local, remote string) error {
			dc, err := docker()
			if err != nil {
				return err
			}
			auth := ""
			if k.ImageRegistryAuth != "" {
				// Read at each push, so a new login needs no restart.
				if auth, err = registryAuth(k.ImageRegistryAuth, k.ImageRegistry); err != nil {
					return err
				}
			}
			return dockeract.PushImage(ctx, dc, local, remote, auth)
		}}
	// Validated at config load.
	size, _ := resource.ParseQuantity(k.VolumeSize)
	home := size
	if cfg.State.HomeSizeBytes > 0 {
		home = *resource.NewQuantity(cfg.State.HomeSizeBytes, resource.BinarySI)
	}
	return &kubeRuntime{Lister: k8sobs.Lister{C: c}, Images: images, c: c, now: now,
		settings: k8sact.Settings{NodeSelector: k.NodeSelector, RuntimeClass: k.RuntimeClass, Registry: k.ImageRegistry,
			StorageClass: k.StorageClass, VolumeSize: size, HomeSize: home, ImagePullSecrets: k.ImagePullSecrets}}, nil
}

func (r *kubeRuntime) Executor(st actions.Store, _ actions.HostFirewall, log logr.Logger) actions.Executor {
	// The state database's store also reads a session's services.
	sl, _ := st.(k8sact.SessionLoader)
	return &k8sact.Executor{C: r.c, Store: st, Now: r.now, Log: log, Settings: r.settings, Sessions: sl}
}

func (r *kubeRuntime) Execer(log logr.Logger) actions.Execer { return k8sact.Execer{C: r.c, Log: log} }

func (r *kubeRuntime) Watcher(instance string, log logr.Logger) controller.Watcher {
	return k8sobs.NewWatcher(r.c, instance, log)
}

// Homes are the users' persistent homes of the configured runtime.
func (a *App) Homes(ctx context.Context) (homeStore, error) {
	cfg, err := a.Config()
	if err != nil {
		return nil, err
	}
	if cfg.Runtime != config.RuntimeKubernetes {
		return dirHomes{dir: cfg.State.HomesDir}, nil
	}
	rt, err := a.Runtime()
	if err != nil {
		return nil, err
	}
	st, err := a.Store(ctx)
	if err != nil {
		return nil, err
	}
	kr, ok := rt.(*kubeRuntime)
	if !ok {
		return nil, fmt.Errorf("runtime: kubernetes is configured but the runtime is %T", rt)
	}
	return kubeHomes{k8sact.Homes{C: kr.c, Instance: st.InstanceID()}}, nil
}

// kubeHomes are the Kubernetes runtime's homes, a claim per user.
type kubeHomes struct{ k8sact.Homes }

// Describe gives the claim's capacity; its usage would take the
// kubelet's stats (nodes/proxy, a cluster-wide right), so it is n/a.
func (h kubeHomes) Describe(ctx context.Context, user string) string {
	home, err := h.Get(ctx, user)
	switch {
	case err != nil:
		return "unreadable: " + err.Error()
	case home == nil:
		return "no home"
	case home.Deleting:
		return "being deleted (persistentvolumeclaim/" + home.Name + ")"
	case home.Capacity.IsZero():
		return "n/a of " + home.Requested.String() + " requested, not bound yet (persistentvolumeclaim/" + home.Name + ")"
	}
	return "n/a of " + humanBytes(home.Capacity.Value()) + " (persistentvolumeclaim/" + home.Name + ")"
}

func (h kubeHomes) Find(ctx context.Context, user string) (homeRef, bool, error) {
	home, err := h.Get(ctx, user)
	if err != nil || home == nil {
		return homeRef{}, false, err
	}
	return homeRef{Name: "persistentvolumeclaim/" + home.Name}, true, nil
}

func (h kubeHomes) Purge(ctx context.Context, user string) error {
	_, err := h.Homes.Purge(ctx, user)
	return err
}

// ExitError ends the process with Code after printing Err (if any).
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}

func (e *ExitError) Unwrap() error { return e.Err }

// Config loads the config once. A file that exists but is broken is an
// error: no command acts on defaults when the real config failed.
func (a *App) Config() (config.Config, error) {
	if a.cfg == nil {
		cfg, err := config.Load(a.CLI.Config)
		if err != nil {
			return config.Config{}, err
		}
		a.cfg = &cfg
	}
	return *a.cfg, nil
}

// Store opens the state database once.
func (a *App) Store(ctx context.Context) (*sqlstore.Store, error) {
	if a.store == nil {
		cfg, err := a.Config()
		if err != nil {
			return nil, err
		}
		st, err := sqlstore.Open(ctx, cfg.State.DBPath)
		if err != nil {
			return nil, err
		}
		a.store = st
	}
	return a.store, nil
}

// Docker returns the Docker client.
func (a *App) Docker() (*client.Client, error) {
	if a.docker == nil {
		newClient := dockerobs.NewClient
		if a.dockerObserver != nil {
			newClient = func() (*client.Client, error) { return dockerobs.NewInstrumentedClient(a.dockerObserver) }
		}
		c, err := newClient()
		if err != nil {
			return nil, err
		}
		a.docker = c
	}
	return a.docker, nil
}

// Runtime connects to the container runtime once.
func (a *App) Runtime() (Runtime, error) {
	if a.runtime == nil {
		cfg, err := a.Config()
		if err != nil {
			return nil, err
		}
		if cfg.Runtime == config.RuntimeKubernetes {
			kr, err := newKubeRuntime(cfg, a.Clock.Now, a.Docker, a.kubeObserver)
			if err != nil {
				return nil, err
			}
			a.runtime = kr
			return kr, nil
		}
		dc, err := a.Docker()
		if err != nil {
			return nil, err
		}
		rt := newDockerRuntime(dc, a.Clock.Now)
		if cfg, err := a.Config(); err == nil {
			rt.diskUnsupported = cfg.Defaults.DiskUnsupported
			rt.agentDir, rt.homesDir, rt.homeSize = cfg.State.AgentDir, cfg.State.HomesDir, cfg.State.HomeSizeBytes
		}
		a.runtime = rt
	}
	return a.runtime, nil
}

// ControllerOptions are the knobs commands may set.
type ControllerOptions struct {
	DryRun  bool
	Workers int
	// AllowMassRemoval confirms, for this process, removals the
	// blast-radius guard would hold.
	AllowMassRemoval bool
}

// Controller builds a controller; with DryRun it has no executor and
// only plans.
func (a *App) Controller(ctx context.Context, o ControllerOptions) (*controller.Controller, error) {
	cfg, err := a.Config()
	if err != nil {
		return nil, err
	}
	st, err := a.Store(ctx)
	if err != nil {
		return nil, err
	}
	rt, err := a.Runtime()
	if err != nil {
		return nil, err
	}
	var ex actions.Executor
	if !o.DryRun {
		ex = rt.Executor(st, executorFirewall(cfg), a.Log)
		// A log that failed to open was refused or accepted by openAudit.
		w, _ := a.Audit()
		ax := &audit.Executor{Next: ex, Audit: w, Actor: a.auditActor, Log: a.Log}
		a.auditExecs = append(a.auditExecs, ax)
		ex = ax
	}
	workers := o.Workers
	if workers < 1 {
		workers = 4
	}
	return &controller.Controller{
		Store: st, KeyDir: cfg.Auth.KeyDir, LockDir: cfg.State.LockDir, Observer: rt, Executor: ex,
		Options: reconcile.Options{OrphanMinAge: cfg.Cleanup.OrphanMinAge.Duration, PendingTimeout: cfg.Cleanup.PendingTimeout.Duration, CrashLoop: crashLoop(cfg.Cleanup),
			WarnBefore: cfg.WarnBefore()},
		Clock: a.Clock, Log: a.Log, Workers: workers, ReconcileTimeout: 2 * time.Minute, LockTimeout: userLockTimeout,
		Guard:     reconcile.GuardLimits{MaxUnplannedRemovals: cfg.Cleanup.MaxUnplannedRemovals, Allow: o.AllowMassRemoval},
		Monotonic: monotonic(a.Clock), BootClock: bootClock(a.Clock),
	}, nil
}

// processStart anchors the monotonic clock of clock-step detection.
var processStart = time.Now()

// monotonic is the monotonic clock that lets a controller detect steps of
// the wall clock between passes; only the real clock has one (a fake
// clock in tests moves on its own).
func monotonic(c clock.WithTicker) func() time.Duration {
	if _, ok := c.(clock.RealClock); !ok {
		return nil
	}
	return func() time.Duration { return time.Since(processStart) }
}

// bootClock lets one-shot passes detect steps of the wall clock between
// processes (CLOCK_BOOTTIME counts from boot, across processes and
// suspends); only the real clock has one, like monotonic.
func bootClock(c clock.WithTicker) func() (time.Duration, string, error) {
	if _, ok := c.(clock.RealClock); !ok {
		return nil
	}
	return readBootClock
}

func readBootClock() (time.Duration, string, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0, "", fmt.Errorf("reading CLOCK_BOOTTIME: %w", err)
	}
	// Without a boot id, boot time going backwards still tells a reboot.
	id, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return time.Duration(ts.Nano()), strings.TrimSpace(string(id)), nil
}

// crashLoop is the crash-loop policy of the cleanup section.
func crashLoop(c config.Cleanup) reconcile.CrashLoop {
	return reconcile.CrashLoop{MaxRestarts: c.CrashLoopMaxRestarts, ResetAfter: c.CrashLoopResetAfter.Duration,
		BackoffBase: c.CrashLoopBackoff.Duration, BackoffMax: c.CrashLoopBackoffMax.Duration}
}

// Close releases what the app opened.
func (a *App) Close() {
	if a.store != nil {
		a.store.Close()
	}
	if a.docker != nil {
		a.docker.Close()
	}
	a.audit.Close()
}

// newLogger is the zap logger of the cleanup daemon and of spawn's log
// file or syslog: info and up by default, logr V(n) with n repetitions of -v.
func newLogger(format string, verbosity int, w io.Writer) logr.Logger {
	// logr V(n) is zap level -n.
	return newZapLogger(format, zapcore.Level(-verbosity), w)
}

// newCommandLogger is the logger of a one-shot command (stop, remove-user,
// cleanup without --daemon, ...), which prints its results on stdout. At
// the default verbosity stderr gets only warnings and errors: as plain
// lines in text format (humanSink), as zap's JSON records in json format.
// With -v the controller's per-action progress appears too, logged by zap
// as the daemon logs it.
func newCommandLogger(format string, verbosity int, w io.Writer) logr.Logger {
	switch {
	case verbosity > 0:
		return newLogger(format, verbosity, w)
	case format == "json":
		return newZapLogger(format, zapcore.ErrorLevel, w)
	}
	return newHumanLogger(w)
}

func newZapLogger(format string, level zapcore.Level, w io.Writer) logr.Logger {
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if format == "json" {
		enc = zapcore.NewJSONEncoder(encCfg)
	} else {
		encCfg.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	}
	core := zapcore.NewCore(enc, zapcore.AddSync(w), zap.NewAtomicLevelAt(level))
	return zapr.NewLogger(zap.New(core))
}

// run is main without os.Exit, for tests.
func run(args []string, stdout, stderr io.Writer) int {
	var cli CLI
	exited, exitCode := false, 0
	parser, err := kong.New(&cli,
		kong.Name("podspawn"),
		kong.Description("Per-user Docker containers behind OpenSSH, with a reconciling cleanup controller."),
		kong.Writers(stdout, stderr),
		kong.Exit(func(code int) { exited, exitCode = true, code }),
		kong.UsageOnError(),
	)
	if err != nil {
		fmt.Fprintf(stderr, "Error: %v\n", err)
		return 2
	}
	kctx, err := parser.Parse(args)
	if exited {
		return exitCode
	}
	if err != nil {
		fmt.Fprintf(stderr, "Error: %v\n", err)
		return 2
	}
	app := &App{CLI: &cli, Stdout: stdout, Stderr: stderr, Log: newCommandLogger(cli.LogFormat, cli.Verbosity, stderr), Clock: newClock(),
		auditActor: audit.AdminActor(os.Getenv("SUDO_USER"), os.Getuid())}
	defer app.Close()
	if err := runAudited(kctx, app, args); err != nil {
		var ee *ExitError
		if errors.As(err, &ee) {
			if ee.Err != nil {
				fmt.Fprintf(stderr, "Error: %v\n", ee.Err)
			}
			return ee.Code
		}
		fmt.Fprintf(stderr, "Error: %v\n", err)
		return 1
	}
	return 0
}

// signalContext is cancelled on SIGINT or SIGTERM.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// VersionCmd prints the version.
type VersionCmd struct{}

// Run prints the version.
func (VersionCmd) Run(a *App) error {
	fmt.Fprintln(a.Stdout, version)
	return nil
}
