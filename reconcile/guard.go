package reconcile

import (
	"fmt"
	"slices"
	"time"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/observed"
)

// HoldFix tells an operator how to proceed with held removals.
const HoldFix = "check the plan with 'podspawn cleanup --dry-run'; if the removals are meant, run 'podspawn cleanup --allow-mass-removal' once"

// GuardLimits bound how much one pass may destroy because desired state
// went missing (an empty key directory, a fresh database): such a pass is
// far more often a mistake than a wish.
type GuardLimits struct {
	// MaxUnplannedRemovals is how many session containers a pass may
	// remove for missing desired state; above it, and above half of the
	// session containers, those removals are held.
	MaxUnplannedRemovals int
	Allow                bool // the operator's confirmation for one pass
}

// HoldReason names a rule of the guard.
type HoldReason string

const (
	HoldMassRemoval   HoldReason = "mass-removal"
	HoldYoungDatabase HoldReason = "young-database"
)

// Hold is a rule that held actions: the keys it held, and a sentence for
// the operator.
type Hold struct {
	Reason HoldReason           `json:"reason"`
	Keys   []desired.SessionKey `json:"keys"`
	Detail string               `json:"detail"`
}

// Guard holds back the unplanned actions of the keys a rule flags; the
// rest (deadlines, admin commands) goes ahead. The rules:
//   - mass-removal: more session containers (running or stopped: after a
//     reboot all are stopped, and their files are still the users' work)
//     would go for missing state than lim.MaxUnplannedRemovals and than
//     half of all of them
//     (the node lifecycle controller stops evicting when too many nodes
//     look unhealthy at once, for the same reason);
//   - young-database: the database is younger than a running container
//     without an instance label, so orphans without that label are more
//     likely another database's sessions than leftovers.
//
// It weighs a full plan; the controller applies that decision to its
// per-key plans with HoldKeys.
func Guard(p Plan, d desired.State, o observed.State, lim GuardLimits) Plan {
	if lim.Allow {
		return p
	}
	sessions, youngDB := sessionCensus(d, o)
	removing := map[string]bool{}
	// A plan lists a key's actions together: Compact dedupes the keys.
	var stopKeys, noInstanceKeys []desired.SessionKey
	for _, a := range p.Actions {
		if a.Unplanned && a.RemovesSession {
			removing[a.TargetID] = true
			stopKeys = append(stopKeys, a.Key)
		}
		if a.Unplanned && a.NoInstance {
			noInstanceKeys = append(noInstanceKeys, a.Key)
		}
	}
	var holds []Hold
	if n := len(removing); n > lim.MaxUnplannedRemovals && 2*n > sessions {
		holds = append(holds, Hold{Reason: HoldMassRemoval, Keys: slices.Compact(stopKeys),
			Detail: fmt.Sprintf("%d of %d session containers would be removed because their key file or session record is missing (more than cleanup.max_unplanned_removals = %d and more than half); check auth.key_dir and state.db_path",
				n, sessions, lim.MaxUnplannedRemovals)})
	}
	if youngDB && len(noInstanceKeys) > 0 {
		holds = append(holds, Hold{Reason: HoldYoungDatabase, Keys: slices.Compact(noInstanceKeys),
			Detail: "the state database was created after running podspawn containers that carry no podspawn.instance label; they may belong to another database, so they are not removed as orphans; check state.db_path"})
	}
	return HoldKeys(p, holds)
}

// HoldKeys moves the unplanned actions of the keys in holds from Actions
// to Held. A key's other actions stay: its deadlines, leases and creations
// are not in doubt.
func HoldKeys(p Plan, holds []Hold) Plan {
	held := map[desired.SessionKey]bool{}
	for _, h := range holds {
		for _, k := range h.Keys {
			held[k] = true
		}
	}
	var keep, moved []Action
	movedKeys := map[desired.SessionKey]bool{}
	for _, a := range p.Actions {
		if a.Unplanned && held[a.Key] {
			moved = append(moved, a)
			movedKeys[a.Key] = true
		} else {
			keep = append(keep, a)
		}
	}
	if len(moved) == 0 {
		return p
	}
	p.Actions, p.Held = keep, append(slices.Clip(p.Held), moved...)
	// Each rule once, naming only the keys this plan held.
	for _, h := range holds {
		var ks []desired.SessionKey
		for _, k := range h.Keys {
			if movedKeys[k] && !slices.Contains(ks, k) {
				ks = append(ks, k)
			}
		}
		if len(ks) > 0 {
			h.Keys = ks
			p.Holds = append(slices.Clip(p.Holds), h)
		}
	}
	return p
}

// NeedsGuard reports whether the plan has an action Guard could hold, so
// a per-key plan needs the whole plan's decision before it runs.
func (p Plan) NeedsGuard() bool {
	return slices.ContainsFunc(p.Actions, func(a Action) bool { return a.Unplanned && (a.RemovesSession || a.NoInstance) })
}

// sessionCensus counts the session containers podspawn may act on, and
// reports whether a running one without an instance label predates the
// database (a wrong db_path, or a database lost and recreated).
func sessionCensus(d desired.State, o observed.State) (sessions int, youngDB bool) {
	for i := range o.Objects {
		it := newItem(&o.Objects[i], d.InstanceID)
		if !it.sessionContainer || !it.visible() {
			continue
		}
		sessions++
		// Docker lists creation times to the second: a container made in
		// the database's own second is not older than it.
		if it.Running && it.noInstance && !d.DatabaseCreatedAt.IsZero() && it.Created.Before(d.DatabaseCreatedAt.Truncate(time.Second)) {
			youngDB = true
		}
	}
	return sessions, youngDB
}
