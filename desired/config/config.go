// Package config loads /etc/podspawn/config.yaml. A missing file means the
// defaults; a file that exists but cannot be read or parsed, or sets
// nothing, is an error, so that no command acts on defaults when the real
// configuration failed to load.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/podspawn/podspawn/desired"
)

// DefaultPath is where the server configuration lives.
const DefaultPath = "/etc/podspawn/config.yaml"

// Config is the parsed configuration with durations and sizes resolved.
type Config struct {
	// Path is the file this was loaded from; Exists says whether it existed.
	Path   string `yaml:"-"`
	Exists bool   `yaml:"-"`

	Auth      Auth          `yaml:"auth"`
	Defaults  ImageDefaults `yaml:"defaults"`
	Session   Session       `yaml:"session"`
	State     State         `yaml:"state"`
	Log       Log           `yaml:"log"`
	Security  Security      `yaml:"security"`
	Resources Resources     `yaml:"resources"`
	Cleanup   Cleanup       `yaml:"cleanup"`
	SSH       SSH           `yaml:"ssh"`
	Update    Update        `yaml:"update"`
	// Runtime is where sessions run: docker (the default) or kubernetes.
	// It is not security.runtime, which names Docker's OCI runtime (runc,
	// runsc) inside a Docker host; both keys stay, each in its own section.
	Runtime    string     `yaml:"runtime"`
	Kubernetes Kubernetes `yaml:"kubernetes"`
	// ProjectsFile is the registry of projects.
	ProjectsFile string `yaml:"projects_file"`
}

// Runtimes podspawn can run sessions on.
const (
	RuntimeDocker     = "docker"
	RuntimeKubernetes = "kubernetes"
)

// Kubernetes is the kubernetes section, used with runtime: kubernetes.
type Kubernetes struct {
	// Kubeconfig is the client's kubeconfig; empty means the in-cluster
	// configuration (podspawn running in a Pod).
	Kubeconfig string `yaml:"kubeconfig"`
	// Namespace holds every object podspawn creates.
	Namespace    string            `yaml:"namespace"`
	NodeSelector map[string]string `yaml:"node_selector"`
	RuntimeClass string            `yaml:"runtime_class"`
	StorageClass string            `yaml:"storage_class"`
	// VolumeSize is the storage a named volume's PersistentVolumeClaim
	// asks for (a Kubernetes quantity: 1Gi, 500Mi).
	VolumeSize string `yaml:"volume_size"`
	// ImageRegistry is where project images are pushed for the cluster to pull.
	ImageRegistry string `yaml:"image_registry"`
	// ImageRegistryAuth is a Docker client config.json (as `docker --config
	// DIR login` writes it) whose credentials for the registry's host the
	// push sends; empty: the push sends none.
	ImageRegistryAuth string `yaml:"image_registry_auth"`
	// ImagePullSecrets name existing Secrets of the namespace that session
	// Pods pull their images with (the kubelet reads them, not podspawn).
	ImagePullSecrets []string `yaml:"image_pull_secrets"`
	// AgentRelay is the agent relay program (cmd/agentrelay) that spawn
	// copies into session Pods for ssh.allow_agent_forwarding; empty:
	// podspawn-agentrelay next to the podspawn binary.
	AgentRelay string `yaml:"agent_relay"`
}

// AgentRelayName is the agent relay program's name next to podspawn's.
const AgentRelayName = "podspawn-agentrelay"

// AgentRelayPath is kubernetes.agent_relay, else AgentRelayName next to
// the podspawn binary bin (where the install puts it).
func (k Kubernetes) AgentRelayPath(bin string) string {
	if k.AgentRelay != "" {
		return k.AgentRelay
	}
	return filepath.Join(filepath.Dir(bin), AgentRelayName)
}

type Auth struct {
	KeyDir string `yaml:"key_dir"`
}

// ImageDefaults are the default session's image and shell, and the
// limits of every container: a project's Podfile may only tighten CPUs,
// Memory and Disk, never lift them.
type ImageDefaults struct {
	Image  string  `yaml:"image"`
	Shell  string  `yaml:"shell"`
	CPUs   float64 `yaml:"cpus"`
	Memory string  `yaml:"memory"`
	// MemoryBytes is Memory parsed; 0 means no limit.
	MemoryBytes int64 `yaml:"-"`
	// Disk bounds each container's writable layer through the storage
	// driver's size option; DiskBytes is it parsed, 0 for no limit.
	Disk      string `yaml:"disk"`
	DiskBytes int64  `yaml:"-"`
	// DiskUnsupported says what happens when Disk is set and the storage
	// driver cannot limit a container's size: DiskRefuse (the session does
	// not start) or DiskWarn (it starts without the limit, logged).
	DiskUnsupported string `yaml:"disk_unsupported"`
}

// Values of defaults.disk_unsupported.
const (
	DiskRefuse = "refuse"
	DiskWarn   = "warn"
)

type Session struct {
	GracePeriod Duration     `yaml:"grace_period"`
	MaxLifetime Duration     `yaml:"max_lifetime"`
	Mode        desired.Mode `yaml:"mode"`
	// WarnBefore are the lead times before max_lifetime at which every
	// live connection with a terminal is warned; empty: no warnings.
	WarnBefore []Duration `yaml:"warn_before"`
}

type State struct {
	DBPath   string `yaml:"db_path"`
	LockDir  string `yaml:"lock_dir"`
	HomesDir string `yaml:"homes_dir"`
	// HomeSize caps each user's persistent homes (their default and
	// project homes together): the home is an ext4 image of this size,
	// loop-mounted. Empty or 0: plain directories, no cap. HomeSizeBytes
	// is it parsed.
	HomeSize      string `yaml:"home_size"`
	HomeSizeBytes int64  `yaml:"-"`
	// AgentDir holds, per session generation, the directory bind-mounted
	// into the session container for forwarded ssh-agent sockets.
	AgentDir string `yaml:"agent_dir"`
	// ProjectsDir holds the clones of registered projects.
	ProjectsDir string `yaml:"projects_dir"`
}

// Dir is the state directory: the directory of the database.
func (s State) Dir() string { return filepath.Dir(s.DBPath) }

type Log struct {
	File     string `yaml:"file"`
	AuditLog string `yaml:"audit_log"`
	// AuditRequired: when the audit log cannot be written, commands that
	// change state fail and spawn refuses connections (false: warn only).
	AuditRequired bool `yaml:"audit_required"`
}

type Security struct {
	CapDrop         []string          `yaml:"cap_drop"`
	CapAdd          []string          `yaml:"cap_add"`
	NoNewPrivileges bool              `yaml:"no_new_privileges"`
	PidsLimit       int64             `yaml:"pids_limit"`
	ReadonlyRootfs  bool              `yaml:"readonly_rootfs"`
	Tmpfs           map[string]string `yaml:"tmpfs"`
	Runtime         string            `yaml:"runtime"`
	// BlockHostAccess drops what session containers send to the host's
	// own addresses (the network's gateway, every other address of the
	// host), so services listening on 0.0.0.0 stay out of their reach.
	BlockHostAccess bool `yaml:"block_host_access"`
	// AllowedHostPorts are the exceptions: "8080" (TCP and UDP),
	// "8080/tcp" or "53/udp".
	AllowedHostPorts []string `yaml:"allowed_host_ports"`
	// HostPorts is AllowedHostPorts parsed: sorted, one protocol each,
	// without duplicates.
	HostPorts []HostPort `yaml:"-"`
}

type Resources struct {
	MaxPerUser int `yaml:"max_per_user"`
	// MaxServicesPerProject bounds the companion services of one project
	// session; 0 allows none.
	MaxServicesPerProject int `yaml:"max_services_per_project"`
	// MaxVolumesPerProject bounds the named volumes of one project session
	// (distinct names across its services): each is storage outside the
	// writable layer's limit (on Kubernetes, a claim of volume_size).
	MaxVolumesPerProject int `yaml:"max_volumes_per_project"`
}

type Cleanup struct {
	// OrphanMinAge protects objects that a spawn is creating right now.
	OrphanMinAge Duration `yaml:"orphan_min_age"`
	// PendingTimeout is how long a session may stay in "creating" with no
	// live connection before it is considered abandoned.
	PendingTimeout Duration `yaml:"pending_timeout"`
	// MaxUnplannedRemovals bounds how many session containers one pass
	// removes because their key file or row is missing; more (and more than
	// half of them) are held until an operator confirms.
	MaxUnplannedRemovals int `yaml:"max_unplanned_removals"`
	// A stopped session container is started again at once, then with
	// waits of CrashLoopBackoff doubling up to CrashLoopBackoffMax between
	// restarts; one that stops again after CrashLoopMaxRestarts restarts,
	// none of which stayed up for CrashLoopResetAfter, is torn down with
	// reason crash-loop.
	CrashLoopMaxRestarts int      `yaml:"crash_loop_max_restarts"`
	CrashLoopResetAfter  Duration `yaml:"crash_loop_reset_after"`
	CrashLoopBackoff     Duration `yaml:"crash_loop_backoff"`
	CrashLoopBackoffMax  Duration `yaml:"crash_loop_backoff_max"`
	// MetricsAddr is where the daemon serves /metrics, /healthz and
	// /readyz (host:port); empty, the default, serves nothing.
	MetricsAddr string `yaml:"metrics_addr"`
}

type SSH struct {
	// AllowTCPForwarding lets users forward TCP ports through their SSH
	// connection. Off by default: a forwarded port reaches the host's
	// loopback services and other users' containers from the host side.
	AllowTCPForwarding bool `yaml:"allow_tcp_forwarding"`
	// AllowAgentForwarding lets sshd accept the client's ssh-agent (the
	// key line's agent-forwarding option and the sshd block), and gives
	// each connection that forwards one a relay socket in its session
	// container (SSH_AUTH_SOCK).
	AllowAgentForwarding bool `yaml:"allow_agent_forwarding"`
	// SFTPServer is the sftp-server binary inside session containers.
	SFTPServer string `yaml:"sftp_server"`
	// UseSudo makes the forced command "sudo -n <podspawn> spawn": users
	// need no Docker or database access; root-owned spawn trusts SUDO_USER.
	// Off, spawn runs as the user and trusts only its login name, but every
	// user then needs the Docker socket (root on the host) and write access
	// to the state database: only for hosts whose users are all admins.
	UseSudo bool `yaml:"use_sudo"`
	// Group is the host group of podspawn users (the sudoers rule names it).
	Group string `yaml:"group"`
	// AuthKeysUser is the unprivileged account sshd runs auth-keys as.
	AuthKeysUser string `yaml:"auth_keys_user"`
	// SSHDConfig is the sshd_config that server-setup edits and doctor reads.
	SSHDConfig string `yaml:"sshd_config"`
}

type Update struct {
	// BaseURL of the releases API (a mirror, or a test server); https://.
	BaseURL string `yaml:"base_url"`
	Repo    string `yaml:"repo"`
	// PublicKey is the minisign public key release archives must be signed
	// with; it replaces the one built into the binary, if any.
	PublicKey string `yaml:"public_key"`
	// AllowInsecureHTTP accepts http:// URLs. For tests only: the signature
	// still guards an install, but nothing guards what --check reports.
	AllowInsecureHTTP bool `yaml:"allow_insecure_http"`
}

// Duration is a Go duration that must carry a unit in YAML.
type Duration struct{ time.Duration }

// Defaults returns the configuration used when no file exists.
func Defaults() Config {
	return Config{
		Path:     DefaultPath,
		Auth:     Auth{KeyDir: "/etc/podspawn/keys"},
		Defaults: ImageDefaults{Image: "ubuntu:24.04", Shell: "/bin/bash", CPUs: 2.0, Memory: "2g", MemoryBytes: 2 << 30, DiskUnsupported: DiskRefuse},
		Session: Session{
			GracePeriod: Duration{60 * time.Second},
			MaxLifetime: Duration{8 * time.Hour},
			Mode:        desired.ModeGracePeriod,
			WarnBefore:  []Duration{{15 * time.Minute}, {time.Minute}},
		},
		State: State{
			DBPath:      "/var/lib/podspawn/state.db",
			LockDir:     "/var/lib/podspawn/locks",
			HomesDir:    "/var/lib/podspawn/homes",
			AgentDir:    "/run/podspawn/agent",
			ProjectsDir: "/var/lib/podspawn/projects",
		},
		Security: Security{
			CapDrop:          []string{"ALL"},
			CapAdd:           []string{"CHOWN", "SETUID", "SETGID", "DAC_OVERRIDE", "FOWNER", "NET_BIND_SERVICE"},
			NoNewPrivileges:  true,
			PidsLimit:        256,
			Tmpfs:            map[string]string{},
			BlockHostAccess:  true,
			AllowedHostPorts: []string{},
		},
		Resources: Resources{MaxPerUser: 3, MaxServicesPerProject: 8, MaxVolumesPerProject: 4},
		Cleanup: Cleanup{OrphanMinAge: Duration{30 * time.Second}, PendingTimeout: Duration{2 * time.Minute}, MaxUnplannedRemovals: 5,
			CrashLoopMaxRestarts: 10, CrashLoopResetAfter: Duration{10 * time.Minute},
			CrashLoopBackoff: Duration{time.Second}, CrashLoopBackoffMax: Duration{5 * time.Minute}},
		SSH: SSH{SFTPServer: "/usr/lib/openssh/sftp-server", UseSudo: true, Group: "podspawn",
			AuthKeysUser: "podspawn-auth", SSHDConfig: "/etc/ssh/sshd_config"},
		Log:          Log{AuditRequired: true},
		Update:       Update{BaseURL: "https://api.github.com", Repo: "podspawn/podspawn"},
		ProjectsFile: "/etc/podspawn/projects.yaml",
		Runtime:      RuntimeDocker,
		Kubernetes:   Kubernetes{Namespace: "podspawn", NodeSelector: map[string]string{}, VolumeSize: "1Gi"},
	}
}

// Load reads path. A missing file gives the defaults (Exists false); any
// other failure is an error that names the file and what to fix.
func Load(path string) (Config, error) {
	cfg := Defaults()
	cfg.Path = path
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return cfg, nil
	}
	if err != nil {
		return Config{}, fmt.Errorf("reading config %s: %w", path, err)
	}
	cfg.Exists = true
	if err := decode(data, &cfg); err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	// An administrator's file that sets nothing (emptied, or every line
	// commented out) must not silently become the defaults, which would
	// drop the runtime, capabilities and paths it was meant to set.
	if setsNothing(data) {
		return Config{}, fmt.Errorf("config %s exists but sets nothing (it is empty or holds only comments): "+
			"uncomment or add the settings you mean, or delete the file to run on the built-in defaults", path)
	}
	if err := cfg.validate(); err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Parse decodes and validates YAML on top of the defaults (for tests and
// for server-setup's default file).
func Parse(data []byte) (Config, error) {
	cfg := Defaults()
	if err := decode(data, &cfg); err != nil {
		return Config{}, err
	}
	if err := cfg.validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

func decode(data []byte, cfg *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("%s", nameKeys(data, strings.TrimPrefix(err.Error(), "yaml: ")))
	}
	return nil
}

// setsNothing reports whether data, which decoded, holds no setting:
// no document, a null one, or an empty mapping.
func setsNothing(data []byte) bool {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return false
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return true
	}
	n := doc.Content[0]
	return (n.Kind == yaml.ScalarNode && n.Tag == "!!null") || (n.Kind == yaml.MappingNode && len(n.Content) == 0)
}

var lineRE = regexp.MustCompile(`line (\d+): `)

// nameKeys rewrites "line N: ..." in a decoder error to also name the key
// at that line, so the operator sees which setting to fix.
func nameKeys(data []byte, msg string) string {
	var root yaml.Node
	if yaml.Unmarshal(data, &root) != nil {
		return msg
	}
	keys := map[int]string{}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				p := n.Content[i].Value
				if path != "" {
					p = path + "." + p
				}
				keys[n.Content[i].Line] = p
				walk(n.Content[i+1], p)
			}
		}
	}
	walk(&root, "")
	return lineRE.ReplaceAllStringFunc(msg, func(m string) string {
		var line int
		fmt.Sscanf(m, "line %d: ", &line)
		if k, ok := keys[line]; ok {
			return fmt.Sprintf("line %d (%s): ", line, k)
		}
		return m
	})
}

// UnmarshalYAML requires a unit so that "60" is not silently 60ns.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("line %d: duration must be a string such as 60s or 8h", n.Line)
	}
	v, err := ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	d.Duration = v
	return nil
}

// MarshalYAML writes the duration in Go syntax.
func (d Duration) MarshalYAML() (any, error) { return d.Duration.String(), nil }

// ParseDuration parses a Go duration and refuses a bare number.
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if _, err := strconv.ParseFloat(s, 64); err == nil && s != "0" {
		return 0, fmt.Errorf("invalid duration %q: must include a time unit (e.g. 60s, 8h)", s)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q: must be a Go duration such as 90s, 5m or 8h", s)
	}
	return d, nil
}

// ParseMemory parses sizes like 512m, 2g, 1.5G (binary multiples). "" and
// "0" mean no limit.
func ParseMemory(in string) (int64, error) {
	s := strings.TrimSpace(strings.ToLower(in))
	if s == "" || s == "0" {
		return 0, nil
	}
	s = strings.TrimSuffix(s, "b") // 512mb, 2gb and 100b read as 512m, 2g and 100
	mult := float64(1)
	switch {
	case strings.HasSuffix(s, "k"):
		mult, s = 1<<10, strings.TrimSuffix(s, "k")
	case strings.HasSuffix(s, "m"):
		mult, s = 1<<20, strings.TrimSuffix(s, "m")
	case strings.HasSuffix(s, "g"):
		mult, s = 1<<30, strings.TrimSuffix(s, "g")
	}
	v, err := strconv.ParseFloat(s, 64)
	// ParseFloat also takes "inf", "nan" and 1e30, which are no size.
	if err != nil || v < 0 || math.IsNaN(v) || math.IsInf(v, 0) || v*mult >= math.MaxInt64 {
		return 0, fmt.Errorf("invalid size %q: use a number with an optional k, m or g suffix (e.g. 512m, 2g)", in)
	}
	return int64(v * mult), nil
}

func (c *Config) validate() error {
	for _, check := range []func() error{c.validateSession, c.validateDefaults, c.validateLimits, c.validateCleanup, c.validatePaths, c.validateRuntime} {
		if err := check(); err != nil {
			return err
		}
	}
	return nil
}

func (c *Config) validateSession() error {
	if c.Session.GracePeriod.Duration < 0 {
		return fmt.Errorf("invalid session.grace_period %q: must not be negative", c.Session.GracePeriod.Duration)
	}
	if c.Session.MaxLifetime.Duration <= 0 {
		return fmt.Errorf("invalid session.max_lifetime %q: must be positive (e.g. 8h)", c.Session.MaxLifetime.Duration)
	}
	seen := map[time.Duration]bool{}
	for _, w := range c.Session.WarnBefore {
		if w.Duration <= 0 || seen[w.Duration] {
			return fmt.Errorf("invalid session.warn_before entry %q: each must be positive and listed once (e.g. [15m, 1m])", w.Duration)
		}
		seen[w.Duration] = true
	}
	if _, err := desired.ParseMode(string(c.Session.Mode)); err != nil {
		return fmt.Errorf("invalid session.mode %q: must be grace-period, destroy-on-disconnect, or persistent", c.Session.Mode)
	}
	return nil
}

func (c *Config) validateDefaults() error {
	mem, err := ParseMemory(c.Defaults.Memory)
	if err != nil {
		return fmt.Errorf("invalid defaults.memory %q: %w", c.Defaults.Memory, err)
	}
	c.Defaults.MemoryBytes = mem
	if c.Defaults.DiskBytes, err = ParseMemory(c.Defaults.Disk); err != nil {
		return fmt.Errorf("invalid defaults.disk %q: %w", c.Defaults.Disk, err)
	}
	if c.Defaults.DiskUnsupported != DiskRefuse && c.Defaults.DiskUnsupported != DiskWarn {
		return fmt.Errorf("invalid defaults.disk_unsupported %q: must be %s (sessions do not start where the storage driver cannot limit their size) or %s (they start without the limit)",
			c.Defaults.DiskUnsupported, DiskRefuse, DiskWarn)
	}
	if c.Defaults.CPUs < 0 || math.IsNaN(c.Defaults.CPUs) || math.IsInf(c.Defaults.CPUs, 0) {
		return fmt.Errorf("invalid defaults.cpus %v: must be 0 (unlimited) or positive", c.Defaults.CPUs)
	}
	if c.Defaults.Image == "" {
		return errors.New("invalid defaults.image: must not be empty")
	}
	if c.Defaults.Shell == "" || !strings.HasPrefix(c.Defaults.Shell, "/") {
		return fmt.Errorf("invalid defaults.shell %q: must be an absolute path", c.Defaults.Shell)
	}
	return nil
}

func (c *Config) validateLimits() error {
	if c.Resources.MaxPerUser < 0 {
		return fmt.Errorf("invalid resources.max_per_user %d: must be 0 (unlimited) or positive", c.Resources.MaxPerUser)
	}
	if c.Resources.MaxServicesPerProject < 0 {
		return fmt.Errorf("invalid resources.max_services_per_project %d: must be 0 (projects may have no services) or positive", c.Resources.MaxServicesPerProject)
	}
	if c.Resources.MaxVolumesPerProject < 0 {
		return fmt.Errorf("invalid resources.max_volumes_per_project %d: must be 0 (projects may have no named volumes) or positive", c.Resources.MaxVolumesPerProject)
	}
	if c.Security.PidsLimit < 0 {
		return fmt.Errorf("invalid security.pids_limit %d: must be 0 (unlimited) or positive", c.Security.PidsLimit)
	}
	ports, err := parseHostPorts(c.Security.AllowedHostPorts)
	if err != nil {
		return err
	}
	c.Security.HostPorts = ports
	return nil
}

func (c *Config) validateCleanup() error {
	if c.Cleanup.OrphanMinAge.Duration < 0 {
		return fmt.Errorf("invalid cleanup.orphan_min_age %q: must not be negative", c.Cleanup.OrphanMinAge.Duration)
	}
	if c.Cleanup.PendingTimeout.Duration <= 0 {
		return fmt.Errorf("invalid cleanup.pending_timeout %q: must be positive", c.Cleanup.PendingTimeout.Duration)
	}
	if c.Cleanup.MaxUnplannedRemovals < 0 {
		return fmt.Errorf("invalid cleanup.max_unplanned_removals %d: must be 0 (hold every such removal) or positive", c.Cleanup.MaxUnplannedRemovals)
	}
	if c.Cleanup.CrashLoopMaxRestarts < 1 {
		return fmt.Errorf("invalid cleanup.crash_loop_max_restarts %d: must be at least 1", c.Cleanup.CrashLoopMaxRestarts)
	}
	if c.Cleanup.CrashLoopResetAfter.Duration <= 0 {
		return fmt.Errorf("invalid cleanup.crash_loop_reset_after %q: must be positive (e.g. 10m)", c.Cleanup.CrashLoopResetAfter.Duration)
	}
	if c.Cleanup.CrashLoopBackoff.Duration <= 0 {
		return fmt.Errorf("invalid cleanup.crash_loop_backoff %q: must be positive (e.g. 1s)", c.Cleanup.CrashLoopBackoff.Duration)
	}
	if c.Cleanup.CrashLoopBackoffMax.Duration < c.Cleanup.CrashLoopBackoff.Duration {
		return fmt.Errorf("invalid cleanup.crash_loop_backoff_max %q: must be at least cleanup.crash_loop_backoff (%s)",
			c.Cleanup.CrashLoopBackoffMax.Duration, c.Cleanup.CrashLoopBackoff.Duration)
	}
	if c.Cleanup.MetricsAddr != "" {
		if err := ValidateListenAddr(c.Cleanup.MetricsAddr); err != nil {
			return fmt.Errorf("invalid cleanup.metrics_addr: %w", err)
		}
	}
	return nil
}

// MinHomeSize is the smallest state.home_size: an ext4 filesystem needs
// room for its metadata and journal.
const MinHomeSize = 16 << 20

func (c *Config) validatePaths() error {
	n, err := ParseMemory(c.State.HomeSize)
	if err == nil && n > 0 && n < MinHomeSize {
		err = fmt.Errorf("below the smallest home image, %dm", MinHomeSize>>20)
	}
	if err != nil {
		return fmt.Errorf("invalid state.home_size %q: %w", c.State.HomeSize, err)
	}
	c.State.HomeSizeBytes = n
	if c.Log.AuditLog != "" && !filepath.IsAbs(c.Log.AuditLog) {
		return fmt.Errorf("invalid log.audit_log %q: must be an absolute path, or empty to disable the audit log", c.Log.AuditLog)
	}
	// A list, not a map: with two bad paths, the same one is reported every time.
	for _, f := range []struct{ name, p string }{
		{"auth.key_dir", c.Auth.KeyDir}, {"state.db_path", c.State.DBPath}, {"state.lock_dir", c.State.LockDir},
		{"state.homes_dir", c.State.HomesDir}, {"state.agent_dir", c.State.AgentDir}, {"state.projects_dir", c.State.ProjectsDir}, {"projects_file", c.ProjectsFile},
	} {
		name, p := f.name, f.p
		if !filepath.IsAbs(p) {
			return fmt.Errorf("invalid %s %q: must be an absolute path", name, p)
		}
	}
	return nil
}

// WarnBefore returns session.warn_before as durations.
func (c Config) WarnBefore() []time.Duration {
	out := make([]time.Duration, 0, len(c.Session.WarnBefore))
	for _, w := range c.Session.WarnBefore {
		out = append(out, w.Duration)
	}
	return out
}

// SecuritySpec converts the security section for a session spec.
func (c Config) SecuritySpec() desired.Security {
	return desired.Security{
		CapDrop:         append([]string(nil), c.Security.CapDrop...),
		CapAdd:          append([]string(nil), c.Security.CapAdd...),
		NoNewPrivileges: c.Security.NoNewPrivileges,
		PidsLimit:       c.Security.PidsLimit,
		ReadonlyRootfs:  c.Security.ReadonlyRootfs,
		Tmpfs:           c.Security.Tmpfs,
		Runtime:         c.Security.Runtime,
	}
}

// ValidateListenAddr checks a host:port listen address: the host is an IP
// address, localhost or empty (every interface), the port a number from 1
// to 65535.
func ValidateListenAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port (e.g. 127.0.0.1:9464): %w", addr, err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: port %q must be a number from 1 to 65535", addr, port)
	}
	if host != "" && host != "localhost" && net.ParseIP(host) == nil {
		return fmt.Errorf("%q: host %q must be an IP address, localhost or empty (every interface)", addr, host)
	}
	return nil
}

// validateRuntime checks runtime and, for kubernetes, its section. The
// names must be valid Kubernetes names: a bad one fails here, at load,
// not at a user's first login.
func (c *Config) validateRuntime() error {
	switch c.Runtime {
	case RuntimeDocker:
		return nil
	case RuntimeKubernetes:
	default:
		return fmt.Errorf("invalid runtime %q: must be docker or kubernetes", c.Runtime)
	}
	k := c.Kubernetes
	if k.Kubeconfig != "" && !filepath.IsAbs(k.Kubeconfig) {
		return fmt.Errorf("invalid kubernetes.kubeconfig %q: must be an absolute path, or empty for the in-cluster configuration", k.Kubeconfig)
	}
	if errs := validation.IsDNS1123Label(k.Namespace); len(errs) > 0 {
		return fmt.Errorf("invalid kubernetes.namespace %q: %s", k.Namespace, strings.Join(errs, "; "))
	}
	for _, f := range []struct{ name, v string }{{"runtime_class", k.RuntimeClass}, {"storage_class", k.StorageClass}} {
		if f.v == "" {
			continue
		}
		if errs := validation.IsDNS1123Subdomain(f.v); len(errs) > 0 {
			return fmt.Errorf("invalid kubernetes.%s %q: %s", f.name, f.v, strings.Join(errs, "; "))
		}
	}
	for _, name := range k.ImagePullSecrets {
		if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
			return fmt.Errorf("invalid kubernetes.image_pull_secrets entry %q: must be the name of a Secret in namespace %s: %s", name, k.Namespace, strings.Join(errs, "; "))
		}
	}
	for key, v := range k.NodeSelector {
		if errs := validation.IsQualifiedName(key); len(errs) > 0 {
			return fmt.Errorf("invalid kubernetes.node_selector key %q: %s", key, strings.Join(errs, "; "))
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			return fmt.Errorf("invalid kubernetes.node_selector value %q of %s: %s", v, key, strings.Join(errs, "; "))
		}
	}
	if strings.Contains(k.ImageRegistry, "://") || strings.ContainsAny(k.ImageRegistry, " \t") || strings.HasSuffix(k.ImageRegistry, "/") {
		return fmt.Errorf("invalid kubernetes.image_registry %q: must be host[:port][/path] without a scheme or trailing slash (e.g. registry.example.com:5000/podspawn)", k.ImageRegistry)
	}
	if k.ImageRegistryAuth != "" && (!filepath.IsAbs(k.ImageRegistryAuth) || k.ImageRegistry == "") {
		return fmt.Errorf("invalid kubernetes.image_registry_auth %q: must be the absolute path of a Docker config.json, with kubernetes.image_registry set", k.ImageRegistryAuth)
	}
	if q, err := resource.ParseQuantity(k.VolumeSize); err != nil || q.Sign() <= 0 {
		return fmt.Errorf("invalid kubernetes.volume_size %q: must be a positive Kubernetes quantity such as 1Gi or 500Mi", k.VolumeSize)
	}
	if c.Security.Runtime != "" {
		return fmt.Errorf("invalid security.runtime %q with runtime: kubernetes: it names Docker's OCI runtime; set kubernetes.runtime_class instead", c.Security.Runtime)
	}
	if k.AgentRelay != "" && !filepath.IsAbs(k.AgentRelay) {
		return fmt.Errorf("invalid kubernetes.agent_relay %q: must be an absolute path, or empty for podspawn-agentrelay next to the podspawn binary", k.AgentRelay)
	}
	return nil
}
