package reconcile_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/reconcile"
)

func TestDecideAttach(t *testing.T) {
	now := time.Date(2026, 11, 29, 7, 0, 0, 0, time.UTC)
	running := true // the container exists (running or stopped)
	sess := func(mut func(*desired.Session)) *desired.Session {
		s := &desired.Session{ID: "g1", Mode: desired.ModeGracePeriod, Status: desired.StatusRunning,
			CreatedAt: now.Add(-time.Hour), MaxLifetimeAt: now.Add(time.Hour), GracePeriod: time.Minute}
		if mut != nil {
			mut(s)
		}
		return s
	}
	held := func(s *desired.Session) { s.Leases = []desired.Lease{{ID: 1, PID: 4242}} }
	tests := map[string]struct {
		existing *desired.Session
		ctr      bool
		hold     time.Time
		want     reconcile.AttachVerdict
	}{
		"no row":                {nil, false, time.Time{}, reconcile.AttachVerdict{Replace: true, Reason: "no session yet"}},
		"running, container up": {sess(nil), running, time.Time{}, reconcile.AttachVerdict{}},
		"grace, before expiry":  {sess(func(s *desired.Session) { s.Status, s.GraceExpiry = desired.StatusGrace, now.Add(time.Nanosecond) }), running, time.Time{}, reconcile.AttachVerdict{}},
		"grace, at expiry":      {sess(func(s *desired.Session) { s.Status, s.GraceExpiry = desired.StatusGrace, now }), running, time.Time{}, reconcile.AttachVerdict{Replace: true, Reason: "the session's grace period ended"}},
		"persistent, grace expired": {sess(func(s *desired.Session) {
			s.Mode, s.Status, s.GraceExpiry = desired.ModePersistent, desired.StatusGrace, now.Add(-time.Hour)
		}), running, time.Time{}, reconcile.AttachVerdict{}},
		"lifetime, 1ns before":     {sess(func(s *desired.Session) { s.MaxLifetimeAt = now.Add(time.Nanosecond) }), running, time.Time{}, reconcile.AttachVerdict{}},
		"lifetime, at deadline":    {sess(func(s *desired.Session) { s.MaxLifetimeAt = now }), running, time.Time{}, reconcile.AttachVerdict{Replace: true, Reason: "the session reached its max lifetime"}},
		"persistent past lifetime": {sess(func(s *desired.Session) { s.Mode, s.MaxLifetimeAt = desired.ModePersistent, now.Add(-time.Hour) }), running, time.Time{}, reconcile.AttachVerdict{}},
		"terminating":              {sess(func(s *desired.Session) { s.Status = desired.StatusTerminating }), running, time.Time{}, reconcile.AttachVerdict{Replace: true, Reason: "the session is being removed"}},
		"creating, no container":   {sess(func(s *desired.Session) { s.Status = desired.StatusCreating }), false, time.Time{}, reconcile.AttachVerdict{}},
		"container missing":        {sess(nil), false, time.Time{}, reconcile.AttachVerdict{Replace: true, Reason: "the session container is missing"}},
		"container stopped":        {sess(nil), true, time.Time{}, reconcile.AttachVerdict{}},
		// After a forward clock step, a connected session is kept until the
		// hold ends; one without connections is replaced as usual.
		"clock-step hold, connected, past lifetime": {sess(func(s *desired.Session) { held(s); s.MaxLifetimeAt = now.Add(-time.Hour) }), running,
			now.Add(time.Nanosecond), reconcile.AttachVerdict{}},
		"clock-step hold, connected, grace ended": {sess(func(s *desired.Session) { held(s); s.Status, s.GraceExpiry = desired.StatusGrace, now.Add(-time.Hour) }), running,
			now.Add(time.Nanosecond), reconcile.AttachVerdict{}},
		"clock-step hold ended, connected": {sess(func(s *desired.Session) { held(s); s.MaxLifetimeAt = now.Add(-time.Hour) }), running,
			now, reconcile.AttachVerdict{Replace: true, Reason: "the session reached its max lifetime"}},
		"clock-step hold, no connection": {sess(func(s *desired.Session) { s.MaxLifetimeAt = now.Add(-time.Hour) }), running,
			now.Add(time.Minute), reconcile.AttachVerdict{Replace: true, Reason: "the session reached its max lifetime"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := reconcile.DecideAttach(tc.existing, tc.ctr, now, tc.hold)
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(reconcile.AttachVerdict{})); diff != "" {
				t.Errorf("DecideAttach() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
