// Package observed holds the types of what exists: the Docker containers,
// networks and volumes that carry podspawn's labels, and whether the
// processes behind connection leases are alive. Loaders live in
// sub-packages (dockerobs, proc) so reconcile never imports Docker.
package observed

import (
	"time"

	"github.com/podspawn/podspawn/desired"
)

// Labels podspawn puts on every object it creates.
const (
	LabelManagedBy = "managed-by"
	ManagedByValue = "podspawn"
	LabelUser      = "podspawn.user"
	LabelProject   = "podspawn.project"
	LabelSession   = "podspawn.session"
	LabelRole      = "podspawn.role"
	LabelInstance  = "podspawn.instance"
	LabelService   = "podspawn.service"
	// LabelKeep protects an object from removal (operators set it by hand).
	LabelKeep = "podspawn.keep"
)

// Roles of containers and volumes.
const (
	RoleSession = "session"
	RoleService = "service"
)

// Docker container states that are not running but are no stop either.
const (
	// StateRemoving: Docker is removing the container (docker rm -f in
	// progress); it cannot be started, and its destroy event follows.
	StateRemoving = "removing"
	// StatePaused: its processes are frozen, not gone.
	StatePaused = "paused"
	// StateRestarting: it stopped and the runtime itself starts it again
	// (the kubelet, backing off as CrashLoopBackOff): podspawn leaves it
	// to the runtime and reports it.
	StateRestarting = "restarting"
)

// Kind of a Docker object.
type Kind string

const (
	KindContainer Kind = "container"
	KindNetwork   Kind = "network"
	KindVolume    Kind = "volume"
)

// Object is one labelled Docker object.
type Object struct {
	Kind    Kind
	ID      string
	Name    string
	Created time.Time
	// Running is meaningful for containers only.
	Running bool
	State   string
	Labels  map[string]string
	// ExitCode, StartedAt and FinishedAt are a container's last run, as
	// Docker's inspect reports them; the times are zero when unknown (the
	// list call does not give them). Crash-loop handling reads them.
	ExitCode   int
	StartedAt  time.Time
	FinishedAt time.Time
	// RuntimeRestarts is how often the runtime restarted the container by
	// itself (the kubelet's count; 0 on Docker), and RuntimeReason why it
	// is not running now (CrashLoopBackOff), for reports.
	RuntimeRestarts int
	RuntimeReason   string
}

// Key returns the session key from the labels, and whether the user label
// was present and valid.
func (o Object) Key() (desired.SessionKey, bool) {
	u := o.Labels[LabelUser]
	if desired.ValidateUserName(u) != nil {
		return desired.Unattributed, false
	}
	p := o.Labels[LabelProject]
	if p != "" && desired.ValidateProjectName(p) != nil {
		return desired.Unattributed, false
	}
	return desired.SessionKey{User: u, Project: p}, true
}

// SessionID is the generation label ("" when absent).
func (o Object) SessionID() string { return o.Labels[LabelSession] }

// Instance is the state-database id label ("" when absent).
func (o Object) Instance() string { return o.Labels[LabelInstance] }

// Kept reports whether an operator protected the object from removal.
func (o Object) Kept() bool { return o.Labels[LabelKeep] == "true" }

// ManagedSelector is the label filter that selects podspawn's objects.
const ManagedSelector = LabelManagedBy + "=" + ManagedByValue

// Role is the role label.
func (o Object) Role() string { return o.Labels[LabelRole] }

// ProcessRef identifies a process across PID reuse.
type ProcessRef struct {
	PID   int
	Start uint64
}

// State is one observation. Complete is false for a per-key observation.
type State struct {
	Objects []Object
	// Exited holds the lease processes known to be gone (or replaced: the
	// PID runs with another start time). Every other lease is live, checked
	// or not: a lease is never released on missing information. Only the
	// few gone ones are kept, so a pass looks up each lease in a small set.
	Exited map[ProcessRef]struct{}
}

// ByKey groups objects by the session key their labels name.
func (s State) ByKey() map[desired.SessionKey][]Object {
	m := map[desired.SessionKey][]Object{}
	for _, o := range s.Objects {
		k, _ := o.Key()
		m[k] = append(m[k], o)
	}
	return m
}

// Change is one change a runtime's watch reports: the session it concerns
// and what happened, for logging.
type Change struct {
	Key          desired.SessionKey
	Kind, Action string
}

// Placement is where a runtime runs a session container, and the restarts
// the runtime made on its own. Docker restarts nothing by itself (podspawn
// does, and counts them on the session row); Kubernetes' kubelet restarts a
// crashing container in its Pod and counts them.
type Placement struct {
	// Node is the node the container's Pod is bound to ("" while it is
	// not scheduled).
	Node string
	// Restarts is the kubelet's restart count of the container.
	Restarts int
	// Up says the container runs, since StartedAt.
	Up        bool
	StartedAt time.Time
}

// Restarting says whether the runtime's restarts count now: the
// container is down, or has not stayed up for resetAfter since its last
// start (cleanup.crash_loop_reset_after, as podspawn's own count).
func (p Placement) Restarting(now time.Time, resetAfter time.Duration) bool {
	return p.Restarts > 0 && (!p.Up || now.Sub(p.StartedAt) < resetAfter)
}
