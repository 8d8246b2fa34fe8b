// Package reconcile is the pure diff between desired and observed state.
// Compute takes both snapshots and the current time and returns a Plan:
// ordered actions, each with a reason for humans. It does no I/O, reads no
// clock and logs nothing, so it is tested at exact instants and a dry run
// shows exactly what a real pass would do.
package reconcile

import (
	"time"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/spec"
	"github.com/podspawn/podspawn/observed"
)

// Kind is what an action does. The executor branches on Kind only.
type Kind string

const (
	KindReleaseLease Kind = "release-lease"
	// KindKillLeaseProcesses kills what a dead connection left running in
	// the session container: the processes carrying its desired.LeaseEnv.
	KindKillLeaseProcesses Kind = "kill-lease-processes"
	KindCancelGrace        Kind = "cancel-grace"
	KindStartGrace         Kind = "start-grace"
	// KindWarn tells each live connection's terminal that the max lifetime
	// is near; the lead time is recorded on the row, so it is sent once.
	KindWarn            Kind = "warn"
	KindMarkTerminating Kind = "mark-terminating"
	KindCreateNetwork   Kind = "create-network"
	KindCreateVolume    Kind = "create-volume"
	KindCreateContainer Kind = "create-container"
	KindMarkRunning     Kind = "mark-running"
	KindResetRestarts   Kind = "reset-restarts" // see CrashLoop
	KindRemoveContainer Kind = "remove-container"
	KindRemoveNetwork   Kind = "remove-network"
	KindRemoveVolume    Kind = "remove-volume"
	KindDeleteSession   Kind = "delete-session"
)

// Reason says why an action is planned. It is for humans and logs only:
// the executor must never branch on it.
type Reason string

const (
	ReasonLeaseDead         Reason = "lease-dead"
	ReasonReconnected       Reason = "reconnected"
	ReasonDisconnected      Reason = "disconnected"
	ReasonGraceExpired      Reason = "grace-expired"
	ReasonLifetimeEnding    Reason = "lifetime-ending"
	ReasonLifetimeExceeded  Reason = "lifetime-exceeded"
	ReasonUserRemoved       Reason = "user-removed"
	ReasonUserRequested     Reason = "user-requested"
	ReasonProjectRemoved    Reason = "project-removed"
	ReasonContainerGone     Reason = "container-gone"
	ReasonCreationAbandoned Reason = "creation-abandoned"
	ReasonOrphan            Reason = "orphan-no-session"
	ReasonStaleGeneration   Reason = "stale-generation"
	ReasonDuplicate         Reason = "duplicate"
	ReasonSessionCreating   Reason = "session-creating"
	ReasonServiceMissing    Reason = "service-missing"
	ReasonContainerStopped  Reason = "container-stopped"
	ReasonCrashLoop         Reason = "crash-loop"
	ReasonStayedUp          Reason = "stayed-up"
	// Skip reasons.
	ReasonForeignInstance   Reason = "foreign-instance"
	ReasonUnmanaged         Reason = "unmanaged"
	ReasonProtected         Reason = "protected"
	ReasonOrphanTooYoung    Reason = "orphan-too-young"
	ReasonContainerDownBusy Reason = "container-down-with-connections"
	ReasonDuplicateSession  Reason = "duplicate-session"
	ReasonInvalidKey        Reason = "invalid-key"
	ReasonCrashLoopBackOff  Reason = "crash-loop-back-off"
	// ReasonRuntimeRestarting: the runtime restarts the container itself
	// (the kubelet's CrashLoopBackOff).
	ReasonRuntimeRestarting Reason = "runtime-restarting"
	ReasonClockStep         Reason = "clock-step"
)

// Action is one step. Target names the object, or the session for database
// steps; TargetID pins the Docker object seen when planning, so a
// same-named replacement is never removed by mistake.
type Action struct {
	Kind      Kind               `json:"kind"`
	Key       desired.SessionKey `json:"key"`
	Target    string             `json:"target"`
	TargetID  string             `json:"target_id,omitempty"`
	SessionID string             `json:"session_id,omitempty"`
	Reason    Reason             `json:"reason"`
	Detail    string             `json:"detail"`
	LeaseID   int64              `json:"lease_id,omitempty"`
	// At is start-grace's grace expiry or warn's max lifetime; Before is
	// warn's lead time and Leases the connections it warns.
	At     time.Time       `json:"at,omitzero"`
	Before time.Duration   `json:"before,omitempty"`
	Leases []desired.Lease `json:"leases,omitempty"`
	// Labels and Container describe an object to create.
	Labels    map[string]string `json:"labels,omitempty"`
	Container *spec.Container   `json:"container,omitempty"`
	// Unplanned: decided from missing desired state (a key file, a session
	// row), not from a deadline or an admin's command; Guard may hold it.
	// RemovesSession (removes a session container, running or stopped: its
	// writable layer is the user's work) and NoInstance (the target has no
	// podspawn.instance label) are what Guard weighs.
	Unplanned      bool `json:"unplanned,omitempty"`
	RemovesSession bool `json:"removes_session,omitempty"`
	NoInstance     bool `json:"no_instance,omitempty"`
	// Restart is what starting a stopped session container again records
	// on the row (nil with crash-loop handling off); LogTail is how many
	// last log lines of a crash-looping container to log as it is removed.
	Restart *Restart `json:"restart,omitempty"`
	LogTail int      `json:"log_tail,omitempty"`
}

// Skip is an object the plan deliberately leaves alone, with why.
type Skip struct {
	Key        desired.SessionKey `json:"key"`
	ObjectKind observed.Kind      `json:"object_kind"`
	Target     string             `json:"target"`
	Reason     Reason             `json:"reason"`
	Detail     string             `json:"detail"`
}

// Plan is the result of Compute.
type Plan struct {
	Now     time.Time `json:"now"`
	Actions []Action  `json:"actions"`
	Skipped []Skip    `json:"skipped"`
	// Wake is the earliest future deadline (zero if none), so the daemon
	// sleeps instead of polling; Wakes holds each key's, in key order.
	Wake  time.Time `json:"wake,omitempty"`
	Wakes []KeyWake `json:"-"`
	// Unchanged counts desired sessions that need nothing.
	Unchanged int `json:"unchanged"`
	// Held are the actions Guard kept back, in plan order; Holds say why.
	Held  []Action `json:"held,omitempty"`
	Holds []Hold   `json:"holds,omitempty"`
}

// KeyWake is when a key next needs a look.
type KeyWake struct {
	Key desired.SessionKey
	At  time.Time
}

// Empty reports whether the plan has nothing to do.
func (p Plan) Empty() bool { return len(p.Actions) == 0 }
