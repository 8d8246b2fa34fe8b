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
	tests := map[string]struct {
		existing *desired.Session
		ctr      bool
		want     reconcile.AttachVerdict
	}{
		"no row":                {nil, false, reconcile.AttachVerdict{Replace: true, Reason: "no session yet"}},
		"running, container up": {sess(nil), running, reconcile.AttachVerdict{}},
		"grace, before expiry":  {sess(func(s *desired.Session) { s.Status, s.GraceExpiry = desired.StatusGrace, now.Add(time.Nanosecond) }), running, reconcile.AttachVerdict{}},
		"grace, at expiry":      {sess(func(s *desired.Session) { s.Status, s.GraceExpiry = desired.StatusGrace, now }), running, reconcile.AttachVerdict{Replace: true, Reason: "the session's grace period ended"}},
		"persistent, grace expired": {sess(func(s *desired.Session) {
			s.Mode, s.Status, s.GraceExpiry = desired.ModePersistent, desired.StatusGrace, now.Add(-time.Hour)
		}), running, reconcile.AttachVerdict{}},
		"lifetime, 1ns before":     {sess(func(s *desired.Session) { s.MaxLifetimeAt = now.Add(time.Nanosecond) }), running, reconcile.AttachVerdict{}},
		"lifetime, at deadline":    {sess(func(s *desired.Session) { s.MaxLifetimeAt = now }), running, reconcile.AttachVerdict{Replace: true, Reason: "the session reached its max lifetime"}},
		"persistent past lifetime": {sess(func(s *desired.Session) { s.Mode, s.MaxLifetimeAt = desired.ModePersistent, now.Add(-time.Hour) }), running, reconcile.AttachVerdict{}},
		"terminating":              {sess(func(s *desired.Session) { s.Status = desired.StatusTerminating }), running, reconcile.AttachVerdict{Replace: true, Reason: "the session is being removed"}},
		"creating, no container":   {sess(func(s *desired.Session) { s.Status = desired.StatusCreating }), false, reconcile.AttachVerdict{}},
		"container missing":        {sess(nil), false, reconcile.AttachVerdict{Replace: true, Reason: "the session container is missing"}},
		"container stopped":        {sess(nil), true, reconcile.AttachVerdict{}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := reconcile.DecideAttach(tc.existing, tc.ctr, now)
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(reconcile.AttachVerdict{})); diff != "" {
				t.Errorf("DecideAttach() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
