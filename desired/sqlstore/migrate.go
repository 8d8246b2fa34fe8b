package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
)

// migrations are applied in order, each in its own transaction together
// with its row in schema_migrations, so a crash leaves a whole step or none.
// Never edit a released step: append a new one.
var migrations = []string{
	1: `
CREATE TABLE meta (
	key   TEXT PRIMARY KEY,
	value TEXT NOT NULL
);
CREATE TABLE sessions (
	user             TEXT NOT NULL,
	project          TEXT NOT NULL DEFAULT '',
	id               TEXT NOT NULL UNIQUE,
	mode             TEXT NOT NULL CHECK (mode IN ('grace-period','destroy-on-disconnect','persistent')),
	status           TEXT NOT NULL CHECK (status IN ('creating','running','grace_period','terminating')),
	created_at       INTEGER NOT NULL,
	max_lifetime_at  INTEGER NOT NULL,
	grace_period_ns  INTEGER NOT NULL,
	grace_expiry     INTEGER,
	terminate_reason TEXT NOT NULL DEFAULT '',
	image            TEXT NOT NULL,
	container_name   TEXT NOT NULL,
	network_name     TEXT NOT NULL,
	service_names    TEXT NOT NULL DEFAULT '[]',
	spec             TEXT NOT NULL,
	updated_at       INTEGER NOT NULL,
	PRIMARY KEY (user, project)
);
CREATE TABLE leases (
	id         INTEGER PRIMARY KEY AUTOINCREMENT,
	session_id TEXT NOT NULL,
	pid        INTEGER NOT NULL,
	pid_start  INTEGER NOT NULL,
	started_at INTEGER NOT NULL
);
CREATE INDEX leases_session ON leases (session_id);
`,
	// Crash-loop back-off of the session container (desired.Session's
	// RestartCount, LastRestartAt and NextRestartAt).
	2: `
ALTER TABLE sessions ADD COLUMN restart_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN last_restart_at INTEGER;
ALTER TABLE sessions ADD COLUMN next_restart_at INTEGER;
`,
	// Warnings before the max lifetime (desired.Session's WarnedBefore):
	// the smallest lead time already warned at, 0 for none.
	3: `
ALTER TABLE sessions ADD COLUMN warned_before_ns INTEGER NOT NULL DEFAULT 0;
`,
	// The clocks at the last one-shot pass (desired.ClockSample), one row:
	// the next pass, in another process, compares with them to detect a
	// step of the wall clock.
	4: `
CREATE TABLE clock_sample (
	id            INTEGER PRIMARY KEY CHECK (id = 1),
	wall          INTEGER NOT NULL,
	boot_ns       INTEGER NOT NULL,
	boot_id       TEXT NOT NULL,
	hold_until_ns INTEGER NOT NULL
);
`,
}

func (s *Store) migrate(ctx context.Context) error {
	// Inside an IMMEDIATE transaction: in WAL mode an autocommit statement
	// that reads and then writes fails at once with SQLITE_BUSY (no busy
	// wait) when another process wrote in between, as concurrent first
	// opens of a fresh database do.
	err := s.Tx(ctx, func(tx *sqlx.Tx) error {
		_, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)`)
		return err
	})
	if err != nil {
		return fmt.Errorf("creating schema_migrations: %w", err)
	}
	latest := len(migrations) - 1
	var current sql.NullInt64
	if err := s.db.GetContext(ctx, &current, `SELECT MAX(version) FROM schema_migrations`); err != nil {
		return fmt.Errorf("reading schema version: %w", err)
	}
	if int(current.Int64) > latest {
		return fmt.Errorf("schema version %d is newer than this podspawn supports (%d); upgrade podspawn instead of using an older binary", current.Int64, latest)
	}
	for v := int(current.Int64) + 1; v <= latest; v++ {
		err := s.Tx(ctx, func(tx *sqlx.Tx) error {
			// Re-check inside the write transaction: another process may
			// have applied this step since we read the version.
			var done int
			if err := tx.GetContext(ctx, &done, `SELECT COUNT(*) FROM schema_migrations WHERE version = ?`, v); err != nil {
				return err
			}
			if done > 0 {
				return nil
			}
			if _, err := tx.ExecContext(ctx, migrations[v]); err != nil {
				return err
			}
			if v == 1 {
				if _, err := tx.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES ('instance_id', ?)`, NewSessionID()); err != nil {
					return err
				}
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`, v, time.Now().UnixNano())
			return err
		})
		if err != nil {
			return fmt.Errorf("applying migration %d: %w", v, err)
		}
	}
	return nil
}
