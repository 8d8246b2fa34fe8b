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

// TestCheckClockRecordsTheSampleAcrossOpens: the sample a pass records is
// what the next process compares with, through a forward step and its
// confirmation, on a database migrated from schema 3.
func TestCheckClockRecordsTheSampleAcrossOpens(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	old, err := sqlx.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	setup := []string{`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)`, migrations[1], migrations[2], migrations[3],
		`INSERT INTO meta (key, value) VALUES ('instance_id', 'inst-old')`,
		`INSERT INTO schema_migrations (version, applied_at) VALUES (1, 1), (2, 1), (3, 1)`}
	for _, q := range setup {
		if _, err := old.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	old.Close()

	st := storeTestOpen(t, path)
	if s, err := st.ClockSample(ctx); err != nil || s != nil {
		t.Fatalf("ClockSample of a migrated database = %+v, %v; want none", s, err)
	}
	first := desired.ClockSample{Wall: storeTestNow, Boot: time.Hour, BootID: "boot-1"}
	if c, err := st.CheckClock(ctx, first); err != nil || c.Step != 0 || !c.HoldLiveDeadlinesUntil.IsZero() {
		t.Fatalf("first CheckClock = %+v, %v; want no step", c, err)
	}
	st.Close()

	st = storeTestOpen(t, path)
	stepped := desired.ClockSample{Wall: storeTestNow.Add(3 * time.Hour), Boot: time.Hour + time.Second, BootID: "boot-1"}
	c, err := st.CheckClock(ctx, stepped)
	if err != nil {
		t.Fatal(err)
	}
	wantNext := stepped
	wantNext.HoldUntil = stepped.Boot + desired.ClockStepConfirm
	if c.Step != 3*time.Hour-time.Second || !c.Previous.Equal(storeTestNow) || !c.HoldLiveDeadlinesUntil.Equal(stepped.Wall.Add(desired.ClockStepConfirm)) {
		t.Fatalf("CheckClock after the step = %+v", c)
	}
	got, err := st.ClockSample(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(&wantNext, got); diff != "" {
		t.Fatalf("recorded sample (-want +got):\n%s", diff)
	}

	later := desired.ClockSample{Wall: stepped.Wall.Add(desired.ClockStepConfirm), Boot: wantNext.HoldUntil, BootID: "boot-1"}
	if c, err := st.CheckClock(ctx, later); err != nil || !c.HoldLiveDeadlinesUntil.IsZero() {
		t.Fatalf("confirming CheckClock = %+v, %v; want the hold lifted", c, err)
	}
	if got, err := st.ClockSample(ctx); err != nil || got.HoldUntil != 0 || !got.Wall.Equal(later.Wall) {
		t.Fatalf("sample after the confirmation = %+v, %v", got, err)
	}
}
