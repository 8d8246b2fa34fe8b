package reconcile

import (
	"time"

	"github.com/podspawn/podspawn/desired"
)

// AttachVerdict is what a new connection does with the session it finds:
// attach, or Replace it with a new generation (or fill the empty key).
type AttachVerdict struct {
	Replace bool
	Reason  string
}

// DecideAttach chooses between attaching to the existing generation and
// starting a new one, by the same deadline rule as teardown, including its
// hold after a forward step of the wall clock (holdLiveDeadlinesUntil, as
// in Options): a connected session is not replaced for a deadline the step
// may have made due. A creating generation is attached to: the reconcile
// that follows finishes (or adopts) whatever its creator left.
func DecideAttach(existing *desired.Session, ctrExists bool, now, holdLiveDeadlinesUntil time.Time) AttachVerdict {
	if existing == nil {
		return AttachVerdict{Replace: true, Reason: "no session yet"}
	}
	deadlines := existing.Mode != desired.ModePersistent && !(len(existing.Leases) > 0 && now.Before(holdLiveDeadlinesUntil))
	switch {
	case existing.Status == desired.StatusTerminating:
		return AttachVerdict{Replace: true, Reason: "the session is being removed"}
	case deadlines && expired(existing.MaxLifetimeAt, now):
		// G10: a session past its lifetime is replaced, never re-attached.
		return AttachVerdict{Replace: true, Reason: "the session reached its max lifetime"}
	case deadlines && existing.Status == desired.StatusGrace && !existing.GraceExpiry.IsZero() && expired(existing.GraceExpiry, now):
		return AttachVerdict{Replace: true, Reason: "the session's grace period ended"}
	case existing.Status == desired.StatusCreating:
		return AttachVerdict{}
	case !ctrExists:
		// A stopped container, unlike a missing one, is attached to: the
		// reconcile that follows starts it again, keeping the user's files.
		return AttachVerdict{Replace: true, Reason: "the session container is missing"}
	}
	return AttachVerdict{}
}
