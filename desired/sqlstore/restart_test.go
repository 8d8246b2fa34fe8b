package sqlstore

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jmoiron/sqlx"

	"github.com/podspawn/podspawn/desired"
)

// restarts is the crash-loop part of a session.
type restarts struct {
	Count      int
	Last, Next time.Time
}

func restartsOf(s *desired.Session) restarts {
	return restarts{s.RestartCount, s.LastRestartAt, s.NextRestartAt}
}

// RecordRestart writes absolute values (a retried action records one
// restart), never touches a terminating generation, and ResetRestarts
// starts the count over, keeping when the last restart was.
func TestRecordAndResetRestarts(t *testing.T) {
	ctx := context.Background()
	st := storeTestOpen(t, storeTestPath(t))
	alice := storeTestCreate(t, st, storeTestSession(desired.SessionKey{User: "alice"}, desired.StatusGrace))
	bob := storeTestCreate(t, st, storeTestSession(desired.SessionKey{User: "bob"}, desired.StatusTerminating))

	at := storeTestNow.Add(time.Minute)
	for range 2 {
		if _, err := st.RecordRestart(ctx, alice.ID, 3, at.Add(4*time.Second), at); err != nil {
			t.Fatal(err)
		}
	}
	want := restarts{3, at, at.Add(4 * time.Second)}
	if diff := cmp.Diff(want, restartsOf(storeTestLoadKey(t, st, alice.Key))); diff != "" {
		t.Fatalf("after RecordRestart (-want +got):\n%s", diff)
	}
	if s := storeTestLoadKey(t, st, alice.Key); s.Status != desired.StatusGrace {
		t.Fatalf("status after RecordRestart = %s, want it unchanged", s.Status)
	}

	changed, err := st.RecordRestart(ctx, bob.ID, 1, at.Add(time.Second), at)
	if err != nil || changed {
		t.Fatalf("RecordRestart of a terminating generation = %v, %v; want no change", changed, err)
	}
	if got := restartsOf(storeTestLoadKey(t, st, bob.Key)); got != (restarts{}) {
		t.Fatalf("terminating generation's restarts = %+v, want none", got)
	}

	later := at.Add(10 * time.Minute)
	if changed, err := st.ResetRestarts(ctx, alice.ID, later); err != nil || !changed {
		t.Fatalf("ResetRestarts = %v, %v; want a change", changed, err)
	}
	if diff := cmp.Diff(restarts{0, at, time.Time{}}, restartsOf(storeTestLoadKey(t, st, alice.Key))); diff != "" {
		t.Fatalf("after ResetRestarts (-want +got):\n%s", diff)
	}
	if changed, err := st.ResetRestarts(ctx, alice.ID, later); err != nil || changed {
		t.Fatalf("second ResetRestarts = %v, %v; want nothing to change", changed, err)
	}
}

// A database written by a podspawn without crash-loop columns (schema 1)
// is migrated in place: its rows keep every value and read as never
// restarted, and new rows and restarts work.
func TestMigrationAddsRestartColumnsToAnExistingDatabase(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	old, err := sqlx.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	k := desired.SessionKey{User: "alice", Project: "web"}
	id := NewSessionID()
	setup := []string{
		`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)`,
		migrations[1],
		`INSERT INTO meta (key, value) VALUES ('instance_id', 'inst-old')`,
		`INSERT INTO schema_migrations (version, applied_at) VALUES (1, 1)`,
	}
	for _, q := range setup {
		if _, err := old.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	created := storeTestNow.Add(-time.Hour)
	if _, err := old.Exec(`INSERT INTO sessions (user, project, id, mode, status, created_at, max_lifetime_at, grace_period_ns,
		grace_expiry, terminate_reason, image, container_name, network_name, service_names, spec, updated_at)
		VALUES (?, ?, ?, 'grace-period', 'running', ?, ?, ?, NULL, '', 'img', 'podspawn-alice-web', 'podspawn-alice-web-net', '[]', ?, ?)`,
		k.User, k.Project, id, ts(created), ts(created.Add(8*time.Hour)), int64(time.Minute),
		`{"image":"img","shell":"/bin/sh","container_name":"podspawn-alice-web","network_name":"podspawn-alice-web-net"}`, ts(created)); err != nil {
		t.Fatal(err)
	}
	old.Close()

	st := storeTestOpen(t, path)
	if st.InstanceID() != "inst-old" {
		t.Fatalf("instance id = %q, want the old database's", st.InstanceID())
	}
	var version int
	if err := st.DB().Get(&version, `SELECT MAX(version) FROM schema_migrations`); err != nil || version != len(migrations)-1 {
		t.Fatalf("schema version = %d, %v; want %d", version, err, len(migrations)-1)
	}
	s := storeTestLoadKey(t, st, k)
	want := &desired.Session{
		Key: k, ID: id, Mode: desired.ModeGracePeriod, Status: desired.StatusRunning, CreatedAt: created,
		MaxLifetimeAt: created.Add(8 * time.Hour), GracePeriod: time.Minute,
		Spec: desired.Spec{Image: "img", Shell: "/bin/sh", ContainerName: "podspawn-alice-web", NetworkName: "podspawn-alice-web-net"},
	}
	if diff := cmp.Diff(want, s); diff != "" {
		t.Fatalf("old row after the migration (-want +got):\n%s", diff)
	}
	if _, err := st.RecordRestart(ctx, id, 1, storeTestNow.Add(time.Second), storeTestNow); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(restarts{1, storeTestNow, storeTestNow.Add(time.Second)}, restartsOf(storeTestLoadKey(t, st, k))); diff != "" {
		t.Fatalf("restart recorded on the migrated row (-want +got):\n%s", diff)
	}
	storeTestCreate(t, st, storeTestSession(desired.SessionKey{User: "bob"}, desired.StatusCreating))
}

// RecordWarning keeps the shortest lead time warned at: a longer or
// equal one changes nothing, so a pass never warns twice.
func TestRecordWarning(t *testing.T) {
	ctx := context.Background()
	st, err := Open(ctx, filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Unix(1000, 0).UTC()
	sess := &desired.Session{Key: desired.SessionKey{User: "alice"}, ID: NewSessionID(), Mode: desired.ModeGracePeriod, Status: desired.StatusRunning,
		CreatedAt: now, MaxLifetimeAt: now.Add(time.Hour), Spec: desired.Spec{ContainerName: "podspawn-alice", NetworkName: "podspawn-alice-net"}}
	if err := st.Tx(ctx, func(tx *sqlx.Tx) error { return insertSession(ctx, tx, sess, now) }); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		before  time.Duration
		changed bool
		want    time.Duration
	}{{15 * time.Minute, true, 15 * time.Minute}, {15 * time.Minute, false, 15 * time.Minute}, {time.Hour, false, 15 * time.Minute}, {time.Minute, true, time.Minute}} {
		changed, err := st.RecordWarning(ctx, sess.ID, step.before, now)
		if err != nil || changed != step.changed {
			t.Fatalf("RecordWarning(%s) = %v, %v; want %v", step.before, changed, err, step.changed)
		}
		got, err := st.LoadKey(ctx, sess.Key)
		if err != nil || got.WarnedBefore != step.want {
			t.Fatalf("after RecordWarning(%s): WarnedBefore = %v (%v), want %s", step.before, got, err, step.want)
		}
	}
}
