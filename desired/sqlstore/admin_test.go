package sqlstore

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/desired"
)

func TestUserSessions(t *testing.T) {
	ctx := context.Background()
	st, err := Open(ctx, filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	mk := func(user, project, id string, status desired.Status) *desired.Session {
		k := desired.SessionKey{User: user, Project: project}
		return &desired.Session{Key: k, ID: id, Mode: desired.ModeGracePeriod, Status: status, CreatedAt: now, MaxLifetimeAt: now.Add(time.Hour),
			Spec: desired.Spec{Image: "img", ContainerName: desired.ContainerName(k), NetworkName: desired.NetworkName(k)}}
	}
	web := mk("alice", "web", "s-web", desired.StatusRunning)
	def := mk("alice", "", "s-def", desired.StatusTerminating)
	other := mk("alicia", "", "s-other", desired.StatusRunning)
	for _, s := range []*desired.Session{web, other, def} {
		if err := st.Create(ctx, s, now); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"s-web", "s-other", "s-web"} {
		if _, err := st.AddLease(ctx, id, 42, 7, now); err != nil {
			t.Fatal(err)
		}
	}
	web.Leases = []desired.Lease{
		{ID: 1, SessionID: "s-web", PID: 42, PIDStart: 7, StartedAt: now},
		{ID: 3, SessionID: "s-web", PID: 42, PIDStart: 7, StartedAt: now},
	}

	got, err := st.UserSessions(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	// Every status, ordered by project, with leases; never another user's.
	if diff := cmp.Diff([]*desired.Session{def, web}, got); diff != "" {
		t.Errorf("UserSessions(alice) (-want +got):\n%s", diff)
	}
	got, err = st.UserSessions(ctx, "bob")
	if err != nil || got != nil {
		t.Errorf("UserSessions(bob) = %v, %v; want nil, nil", got, err)
	}
}
