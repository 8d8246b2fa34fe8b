package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jmoiron/sqlx"
	sqlite3 "github.com/mattn/go-sqlite3"

	"github.com/podspawn/podspawn/desired"
)

var storeTestNow = time.Date(2026, 11, 29, 7, 0, 0, 123456789, time.UTC)

func storeTestOpen(t *testing.T, path string) *Store {
	t.Helper()
	st, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func storeTestPath(t *testing.T) string {
	return filepath.Join(t.TempDir(), "state", "state.db")
}

// storeTestSession is a minimal valid session of key.
func storeTestSession(key desired.SessionKey, status desired.Status) *desired.Session {
	return &desired.Session{
		Key: key, ID: NewSessionID(), Mode: desired.ModeGracePeriod, Status: status,
		CreatedAt: storeTestNow.Add(-time.Hour), MaxLifetimeAt: storeTestNow.Add(7 * time.Hour), GracePeriod: time.Minute,
		Spec: desired.Spec{Image: "podspawn-test:busybox", Shell: "/bin/sh", ContainerName: desired.ContainerName(key), NetworkName: desired.NetworkName(key)},
	}
}

func storeTestCreate(t *testing.T, st *Store, s *desired.Session) *desired.Session {
	t.Helper()
	if err := st.Create(context.Background(), s, storeTestNow); err != nil {
		t.Fatal(err)
	}
	return s
}

func storeTestLoadKey(t *testing.T, st *Store, k desired.SessionKey) *desired.Session {
	t.Helper()
	s, err := st.LoadKey(context.Background(), k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// dataVersion reads PRAGMA data_version on one fixed connection: it
// changes exactly when another connection committed a write.
func dataVersion(t *testing.T, conn *sqlx.Conn) int64 {
	t.Helper()
	var v int64
	if err := conn.GetContext(context.Background(), &v, `PRAGMA data_version`); err != nil {
		t.Fatal(err)
	}
	return v
}

type migrationRow struct {
	Version   int   `db:"version"`
	AppliedAt int64 `db:"applied_at"`
}

func TestOpenMigratesOnceAndReopenDoesNotWrite(t *testing.T) {
	ctx := context.Background()
	path := storeTestPath(t)
	st := storeTestOpen(t, path)

	var applied []migrationRow
	if err := st.DB().Select(&applied, `SELECT version, applied_at FROM schema_migrations ORDER BY version`); err != nil {
		t.Fatal(err)
	}
	var versions []int
	for _, m := range applied {
		versions = append(versions, m.Version)
	}
	var want []int
	for v := 1; v < len(migrations); v++ {
		want = append(want, v)
	}
	if diff := cmp.Diff(want, versions); diff != "" {
		t.Fatalf("applied migrations (-want +got):\n%s", diff)
	}

	conn, err := st.DB().Connx(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	before := dataVersion(t, conn)
	for range 3 {
		again, err := Open(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		if again.InstanceID() != st.InstanceID() {
			t.Fatalf("instance id changed on reopen: %s, then %s", st.InstanceID(), again.InstanceID())
		}
		if err := again.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if after := dataVersion(t, conn); after != before {
		t.Fatalf("PRAGMA data_version went from %d to %d: reopening a migrated database wrote to it", before, after)
	}
	var again []migrationRow
	if err := st.DB().Select(&again, `SELECT version, applied_at FROM schema_migrations ORDER BY version`); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(applied, again); diff != "" {
		t.Fatalf("schema_migrations changed on reopen (-before +after):\n%s", diff)
	}
}

func TestOpenRefusesANewerSchema(t *testing.T) {
	path := storeTestPath(t)
	st, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	future := len(migrations) + 6
	if _, err := st.DB().Exec(`INSERT INTO schema_migrations (version, applied_at) VALUES (?, 1)`, future); err != nil {
		t.Fatal(err)
	}
	st.Close()

	_, err = Open(context.Background(), path)
	want := fmt.Sprintf("state db %s: schema version %d is newer than this podspawn supports (%d); upgrade podspawn", path, future, len(migrations)-1)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Open error = %v, want it to contain %q", err, want)
	}
	// The refusal leaves the database as it was.
	raw, err := sqlx.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var max int
	if err := raw.Get(&max, `SELECT MAX(version) FROM schema_migrations`); err != nil || max != future {
		t.Fatalf("schema version after the refusal = %d, %v; want %d", max, err, future)
	}
}

func TestInstanceIDIsStablePerDatabase(t *testing.T) {
	pathA, pathB := storeTestPath(t), storeTestPath(t)
	var ids []string
	for _, p := range []string{pathA, pathA, pathB, pathA, pathB} {
		st, err := Open(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, st.InstanceID())
		st.Close()
	}
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(ids[0]) {
		t.Fatalf("instance id %q is not 32 hex digits", ids[0])
	}
	if ids[0] != ids[1] || ids[0] != ids[3] || ids[2] != ids[4] {
		t.Fatalf("instance ids %v: not stable across opens of one database", ids)
	}
	if ids[0] == ids[2] {
		t.Fatalf("two databases share instance id %s", ids[0])
	}
}

func TestRoundTripOfEveryField(t *testing.T) {
	ctx := context.Background()
	st := storeTestOpen(t, storeTestPath(t))
	paris := time.FixedZone("CET", 3600)
	k := desired.SessionKey{User: "alice", Project: "backend"}
	full := &desired.Session{
		Key: k, ID: NewSessionID(), Mode: desired.ModeDestroyOnDisconnect, Status: desired.StatusGrace,
		CreatedAt:       time.Date(2026, 11, 29, 8, 0, 0, 1, paris),
		MaxLifetimeAt:   time.Date(2026, 11, 29, 16, 0, 0, 999999999, paris),
		GracePeriod:     90*time.Second + time.Nanosecond,
		GraceExpiry:     time.Date(2026, 11, 29, 7, 31, 30, 5, time.UTC),
		TerminateReason: "user-requested",
		Spec: desired.Spec{
			Image: "ghcr.io/acme/dev:1.2", Shell: "/bin/zsh", CPUs: 1.5, MemoryBytes: 2 << 30,
			Env: []string{"A=1", "B=two words"}, Hostname: "alice-dev",
			ContainerName: desired.ContainerName(k), NetworkName: desired.NetworkName(k),
			Security: desired.Security{
				CapDrop: []string{"ALL"}, CapAdd: []string{"CHOWN", "SETUID"}, NoNewPrivileges: true, PidsLimit: 512,
				ReadonlyRootfs: true, Tmpfs: map[string]string{"/tmp": "rw,size=64m"}, Runtime: "runsc",
			},
			Services: []desired.Service{{
				Name: "db", Image: "postgres:16", Env: []string{"POSTGRES_PASSWORD=x"}, Command: []string{"postgres", "-c", "fsync=off"},
				Volumes: []desired.VolumeMount{{Name: "data", Target: "/var/lib/postgresql/data"}}, CPUs: 0.5, MemoryBytes: 512 << 20,
			}},
			Mounts:      []desired.Mount{{Source: "/var/lib/podspawn/homes/alice", Target: "/home/alice"}},
			ExtraLabels: map[string]string{"team": "payments"},
		},
		RestartCount:  3,
		LastRestartAt: time.Date(2026, 11, 29, 7, 20, 0, 7, paris),
		NextRestartAt: time.Date(2026, 11, 29, 7, 20, 4, 7, time.UTC),
	}
	storeTestCreate(t, st, full)
	// A start time above MaxInt64 must survive the signed column.
	bigStart := uint64(math.MaxInt64) + 7
	var leases []desired.Lease
	for i, l := range []desired.Lease{
		{PID: 4242, PIDStart: 1234567, StartedAt: time.Date(2026, 11, 29, 7, 0, 0, 42, paris)},
		{PID: 4243, PIDStart: bigStart, StartedAt: storeTestNow},
	} {
		id, err := st.AddLease(ctx, full.ID, l.PID, l.PIDStart, l.StartedAt)
		if err != nil {
			t.Fatal(err)
		}
		if id != int64(i+1) {
			t.Fatalf("lease id = %d, want %d", id, i+1)
		}
		l.ID, l.SessionID = id, full.ID
		leases = append(leases, l)
	}
	minimal := storeTestCreate(t, st, storeTestSession(desired.SessionKey{User: "bob"}, desired.StatusCreating))

	wantFull := *full
	wantFull.Leases = leases
	got := storeTestLoadKey(t, st, k)
	if diff := cmp.Diff(&wantFull, got); diff != "" {
		t.Fatalf("LoadKey (-want +got):\n%s", diff)
	}
	for name, ts := range map[string]time.Time{"CreatedAt": got.CreatedAt, "MaxLifetimeAt": got.MaxLifetimeAt, "GraceExpiry": got.GraceExpiry,
		"LastRestartAt": got.LastRestartAt, "NextRestartAt": got.NextRestartAt, "lease StartedAt": got.Leases[0].StartedAt} {
		if ts.Location() != time.UTC {
			t.Errorf("%s comes back in %s, want UTC", name, ts.Location())
		}
	}
	all, err := loadByKey(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	want := map[desired.SessionKey]*desired.Session{k: &wantFull, minimal.Key: minimal}
	if diff := cmp.Diff(want, all); diff != "" {
		t.Fatalf("Load (-want +got):\n%s", diff)
	}
	if m := all[minimal.Key]; !m.GraceExpiry.IsZero() || !m.LastRestartAt.IsZero() || !m.NextRestartAt.IsZero() {
		t.Fatalf("unset times came back as grace expiry %s, last restart %s, next restart %s", m.GraceExpiry, m.LastRestartAt, m.NextRestartAt)
	}
	if s := storeTestLoadKey(t, st, desired.SessionKey{User: "alice"}); s != nil {
		t.Fatalf("LoadKey of alice's default session = %+v, want nil (only alice@backend exists)", s)
	}
	if err := st.Create(ctx, storeTestSession(k, desired.StatusCreating), storeTestNow); err == nil || !strings.Contains(err.Error(), "recording session alice@backend") {
		t.Fatalf("second Create of alice@backend: err = %v, want a constraint error naming the session", err)
	}
}

func TestStartGraceRefusesWhileALeaseExists(t *testing.T) {
	ctx := context.Background()
	st := storeTestOpen(t, storeTestPath(t))
	s := storeTestCreate(t, st, storeTestSession(desired.SessionKey{User: "alice"}, desired.StatusRunning))
	lease, err := st.AddLease(ctx, s.ID, 100, 200, storeTestNow)
	if err != nil {
		t.Fatal(err)
	}
	expiry := storeTestNow.Add(time.Minute)
	if changed, err := st.StartGrace(ctx, s.ID, expiry, storeTestNow); err != nil || changed {
		t.Fatalf("StartGrace with a live lease = %v, %v; want false, nil", changed, err)
	}
	if got := storeTestLoadKey(t, st, s.Key); got.Status != desired.StatusRunning || !got.GraceExpiry.IsZero() {
		t.Fatalf("row = %s until %s, want running", got.Status, got.GraceExpiry)
	}
	if _, err := st.ReleaseLease(ctx, lease); err != nil {
		t.Fatal(err)
	}
	if changed, err := st.StartGrace(ctx, s.ID, expiry, storeTestNow); err != nil || !changed {
		t.Fatalf("StartGrace with no lease = %v, %v; want true, nil", changed, err)
	}
	if got := storeTestLoadKey(t, st, s.Key); got.Status != desired.StatusGrace || !got.GraceExpiry.Equal(expiry) {
		t.Fatalf("row = %s until %s, want grace_period until %s", got.Status, got.GraceExpiry, expiry)
	}
	if changed, err := st.StartGrace(ctx, s.ID, expiry.Add(time.Hour), storeTestNow); err != nil || changed {
		t.Fatalf("StartGrace again = %v, %v; want false (already in grace, expiry kept)", changed, err)
	}
	creating := storeTestCreate(t, st, storeTestSession(desired.SessionKey{User: "bob"}, desired.StatusCreating))
	if changed, err := st.StartGrace(ctx, creating.ID, expiry, storeTestNow); err != nil || changed {
		t.Fatalf("StartGrace of a creating session = %v, %v; want false", changed, err)
	}
}

func storeTestLeaseCount(t *testing.T, st *Store, sessionID string) int {
	t.Helper()
	var n int
	if err := st.DB().Get(&n, `SELECT COUNT(*) FROM leases WHERE session_id = ?`, sessionID); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestDeleteSessionOnlyDeletesATerminatingRow(t *testing.T) {
	ctx := context.Background()
	st := storeTestOpen(t, storeTestPath(t))
	alice := storeTestCreate(t, st, storeTestSession(desired.SessionKey{User: "alice"}, desired.StatusRunning))
	bob := storeTestCreate(t, st, storeTestSession(desired.SessionKey{User: "bob"}, desired.StatusRunning))
	for _, id := range []string{alice.ID, alice.ID, bob.ID} {
		if _, err := st.AddLease(ctx, id, 1, 2, storeTestNow); err != nil {
			t.Fatal(err)
		}
	}

	if changed, err := st.DeleteSession(ctx, alice.ID); err != nil || changed {
		t.Fatalf("DeleteSession of a running row = %v, %v; want false, nil", changed, err)
	}
	if got := storeTestLoadKey(t, st, alice.Key); got == nil || len(got.Leases) != 2 {
		t.Fatalf("after refusing to delete a running row: %+v; want the row with its two leases", got)
	}

	if _, err := st.MarkTerminating(ctx, alice.ID, "user-requested", storeTestNow); err != nil {
		t.Fatal(err)
	}
	if changed, err := st.DeleteSession(ctx, alice.ID); err != nil || !changed {
		t.Fatalf("DeleteSession of a terminating row = %v, %v; want true, nil", changed, err)
	}
	if got := storeTestLoadKey(t, st, alice.Key); got != nil {
		t.Fatalf("row still there: %+v", got)
	}
	if n := storeTestLeaseCount(t, st, alice.ID); n != 0 {
		t.Fatalf("%d leases of the deleted session remain", n)
	}
	if n := storeTestLeaseCount(t, st, bob.ID); n != 1 {
		t.Fatalf("bob has %d leases, want 1 (deleting alice must not touch them)", n)
	}
	if changed, err := st.DeleteSession(ctx, alice.ID); err != nil || changed {
		t.Fatalf("second DeleteSession = %v, %v; want false, nil", changed, err)
	}
}

func TestReleaseLeaseIsIdempotent(t *testing.T) {
	ctx := context.Background()
	st := storeTestOpen(t, storeTestPath(t))
	s := storeTestCreate(t, st, storeTestSession(desired.SessionKey{User: "alice"}, desired.StatusRunning))
	id, err := st.AddLease(ctx, s.ID, 1, 2, storeTestNow)
	if err != nil {
		t.Fatal(err)
	}
	var got []bool
	for _, lease := range []int64{id, id, 9999} {
		changed, err := st.ReleaseLease(ctx, lease)
		if err != nil {
			t.Fatalf("ReleaseLease(%d): %v", lease, err)
		}
		got = append(got, changed)
	}
	if diff := cmp.Diff([]bool{true, false, false}, got); diff != "" {
		t.Fatalf("ReleaseLease results (-want +got):\n%s", diff)
	}
}

func TestMarkTerminatingWhere(t *testing.T) {
	ctx := context.Background()
	st := storeTestOpen(t, storeTestPath(t))
	keys := []desired.SessionKey{{User: "alice"}, {User: "alice", Project: "api"}, {User: "alice", Project: "web"}, {User: "bob"}, {User: "bob", Project: "web"}}
	for _, k := range keys {
		storeTestCreate(t, st, storeTestSession(k, desired.StatusRunning))
	}
	api := storeTestLoadKey(t, st, keys[1])
	if _, err := st.MarkTerminating(ctx, api.ID, "project-removed", storeTestNow); err != nil {
		t.Fatal(err)
	}
	project := func(p string) *string { return &p }
	steps := []struct {
		user    string
		project *string
		reason  string
		want    []desired.SessionKey
	}{
		{"alice", project("web"), "user-requested", []desired.SessionKey{{User: "alice", Project: "web"}}},
		{"bob", project(""), "user-requested", []desired.SessionKey{{User: "bob"}}},
		{"carol", nil, "user-removed", nil},
		{"alice", nil, "user-removed", []desired.SessionKey{{User: "alice"}, {User: "alice", Project: "api"}, {User: "alice", Project: "web"}}},
	}
	// Neither a user nor a project must never mean "every session".
	for _, p := range []*string{nil, project("")} {
		if got, err := st.MarkTerminatingWhere(ctx, "", p, "user-requested", storeTestNow); err == nil || got != nil {
			t.Fatalf("MarkTerminatingWhere with no user and project %v = %v, %v; want an error", p, got, err)
		}
	}
	for _, s := range steps {
		got, err := st.MarkTerminatingWhere(ctx, s.user, s.project, s.reason, storeTestNow)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(s.want, got); diff != "" {
			t.Fatalf("MarkTerminatingWhere(%s, %v) keys (-want +got):\n%s", s.user, s.project, diff)
		}
	}
	type state struct {
		Status desired.Status
		Reason string
	}
	gotStates := map[string]state{}
	all, err := loadByKey(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	for k, s := range all {
		gotStates[k.String()] = state{s.Status, s.TerminateReason}
	}
	want := map[string]state{
		// A session already terminating keeps the reason it was first given.
		"alice":     {desired.StatusTerminating, "user-removed"},
		"alice@api": {desired.StatusTerminating, "project-removed"},
		"alice@web": {desired.StatusTerminating, "user-requested"},
		"bob":       {desired.StatusTerminating, "user-requested"},
		"bob@web":   {desired.StatusRunning, ""},
	}
	if diff := cmp.Diff(want, gotStates); diff != "" {
		t.Fatalf("states (-want +got):\n%s", diff)
	}
}

// TestTimestampsOrderNumericallyInEveryZone: instants from several zones,
// either side of the epoch and of the 10^18 ns digit boundary, sort in
// time order in SQL and load back as the same instants, whatever the
// process's local zone.
func TestTimestampsOrderNumericallyInEveryZone(t *testing.T) {
	oldLocal := time.Local
	time.Local = time.FixedZone("IST", 5*3600+1800)
	t.Cleanup(func() { time.Local = oldLocal })

	st := storeTestOpen(t, storeTestPath(t))
	// In time order; their wall-clock texts sort differently.
	instants := []time.Time{
		time.Date(1969, 7, 20, 20, 17, 40, 0, time.UTC),
		time.Date(2001, 9, 9, 1, 46, 39, 999999999, time.UTC),
		time.Date(2001, 9, 9, 1, 46, 40, 0, time.UTC),
		time.Date(2026, 1, 1, 1, 0, 0, 0, time.FixedZone("LINT", 14*3600)),
		time.Date(2025, 12, 31, 23, 0, 0, 0, time.FixedZone("HST", -10*3600)),
		time.Date(2026, 1, 1, 15, 0, 0, 1, time.Local), // 09:30:00.000000001 UTC
	}
	users := []string{"u5", "u3", "u0", "u4", "u1", "u2"} // insertion order differs from time order
	want := map[string]time.Time{}
	for i, at := range instants {
		s := storeTestSession(desired.SessionKey{User: users[i]}, desired.StatusGrace)
		s.CreatedAt, s.GraceExpiry, s.MaxLifetimeAt = at, at, at.Add(time.Hour)
		storeTestCreate(t, st, s)
		want[users[i]] = at
	}
	for _, col := range []string{"created_at", "grace_expiry", "max_lifetime_at"} {
		var got []string
		if err := st.DB().Select(&got, `SELECT user FROM sessions ORDER BY `+col); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(users, got); diff != "" {
			t.Fatalf("ORDER BY %s (-want +got):\n%s", col, diff)
		}
	}
	all, err := loadByKey(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	for u, at := range want {
		s := all[desired.SessionKey{User: u}]
		if !s.CreatedAt.Equal(at) || !s.GraceExpiry.Equal(at) || s.CreatedAt.Location() != time.UTC {
			t.Errorf("%s: created %s, grace expiry %s; want the instant %s, in UTC", u, s.CreatedAt, s.GraceExpiry, at.UTC())
		}
	}
}

func TestEveryPooledConnectionHasTheDSNSettings(t *testing.T) {
	ctx := context.Background()
	st := storeTestOpen(t, storeTestPath(t))
	var conns []*sqlx.Conn
	for range 4 { // the pool's maximum, so each is a distinct connection
		c, err := st.DB().Connx(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	for i, c := range conns {
		var busy, fk int
		var mode string
		if err := c.GetContext(ctx, &busy, `PRAGMA busy_timeout`); err != nil {
			t.Fatal(err)
		}
		if err := c.GetContext(ctx, &mode, `PRAGMA journal_mode`); err != nil {
			t.Fatal(err)
		}
		if err := c.GetContext(ctx, &fk, `PRAGMA foreign_keys`); err != nil {
			t.Fatal(err)
		}
		if busy != 10000 || mode != "wal" || fk != 1 {
			t.Errorf("connection %d: busy_timeout %d, journal_mode %s, foreign_keys %d; want 10000, wal, 1", i, busy, mode, fk)
		}
	}
	for _, c := range conns {
		c.Close()
	}
}

// storeTestChurn adds and releases n leases through st, as connections do.
func storeTestChurn(ctx context.Context, st *Store, sessionID string, pid, n int) error {
	for i := range n {
		id, err := st.AddLease(ctx, sessionID, pid, uint64(i), storeTestNow)
		if err != nil {
			return fmt.Errorf("add %d: %w (busy: %v)", i, err, IsBusy(err))
		}
		if _, err := st.MarkRunning(ctx, sessionID, storeTestNow); err != nil {
			return fmt.Errorf("mark running %d: %w (busy: %v)", i, err, IsBusy(err))
		}
		if changed, err := st.ReleaseLease(ctx, id); err != nil || !changed {
			return fmt.Errorf("release %d: %v, %w (busy: %v)", i, changed, err, IsBusy(err))
		}
	}
	return nil
}

// TestConcurrentHandlesNeverGetBusy opens a fresh database from 8
// goroutines at once (concurrent first migration included), each with its
// own Store, and has each churn 50 leases.
func TestConcurrentHandlesNeverGetBusy(t *testing.T) {
	ctx := context.Background()
	path := storeTestPath(t)
	const workers, perWorker = 8, 50
	errs := make([]error, workers)
	ids := make([]string, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := Open(ctx, path)
			if err != nil {
				errs[w] = fmt.Errorf("open: %w", err)
				return
			}
			defer st.Close()
			ids[w] = st.InstanceID()
			errs[w] = storeTestChurn(ctx, st, "gen-shared", 1000+w, perWorker)
		}()
	}
	wg.Wait()
	for w, err := range errs {
		if err != nil {
			t.Errorf("worker %d: %v", w, err)
		}
	}
	st := storeTestOpen(t, path)
	for w, id := range ids {
		if id != st.InstanceID() {
			t.Errorf("worker %d saw instance id %s, the database has %s: the first migration ran twice", w, id, st.InstanceID())
		}
	}
	var leases, maxID, migrated int
	if err := st.DB().Get(&leases, `SELECT COUNT(*) FROM leases`); err != nil {
		t.Fatal(err)
	}
	if err := st.DB().Get(&maxID, `SELECT seq FROM sqlite_sequence WHERE name = 'leases'`); err != nil {
		t.Fatal(err)
	}
	if err := st.DB().Get(&migrated, `SELECT COUNT(*) FROM schema_migrations`); err != nil {
		t.Fatal(err)
	}
	if leases != 0 || maxID != workers*perWorker || migrated != len(migrations)-1 {
		t.Fatalf("leases left %d, ids handed out %d, migrations recorded %d; want 0, %d, %d", leases, maxID, migrated, workers*perWorker, len(migrations)-1)
	}
}

const storeTestHelperEnv = "PODSPAWN_SQLSTORE_TEST_HELPER_DB"

// TestStoreHelperProcess is the body of the child processes of
// TestConcurrentProcessesNeverGetBusy; run directly it does nothing.
func TestStoreHelperProcess(t *testing.T) {
	path := os.Getenv(storeTestHelperEnv)
	if path == "" {
		return
	}
	pid := os.Getpid()
	st, err := Open(context.Background(), path)
	if err == nil {
		err = storeTestChurn(context.Background(), st, "gen-shared", pid, 50)
		st.Close()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "helper %d: %v\n", pid, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// TestConcurrentProcessesNeverGetBusy has four processes and this one
// open and write the same fresh database at once, as concurrent SSH
// connections and the cleanup daemon do.
func TestConcurrentProcessesNeverGetBusy(t *testing.T) {
	path := storeTestPath(t)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	var cmds []*exec.Cmd
	var outs []*strings.Builder
	for range 4 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestStoreHelperProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), storeTestHelperEnv+"="+path)
		out := &strings.Builder{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds, outs = append(cmds, cmd), append(outs, out)
	}
	st, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := storeTestChurn(context.Background(), st, "gen-shared", os.Getpid(), 50); err != nil {
		t.Errorf("this process: %v", err)
	}
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Errorf("helper %d: %v\n%s", i, err, outs[i])
		}
	}
	var handed int
	if err := st.DB().Get(&handed, `SELECT seq FROM sqlite_sequence WHERE name = 'leases'`); err != nil {
		t.Fatal(err)
	}
	if handed != 5*50 {
		t.Fatalf("%d lease ids handed out, want %d", handed, 5*50)
	}
}

func TestCorruptSpecFailsTheWholeLoad(t *testing.T) {
	ctx := context.Background()
	st := storeTestOpen(t, storeTestPath(t))
	alice := storeTestCreate(t, st, storeTestSession(desired.SessionKey{User: "alice"}, desired.StatusRunning))
	bob := storeTestCreate(t, st, storeTestSession(desired.SessionKey{User: "bob", Project: "web"}, desired.StatusRunning))
	if _, err := st.DB().Exec(`UPDATE sessions SET spec = '{"image": "x", "services": [' WHERE id = ?`, bob.ID); err != nil {
		t.Fatal(err)
	}
	all, err := loadByKey(ctx, st)
	if err == nil || all != nil || !strings.Contains(err.Error(), "session bob@web: corrupt spec column") {
		t.Fatalf("Load = %v, %v; want no map and an error naming bob@web", all, err)
	}
	if _, err := st.LoadKey(ctx, bob.Key); err == nil || !strings.Contains(err.Error(), "session bob@web") {
		t.Fatalf("LoadKey(bob@web) error = %v, want one naming the session", err)
	}
	if got := storeTestLoadKey(t, st, alice.Key); got == nil || got.ID != alice.ID {
		t.Fatalf("LoadKey(alice) = %+v, want her intact row", got)
	}
}

func TestIsBusy(t *testing.T) {
	cases := map[string]struct {
		err  error
		want bool
	}{
		"busy":         {sqlite3.Error{Code: sqlite3.ErrBusy}, true},
		"locked":       {sqlite3.Error{Code: sqlite3.ErrLocked}, true},
		"wrapped busy": {fmt.Errorf("recording connection: %w", sqlite3.Error{Code: sqlite3.ErrBusy}), true},
		"constraint":   {sqlite3.Error{Code: sqlite3.ErrConstraint}, false},
		"other":        {errors.New("database is locked"), false},
		"nil":          {nil, false},
	}
	for name, tc := range cases {
		if got := IsBusy(tc.err); got != tc.want {
			t.Errorf("%s: IsBusy = %v, want %v", name, got, tc.want)
		}
	}
}

func TestNewSessionIDIsRandomHex(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := NewSessionID()
		if _, err := strconv.ParseUint(id[:16], 16, 64); err != nil || len(id) != 32 {
			t.Fatalf("id %q is not 32 hex digits", id)
		}
		if seen[id] {
			t.Fatalf("id %s repeated", id)
		}
		seen[id] = true
	}
}

// loadByKey is Store.Load as a map, checking the key order Load promises.
func loadByKey(ctx context.Context, st *Store) (map[desired.SessionKey]*desired.Session, error) {
	all, err := st.Load(ctx)
	if err != nil {
		return nil, err
	}
	m := map[desired.SessionKey]*desired.Session{}
	for i, s := range all {
		if i > 0 && all[i-1].Key.Compare(s.Key) >= 0 {
			return nil, fmt.Errorf("Load returned %s after %s: not in key order", s.Key, all[i-1].Key)
		}
		m[s.Key] = s
	}
	return m, nil
}
