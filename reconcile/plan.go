// Package reconcile is the pure diff between desired and observed state.
// Compute takes both snapshots and the current time and returns a Plan: an
// ordered list of actions, each with a reason for humans. It does no I/O,
// reads no clock and logs nothing, so it can be tested at exact instants
// and a dry run shows exactly what a real pass would do.
package reconcile

import (
	"slices"
	"time"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/spec"
	"github.com/podspawn/podspawn/observed"
)

// Kind is what an action does. The executor branches on Kind only.
type Kind string

const (
	KindReleaseLease    Kind = "release-lease"
	KindCancelGrace     Kind = "cancel-grace"
	KindStartGrace      Kind = "start-grace"
	KindMarkTerminating Kind = "mark-terminating"
	KindCreateNetwork   Kind = "create-network"
	KindCreateVolume    Kind = "create-volume"
	KindCreateContainer Kind = "create-container"
	KindMarkRunning     Kind = "mark-running"
	KindRemoveContainer Kind = "remove-container"
	KindRemoveNetwork   Kind = "remove-network"
	KindRemoveVolume    Kind = "remove-volume"
	KindDeleteSession   Kind = "delete-session"
	// KindResetRestarts sets a session's crash-loop restart count back to
	// zero (see CrashLoop).
	KindResetRestarts Kind = "reset-restarts"
)

// Reason says why an action is planned. It is for humans and logs only:
// the executor must never branch on it.
type Reason string

const (
	ReasonLeaseDead         Reason = "lease-dead"
	ReasonReconnected       Reason = "reconnected"
	ReasonDisconnected      Reason = "disconnected"
	ReasonGraceExpired      Reason = "grace-expired"
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
	ReasonClockStep         Reason = "clock-step"
)

// Action is one step. Target names the object (container, network or
// volume name, or the session for database steps); TargetID pins the exact
// Docker object seen when planning, so a same-named replacement is never
// removed by mistake.
type Action struct {
	Kind      Kind               `json:"kind"`
	Key       desired.SessionKey `json:"key"`
	Target    string             `json:"target"`
	TargetID  string             `json:"target_id,omitempty"`
	SessionID string             `json:"session_id,omitempty"`
	Reason    Reason             `json:"reason"`
	Detail    string             `json:"detail"`
	LeaseID   int64              `json:"lease_id,omitempty"`
	// At is the grace expiry for start-grace, the max lifetime for warn.
	At time.Time `json:"at,omitzero"`
	// Before is warn's lead time, Leases the connections it warns.
	Before time.Duration   `json:"before,omitempty"`
	Leases []desired.Lease `json:"leases,omitempty"`
	// Labels are the labels of an object to create.
	Labels map[string]string `json:"labels,omitempty"`
	// Container is the spec of a container to create.
	Container *spec.Container `json:"container,omitempty"`
	// Unplanned: decided from something missing in desired state (a key
	// file, a session row) rather than from a deadline or an admin's
	// command. Guard may hold such actions.
	Unplanned bool `json:"unplanned,omitempty"`
	// StopsSession: the action removes a running session container.
	StopsSession bool `json:"stops_session,omitempty"`
	// NoInstance: the target carries no podspawn.instance label.
	NoInstance bool `json:"no_instance,omitempty"`
	// Restart, on a create-container that starts a stopped session
	// container again, is what to record on the session row (nil when
	// crash-loop handling is off).
	Restart *Restart `json:"restart,omitempty"`
	// LogTail, on a remove-container, is how many of the container's last
	// log lines to log before removing it (a crash-looping container).
	LogTail int `json:"log_tail,omitempty"`
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
	// Wake is the earliest future deadline (zero if none): the daemon sleeps
	// until then instead of polling.
	Wake time.Time `json:"wake,omitempty"`
	// Wakes are each key's earliest future deadline, in key order.
	Wakes []KeyWake `json:"-"`
	// Unchanged counts desired sessions that need nothing.
	Unchanged int `json:"unchanged"`
	// Held are actions the blast-radius guard kept back (see Guard), in
	// plan order, and Holds says why.
	Held  []Action `json:"held,omitempty"`
	Holds []Hold   `json:"holds,omitempty"`
}

// KeyWake is when a key next needs a look.
type KeyWake struct {
	Key desired.SessionKey
	At  time.Time
}

// WakeFor returns the earliest future deadline of key k.
func (p Plan) WakeFor(k desired.SessionKey) (time.Time, bool) {
	i, found := slices.BinarySearchFunc(p.Wakes, k, func(w KeyWake, k desired.SessionKey) int { return w.Key.Compare(k) })
	if !found {
		return time.Time{}, false
	}
	return p.Wakes[i].At, true
}

// Empty reports whether the plan has nothing to do.
func (p Plan) Empty() bool { return len(p.Actions) == 0 }

// Keys returns the keys that have actions, in plan order.
func (p Plan) Keys() []desired.SessionKey {
	var keys []desired.SessionKey
	seen := map[desired.SessionKey]bool{}
	for _, a := range p.Actions {
		if !seen[a.Key] {
			seen[a.Key] = true
			keys = append(keys, a.Key)
		}
	}
	return keys
}

// Effect is what an action does to the world, for counts and messages.
type Effect string

const (
	EffectCreate Effect = "create"
	EffectChange Effect = "change"
	EffectRemove Effect = "remove"
)

// Effect groups a kind into create, change or remove.
func (k Kind) Effect() Effect {
	switch k {
	case KindCreateNetwork, KindCreateVolume, KindCreateContainer:
		return EffectCreate
	case KindRemoveContainer, KindRemoveNetwork, KindRemoveVolume, KindDeleteSession:
		return EffectRemove
	}
	return EffectChange
}
