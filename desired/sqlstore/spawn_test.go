package sqlstore

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/desired"
)

func openSpawnTestStore(t *testing.T) *Store {
	t.Helper()
	st, err := Open(context.Background(), filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func spawnTestGen(key desired.SessionKey, id string, now time.Time) *desired.Session {
	return &desired.Session{
		Key: key, ID: id, Mode: desired.ModeGracePeriod, Status: desired.StatusCreating,
		CreatedAt: now, MaxLifetimeAt: now.Add(8 * time.Hour), GracePeriod: time.Minute,
		Spec: desired.Spec{Image: "img", Shell: "/bin/sh", ContainerName: desired.ContainerName(key), NetworkName: desired.NetworkName(key)},
	}
}

func TestAttach(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 11, 29, 7, 0, 0, 0, time.UTC)
	alice := desired.SessionKey{User: "alice"}
	st := openSpawnTestStore(t)

	create := func(id string) func(*desired.Session) (*desired.Session, error) {
		return func(*desired.Session) (*desired.Session, error) { return spawnTestGen(alice, id, now), nil }
	}
	keep := func(*desired.Session) (*desired.Session, error) { return nil, nil }

	// First connection records the generation and its lease together.
	r1, err := st.Attach(ctx, AttachRequest{Key: alice, Decide: create("g1"), PID: 10, PIDStart: 100, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	want := spawnTestGen(alice, "g1", now)
	want.Leases = []desired.Lease{{ID: r1.LeaseID, SessionID: "g1", PID: 10, PIDStart: 100, StartedAt: now}}
	if diff := cmp.Diff(AttachResult{Session: want, LeaseID: r1.LeaseID, Created: true}, r1); diff != "" {
		t.Fatalf("first attach (-want +got):\n%s", diff)
	}

	// A second connection attaches to it: two leases, same generation.
	var seen *desired.Session
	r2, err := st.Attach(ctx, AttachRequest{Key: alice, Decide: func(cur *desired.Session) (*desired.Session, error) {
		seen = cur
		return nil, nil
	}, PID: 11, PIDStart: 110, Now: now.Add(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if seen == nil || seen.ID != "g1" || len(seen.Leases) != 1 {
		t.Fatalf("Decide saw %+v, want generation g1 with one lease", seen)
	}
	if r2.Created || r2.Replaced != nil || r2.Session.ID != "g1" || len(r2.Session.Leases) != 2 {
		t.Fatalf("second attach = %+v, want g1 with two leases", r2)
	}

	// Replacing drops the old generation and its leases (a late detach of
	// the old generation can never touch the new one).
	r3, err := st.Attach(ctx, AttachRequest{Key: alice, Decide: create("g2"), PID: 12, PIDStart: 120, Now: now.Add(2 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if r3.Replaced == nil || r3.Replaced.ID != "g1" || r3.Session.ID != "g2" || len(r3.Session.Leases) != 1 {
		t.Fatalf("replace = %+v, want g2 with one lease replacing g1", r3)
	}
	if released, err := st.Detach(ctx, r1.LeaseID); err != nil || released {
		t.Fatalf("Detach(old lease) = %v, %v; want false, nil", released, err)
	}
	got, _ := st.LoadKey(ctx, alice)
	if len(got.Leases) != 1 || got.Leases[0].ID != r3.LeaseID {
		t.Fatalf("leases after stale detach = %+v, want only %d", got.Leases, r3.LeaseID)
	}
	if released, err := st.Detach(ctx, r3.LeaseID); err != nil || !released {
		t.Fatalf("Detach(current lease) = %v, %v; want true, nil", released, err)
	}
	got, _ = st.LoadKey(ctx, alice)
	if len(got.Leases) != 0 {
		t.Fatalf("leases after detach = %+v, want none", got.Leases)
	}

	// A failing decision changes nothing.
	boom := errors.New("boom")
	if _, err := st.Attach(ctx, AttachRequest{Key: alice, Decide: func(*desired.Session) (*desired.Session, error) { return nil, boom }, Now: now}); !errors.Is(err, boom) {
		t.Fatalf("Attach with failing Decide = %v, want boom", err)
	}
	// Attaching to nothing is an error, not a lease on no session.
	bob := desired.SessionKey{User: "bob"}
	if _, err := st.Attach(ctx, AttachRequest{Key: bob, Decide: keep, Now: now}); err == nil {
		t.Fatal("Attach(no row, keep) succeeded")
	}
}

func TestAttachAdmission(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 11, 29, 7, 0, 0, 0, time.UTC)
	st := openSpawnTestStore(t)
	key := func(p string) desired.SessionKey { return desired.SessionKey{User: "alice", Project: p} }
	attach := func(p, id string) (AttachResult, error) {
		return st.Attach(ctx, AttachRequest{Key: key(p), MaxPerUser: 2, Now: now,
			Decide: func(*desired.Session) (*desired.Session, error) { return spawnTestGen(key(p), id, now), nil }})
	}
	if _, err := attach("", "g1"); err != nil {
		t.Fatal(err)
	}
	if _, err := attach("web", "g2"); err != nil {
		t.Fatal(err)
	}
	// Another user's sessions do not count.
	if _, err := st.Attach(ctx, AttachRequest{Key: desired.SessionKey{User: "bob"}, MaxPerUser: 2, Now: now,
		Decide: func(*desired.Session) (*desired.Session, error) {
			return spawnTestGen(desired.SessionKey{User: "bob"}, "b1", now), nil
		}}); err != nil {
		t.Fatal(err)
	}
	_, err := attach("db", "g3")
	var adm *AdmissionError
	if !errors.As(err, &adm) {
		t.Fatalf("third session: err = %v, want AdmissionError", err)
	}
	if diff := cmp.Diff(&AdmissionError{User: "alice", Max: 2, Others: []desired.SessionKey{key(""), key("web")}}, adm); diff != "" {
		t.Fatalf("AdmissionError (-want +got):\n%s", diff)
	}
	wantMsg := "user alice already has 2 session(s) (max 2): alice, alice@web; to free a slot, disconnect every connection of one of them " +
		"(it ends after its grace period), or ask an admin to run: podspawn stop alice@<project>"
	if err.Error() != wantMsg {
		t.Fatalf("message:\n got %s\nwant %s", err, wantMsg)
	}
	if s, _ := st.LoadKey(ctx, key("db")); s != nil {
		t.Fatalf("refused session was recorded: %+v", s)
	}
	// Replacing an existing generation of a counted key is not a new slot.
	if _, err := attach("web", "g4"); err != nil {
		t.Fatalf("replacing alice@web: %v", err)
	}
	// A terminating session frees its slot.
	if _, err := st.MarkTerminating(ctx, "g4", "user-requested", now); err != nil {
		t.Fatal(err)
	}
	if _, err := attach("db", "g5"); err != nil {
		t.Fatalf("after alice@web was marked terminating: %v", err)
	}
}

// TestAttachRefusesDockerNameClashes: names join user, project and service
// with "-", so two keys can map to one container name; the second is
// refused with both sessions named, and nothing is recorded for it.
func TestAttachRefusesDockerNameClashes(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 11, 29, 7, 0, 0, 0, time.UTC)
	st := openSpawnTestStore(t)
	attach := func(k desired.SessionKey, id string, services ...string) error {
		_, err := st.Attach(ctx, AttachRequest{Key: k, Now: now, Decide: func(*desired.Session) (*desired.Session, error) {
			s := spawnTestGen(k, id, now)
			for _, svc := range services {
				s.Spec.Services = append(s.Spec.Services, desired.Service{Name: svc, Image: "img"})
			}
			return s, nil
		}})
		return err
	}
	aliceWeb := desired.SessionKey{User: "alice", Project: "web"}
	if err := attach(aliceWeb, "g1", "db"); err != nil {
		t.Fatal(err)
	}
	// A new generation of the same key, and names that only share a
	// prefix, are no clash.
	for _, k := range []desired.SessionKey{aliceWeb, {User: "alice", Project: "we"}, {User: "alic"}} {
		if err := attach(k, "g2-"+k.String(), "db"); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
	}
	for _, tc := range []struct {
		key      desired.SessionKey
		services []string
		name     string
	}{
		{desired.SessionKey{User: "alice-web"}, nil, "podspawn-alice-web"},                   // user alice-web, alice's project web
		{desired.SessionKey{User: "alice", Project: "web-db"}, nil, "podspawn-alice-web-db"}, // a project named like alice@web's service
		{desired.SessionKey{User: "alice"}, []string{"web"}, "podspawn-alice-web"},           // a service named like alice@web's container
	} {
		err := attach(tc.key, "x", tc.services...)
		var clash *NameClashError
		if !errors.As(err, &clash) {
			t.Fatalf("%s: err = %v, want a NameClashError", tc.key, err)
		}
		if diff := cmp.Diff(&NameClashError{Key: tc.key, Other: aliceWeb, Name: tc.name}, clash); diff != "" {
			t.Fatalf("%s: clash (-want +got):\n%s", tc.key, diff)
		}
		if s, err := st.LoadKey(ctx, tc.key); err != nil || s != nil {
			t.Fatalf("%s was recorded despite the clash: %+v, %v", tc.key, s, err)
		}
	}
	wantMsg := `session alice-web would use the Docker name podspawn-alice-web, which session alice@web already uses ` +
		`(user, project and service names are joined with "-"): rename the project or service, or stop alice@web first`
	if got := (&NameClashError{Key: desired.SessionKey{User: "alice-web"}, Other: aliceWeb, Name: "podspawn-alice-web"}).Error(); got != wantMsg {
		t.Fatalf("message:\n got %s\nwant %s", got, wantMsg)
	}
}
