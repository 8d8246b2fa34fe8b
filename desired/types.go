// Package desired holds the types of what should exist: sessions keyed by
// (user, project), their connection leases, and the users that may log in.
// Loaders and edits live in sub-packages so that reconcile, which imports
// these types, never pulls in SQL or file I/O.
package desired

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// SessionKey identifies a session. Project "" is the default session.
type SessionKey struct {
	User    string `json:"user"`
	Project string `json:"project"`
}

// String renders the key the way operators type it: alice or alice@backend.
func (k SessionKey) String() string {
	if k.Project == "" {
		return k.User
	}
	return k.User + "@" + k.Project
}

// Compare orders keys by user, then project.
func (k SessionKey) Compare(o SessionKey) int {
	if c := strings.Compare(k.User, o.User); c != 0 {
		return c
	}
	return strings.Compare(k.Project, o.Project)
}

// Unattributed is the key under which objects that carry managed-by=podspawn
// but no parsable user label are reconciled.
var Unattributed = SessionKey{}

// validName matches ^[a-z][a-z0-9_-]{0,maxLen-1}$ without a regexp: a
// pass checks the names of every session and labelled object.
func validName(s string, maxLen int) bool {
	if len(s) == 0 || len(s) > maxLen || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		if b := s[i]; (b < 'a' || b > 'z') && (b < '0' || b > '9') && b != '_' && b != '-' {
			return false
		}
	}
	return true
}

// Valid reports whether both names of k are valid.
func (k SessionKey) Valid() bool {
	return ValidateUserName(k.User) == nil && (k.Project == "" || ValidateProjectName(k.Project) == nil)
}

// ValidateUserName checks a user name; the error says what a valid one is.
func ValidateUserName(name string) error {
	if !validName(name, 32) {
		return fmt.Errorf("invalid username %q: must be 1-32 chars, start with a lowercase letter, and contain only [a-z0-9_-]", name)
	}
	return nil
}

// ValidateProjectName checks a project name; the error says what a valid one is.
func ValidateProjectName(name string) error {
	if !validName(name, 64) {
		return fmt.Errorf("invalid project name %q: must be 1-64 chars, start with a lowercase letter, and contain only [a-z0-9_-]", name)
	}
	return nil
}

// ParseSessionKey parses the operator syntax user[@project].
func ParseSessionKey(s string) (SessionKey, error) {
	user, project, hasAt := strings.Cut(s, "@")
	if user == "" {
		return SessionKey{}, fmt.Errorf("invalid session %q: user is required (expected user or user@project)", s)
	}
	if err := ValidateUserName(user); err != nil {
		return SessionKey{}, fmt.Errorf("invalid session %q: %w", s, err)
	}
	if hasAt {
		if project == "" {
			return SessionKey{}, fmt.Errorf("invalid session %q: project is empty after '@' (use %s for the default session)", s, user)
		}
		if err := ValidateProjectName(project); err != nil {
			return SessionKey{}, fmt.Errorf("invalid session %q: %w", s, err)
		}
	}
	return SessionKey{User: user, Project: project}, nil
}

// Mode decides what happens when the last connection of a session ends.
type Mode string

const (
	ModeGracePeriod         Mode = "grace-period"
	ModeDestroyOnDisconnect Mode = "destroy-on-disconnect"
	ModePersistent          Mode = "persistent"
)

// ParseMode validates a mode string.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeGracePeriod, ModeDestroyOnDisconnect, ModePersistent:
		return m, nil
	}
	return "", fmt.Errorf("invalid mode %q: must be grace-period, destroy-on-disconnect, or persistent", s)
}

// Status is where a session is in its life.
type Status string

const (
	// StatusCreating: the row (the intent) exists; Docker objects may not yet.
	StatusCreating Status = "creating"
	StatusRunning  Status = "running"
	StatusGrace    Status = "grace_period"
	// StatusTerminating: teardown was decided; the row stays until Docker agreed.
	StatusTerminating Status = "terminating"
)

// Session is one row of desired state.
type Session struct {
	Key SessionKey
	// ID is unique per container generation; every Docker object of the
	// generation carries it as a label.
	ID            string
	Mode          Mode
	Status        Status
	CreatedAt     time.Time
	MaxLifetimeAt time.Time
	// GracePeriod is fixed when the row is created so that the teardown
	// policy comes from the row, never from whichever process disconnects last.
	GracePeriod time.Duration
	// GraceExpiry is zero unless Status is StatusGrace.
	GraceExpiry time.Time
	// TerminateReason says why a session was marked terminating
	// (an operator's stop, a removed user, a removed project).
	TerminateReason string
	Spec            Spec
	Leases          []Lease
	// RestartCount counts the times the session container was started
	// again after it stopped, since it last stayed up for the crash-loop
	// reset time; LastRestartAt is the latest of those starts and
	// NextRestartAt the earliest instant the next one is allowed (the
	// crash-loop back-off). Zero for a container that never stopped. They
	// are desired state, so a one-shot pass and a restarted daemon keep
	// the back-off a daemon started.
	RestartCount  int
	LastRestartAt time.Time
	NextRestartAt time.Time
	// WarnedBefore is the shortest lead time before MaxLifetimeAt at which
	// the connections were warned (session.warn_before), 0 before the first
	// warning; desired state, so a one-shot pass never warns twice.
	WarnedBefore time.Duration
}

// ContainerName is the session container's name.
func (s *Session) ContainerName() string { return s.Spec.ContainerName }

// Lease is one live SSH connection: the spawn process that serves it.
type Lease struct {
	ID        int64
	SessionID string
	PID       int
	// PIDStart is the process start time in clock ticks since boot, so that
	// a reused PID is never mistaken for the process that took the lease.
	PIDStart  uint64
	StartedAt time.Time
}

// Spec is everything needed to create the session's Docker objects. It is
// resolved once, when the generation is created, and stored with the row.
type Spec struct {
	Image         string            `json:"image"`
	Shell         string            `json:"shell"`
	CPUs          float64           `json:"cpus,omitempty"`
	MemoryBytes   int64             `json:"memory_bytes,omitempty"`
	DiskBytes     int64             `json:"disk_bytes,omitempty"`
	Env           []string          `json:"env,omitempty"`
	Hostname      string            `json:"hostname,omitempty"`
	ContainerName string            `json:"container_name"`
	NetworkName   string            `json:"network_name"`
	Security      Security          `json:"security"`
	Services      []Service         `json:"services,omitempty"`
	Mounts        []Mount           `json:"mounts,omitempty"`
	ExtraLabels   map[string]string `json:"extra_labels,omitempty"`
	// OnCreate runs once per container generation, OnStart on every
	// connection; both as the user, with sh -c (from a project's Podfile).
	OnCreate string `json:"on_create,omitempty"`
	OnStart  string `json:"on_start,omitempty"`
}

// Security mirrors the security section of the config.
type Security struct {
	CapDrop         []string          `json:"cap_drop,omitempty"`
	CapAdd          []string          `json:"cap_add,omitempty"`
	NoNewPrivileges bool              `json:"no_new_privileges"`
	PidsLimit       int64             `json:"pids_limit,omitempty"`
	ReadonlyRootfs  bool              `json:"readonly_rootfs,omitempty"`
	Tmpfs           map[string]string `json:"tmpfs,omitempty"`
	Runtime         string            `json:"runtime,omitempty"`
}

// Service is a companion container on the session network.
type Service struct {
	Name    string   `json:"name"`
	Image   string   `json:"image"`
	Env     []string `json:"env,omitempty"`
	Command []string `json:"command,omitempty"`
	// Volumes are named volumes that podspawn creates and labels.
	Volumes     []VolumeMount `json:"volumes,omitempty"`
	CPUs        float64       `json:"cpus,omitempty"`
	MemoryBytes int64         `json:"memory_bytes,omitempty"`
	DiskBytes   int64         `json:"disk_bytes,omitempty"`
}

// VolumeMount mounts the named volume Name at Target.
type VolumeMount struct {
	Name   string `json:"name"`
	Target string `json:"target"`
}

// Mount is a host bind mount into the session container (persistent homes,
// forwarded agent sockets).
type Mount struct {
	Source string `json:"source"`
	Target string `json:"target"`
	// Prepare says what the executor creates at Source before the
	// container: nothing ("") or a directory of MountPrep's kind.
	Prepare MountPrep `json:"prepare,omitempty"`
}

// MountPrep is the kind of host directory a mount needs.
type MountPrep string

const (
	// PrepareAgentDir: a root-owned 0711 directory, one per generation, in
	// which each connection forwarding an agent gets a subdirectory.
	PrepareAgentDir MountPrep = "agent-dir"
	// PrepareHome: a persistent home, owned by the container user, 0700.
	PrepareHome MountPrep = "home"
)

// AgentMountTarget is where a generation's agent directory appears in
// its session container.
const AgentMountTarget = "/run/podspawn/agent"

// AgentRelayDir is where the Kubernetes runtime copies the agent relay
// program (cmd/agentrelay) into a session Pod: a Pod on another node
// cannot mount a host socket, so a relay in it carries the agent's
// connections over an exec (see actions/agentrelay).
const AgentRelayDir = "/run/podspawn/relay"

// AgentMount returns the generation's agent mount, if it has one.
func (s Spec) AgentMount() (Mount, bool) {
	for _, m := range s.Mounts {
		if m.Prepare == PrepareAgentDir {
			return m, true
		}
	}
	return Mount{}, false
}

// ServiceContainerName is the Docker name of a companion service container.
func (s Spec) ServiceContainerName(svc string) string { return s.ContainerName + "-" + svc }

// VolumeName is the Docker name of a service's named volume.
func (s Spec) VolumeName(svc, vol string) string { return s.ContainerName + "-" + svc + "-" + vol }

// ContainerName returns podspawn-<user> or podspawn-<user>-<project>.
func ContainerName(k SessionKey) string {
	if k.Project == "" {
		return "podspawn-" + k.User
	}
	return "podspawn-" + k.User + "-" + k.Project
}

// NetworkName returns the session network name.
func NetworkName(k SessionKey) string { return ContainerName(k) + "-net" }

// State is a complete snapshot of desired state. A loader that cannot read
// every part returns an error, never a State.
//
// Sessions and Users are sorted lists, not maps: the store reads sessions
// in key order and the key directory is listed sorted, and reconcile pairs
// them with Docker's objects by merging sorted lists, which at 100k
// sessions costs a fraction of a hash lookup per session.
type State struct {
	// InstanceID is the random id of the state database; every object
	// podspawn creates carries it, and objects of other instances are never touched.
	InstanceID string
	// Sessions are in key order, one per key.
	Sessions []*Session
	// Users are the names that have a key file, sorted, each once.
	Users []string
	// DatabaseCreatedAt is when the state database was created (zero if
	// unknown). A database younger than running podspawn containers is a
	// sign of a wrong db_path or a lost database, not of orphans.
	DatabaseCreatedAt time.Time
}

// NewState returns a state of sessions and users in order. Of two
// sessions with one key, the later replaces the earlier.
func NewState(instanceID string, sessions []*Session, users []string) State {
	st := State{InstanceID: instanceID}
	for _, sess := range sessions {
		st.PutSession(sess)
	}
	st.Users = slices.Clone(users)
	slices.Sort(st.Users)
	st.Users = slices.Compact(st.Users)
	return st
}

func (s State) findSession(k SessionKey) (int, bool) {
	return slices.BinarySearchFunc(s.Sessions, k, func(sess *Session, k SessionKey) int { return sess.Key.Compare(k) })
}

// Session returns the session of k, or nil.
func (s State) Session(k SessionKey) *Session {
	if i, ok := s.findSession(k); ok {
		return s.Sessions[i]
	}
	return nil
}

// PutSession adds sess, or replaces the session of its key.
func (s *State) PutSession(sess *Session) {
	i, ok := s.findSession(sess.Key)
	if ok {
		s.Sessions[i] = sess
		return
	}
	s.Sessions = slices.Insert(s.Sessions, i, sess)
}

// RemoveSession removes the session of k, if any.
func (s *State) RemoveSession(k SessionKey) {
	if i, ok := s.findSession(k); ok {
		s.Sessions = slices.Delete(s.Sessions, i, i+1)
	}
}

// HasUser reports whether user has a key file.
func (s State) HasUser(user string) bool {
	_, ok := slices.BinarySearch(s.Users, user)
	return ok
}

// RemoveUser drops user from the users with a key file.
func (s *State) RemoveUser(user string) {
	if i, ok := slices.BinarySearch(s.Users, user); ok {
		s.Users = slices.Delete(s.Users, i, i+1)
	}
}

// Keys returns the session keys in order.
func (s State) Keys() []SessionKey {
	keys := make([]SessionKey, len(s.Sessions))
	for i, sess := range s.Sessions {
		keys[i] = sess.Key
	}
	return keys
}
