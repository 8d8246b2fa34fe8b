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
// starting a new one, by the same deadline rule as teardown. A creating
// generation is attached to: the reconcile that follows finishes (or
// adopts) whatever its creator left.
func DecideAttach(existing *desired.Session, ctrExists bool, now time.Time) AttachVerdict {
	if existing == nil {
		return AttachVerdict{Replace: true, Reason: "no session yet"}
	}
	persistent := existing.Mode == desired.ModePersistent
	switch {
	case existing.Status == desired.StatusTerminating:
		return AttachVerdict{Replace: true, Reason: "the session is being removed"}
	case !persistent && expired(existing.MaxLifetimeAt, now):
		// G10: a session past its lifetime is replaced, never re-attached.
		return AttachVerdict{Replace: true, Reason: "the session reached its max lifetime"}
	case !persistent && existing.Status == desired.StatusGrace && !existing.GraceExpiry.IsZero() && expired(existing.GraceExpiry, now):
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
