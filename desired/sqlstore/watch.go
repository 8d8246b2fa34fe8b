package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"

	"github.com/jmoiron/sqlx"

	"github.com/podspawn/podspawn/desired"
)

// Watcher gives the cleanup daemon a cheap way to notice changes other
// processes (spawn, admin commands) commit: PRAGMA data_version on a
// connection of its own, and a small snapshot of per-session stamps to diff
// when the version moved. It never writes.
type Watcher struct {
	db   *sqlx.DB
	conn *sqlx.Conn
}

// SessionStamp is what identifies a version of a session row.
type SessionStamp struct {
	ID        string `db:"id"`
	Status    string `db:"status"`
	UpdatedAt int64  `db:"updated_at"`
	// Leases lists the row's lease ids in order; spawn adds and releases
	// leases without touching updated_at.
	Leases string `db:"leases"`
}

// LeaseRef is a lease with the key of its session.
type LeaseRef struct {
	Key      desired.SessionKey
	ID       int64
	PID      int
	PIDStart uint64
}

// WatchSnapshot is the state the watcher diffs.
type WatchSnapshot struct {
	Sessions map[desired.SessionKey]SessionStamp
	Leases   []LeaseRef
}

// OpenWatcher opens a separate handle on the database at path with one
// dedicated connection: data_version is per connection, and the store's
// pool must not lose a connection to the watcher.
func OpenWatcher(ctx context.Context, path string) (*Watcher, error) {
	q := url.Values{}
	q.Set("_busy_timeout", "10000")
	db, err := sqlx.Open("sqlite3", dsn(path, q))
	if err != nil {
		return nil, fmt.Errorf("opening state db %s for watching: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	conn, err := db.Connx(ctx)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("opening state db %s for watching: %w", path, err)
	}
	return &Watcher{db: db, conn: conn}, nil
}

// Close releases the watcher's connection.
func (w *Watcher) Close() error {
	w.conn.Close()
	return w.db.Close()
}

// DataVersion changes whenever another connection commits to the database.
func (w *Watcher) DataVersion(ctx context.Context) (int64, error) {
	var v int64
	if err := w.conn.GetContext(ctx, &v, `PRAGMA data_version`); err != nil {
		return 0, fmt.Errorf("reading data_version: %w", err)
	}
	return v, nil
}

// Snapshot reads the stamps of every session and every lease in one read
// transaction.
func (w *Watcher) Snapshot(ctx context.Context) (WatchSnapshot, error) {
	tx, err := w.conn.BeginTxx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return WatchSnapshot{}, fmt.Errorf("reading session stamps: %w", err)
	}
	defer tx.Rollback()
	var rows []struct {
		User    string `db:"user"`
		Project string `db:"project"`
		SessionStamp
	}
	err = tx.SelectContext(ctx, &rows, `SELECT s.user, s.project, s.id, s.status, s.updated_at,
		COALESCE((SELECT group_concat(id) FROM (SELECT id FROM leases WHERE session_id = s.id ORDER BY id)), '') AS leases
		FROM sessions s`)
	if err != nil {
		return WatchSnapshot{}, fmt.Errorf("reading session stamps: %w", err)
	}
	var leases []struct {
		User     string `db:"user"`
		Project  string `db:"project"`
		ID       int64  `db:"id"`
		PID      int    `db:"pid"`
		PIDStart int64  `db:"pid_start"`
	}
	err = tx.SelectContext(ctx, &leases, `SELECT s.user, s.project, l.id, l.pid, l.pid_start
		FROM leases l JOIN sessions s ON s.id = l.session_id ORDER BY l.id`)
	if err != nil {
		return WatchSnapshot{}, fmt.Errorf("reading leases: %w", err)
	}
	snap := WatchSnapshot{Sessions: make(map[desired.SessionKey]SessionStamp, len(rows))}
	for _, r := range rows {
		snap.Sessions[desired.SessionKey{User: r.User, Project: r.Project}] = r.SessionStamp
	}
	for _, l := range leases {
		snap.Leases = append(snap.Leases, LeaseRef{Key: desired.SessionKey{User: l.User, Project: l.Project}, ID: l.ID, PID: l.PID, PIDStart: uint64(l.PIDStart)})
	}
	return snap, nil
}
