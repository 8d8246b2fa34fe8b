// Package sqlstore keeps desired state in SQLite: session rows, connection
// leases and the instance id. Every edit is one transaction; timestamps are
// stored as Unix nanoseconds so ordering never depends on a string format.
package sqlstore

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/jmoiron/sqlx"
	sqlite3 "github.com/mattn/go-sqlite3"

	"github.com/podspawn/podspawn/desired"
)

// ErrNotFound is returned when a session row does not exist.
var ErrNotFound = errors.New("no such session")

// Store is the SQLite-backed desired-state store.
type Store struct {
	db *sqlx.DB
	// rdb serves read-only snapshots with deferred transactions, which in
	// WAL mode never wait behind a writer.
	rdb        *sqlx.DB
	path       string
	instanceID string
	createdAt  time.Time
}

// Open opens (creating if needed) the database at path and migrates it.
// WAL and the busy timeout are in the DSN so that every pooled connection
// gets them, not only the one that happened to run a PRAGMA.
func Open(ctx context.Context, path string) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating state directory for %s: %w", path, err)
	}
	q := url.Values{}
	q.Set("_journal_mode", "WAL")
	q.Set("_busy_timeout", "10000")
	q.Set("_foreign_keys", "on")
	q.Set("_synchronous", "NORMAL")
	// IMMEDIATE takes the write lock at BEGIN, so two writers queue on the
	// busy timeout instead of failing with SQLITE_BUSY on upgrade.
	q.Set("_txlock", "immediate")
	db, err := sqlx.Open("sqlite3", dsn(path, q))
	if err != nil {
		return nil, fmt.Errorf("opening state db %s: %w", path, err)
	}
	db.SetMaxOpenConns(4)
	s := &Store{db: db, path: path}
	if err := s.migrateRetrying(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("state db %s: %w", path, err)
	}
	if err := s.readMeta(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("state db %s: %w", path, err)
	}
	q.Set("_txlock", "deferred")
	// The journal mode is stored in the file; the readers need not set it.
	q.Del("_journal_mode")
	rdb, err := sqlx.Open("sqlite3", dsn(path, q))
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("opening state db %s: %w", path, err)
	}
	rdb.SetMaxOpenConns(4)
	s.rdb = rdb
	return s, nil
}

// readMeta reads the instance id and when the database was created.
func (s *Store) readMeta(ctx context.Context) error {
	if err := s.db.GetContext(ctx, &s.instanceID, `SELECT value FROM meta WHERE key = 'instance_id'`); err != nil {
		return fmt.Errorf("reading instance id: %w", err)
	}
	var born sql.NullInt64
	if err := s.db.GetContext(ctx, &born, `SELECT applied_at FROM schema_migrations WHERE version = 1`); err != nil {
		return fmt.Errorf("reading its creation time: %w", err)
	}
	if born.Valid {
		s.createdAt = time.Unix(0, born.Int64)
	}
	return nil
}

// migrateRetrying retries a migration that failed on SQLITE_BUSY: when
// several processes open a fresh file at once, switching it to WAL can
// fail without waiting on the busy timeout.
func (s *Store) migrateRetrying(ctx context.Context) error {
	deadline := time.Now().Add(15 * time.Second)
	for wait := 5 * time.Millisecond; ; wait *= 2 {
		err := s.migrate(ctx)
		if err == nil || !IsBusy(err) || time.Now().After(deadline) {
			return err
		}
		if wait > 500*time.Millisecond {
			wait = 500 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
	}
}

// Close closes the database.
func (s *Store) Close() error {
	if s.rdb != s.db {
		s.rdb.Close()
	}
	return s.db.Close()
}

// Path is the database file.
func (s *Store) Path() string { return s.path }

// CreatedAt is when this database was created (its first migration).
func (s *Store) CreatedAt() time.Time { return s.createdAt }

// InstanceID is the random id this database was created with.
func (s *Store) InstanceID() string { return s.instanceID }

// DB exposes the handle for integrity checks (doctor).
func (s *Store) DB() *sqlx.DB { return s.db }

// IsBusy reports whether err is SQLite's busy or locked condition, which is
// worth retrying rather than failing on.
func IsBusy(err error) bool {
	var se sqlite3.Error
	if errors.As(err, &se) {
		return se.Code == sqlite3.ErrBusy || se.Code == sqlite3.ErrLocked
	}
	return false
}

type sessionRow struct {
	User            string        `db:"user"`
	Project         string        `db:"project"`
	ID              string        `db:"id"`
	Mode            string        `db:"mode"`
	Status          string        `db:"status"`
	CreatedAt       int64         `db:"created_at"`
	MaxLifetimeAt   int64         `db:"max_lifetime_at"`
	GracePeriodNS   int64         `db:"grace_period_ns"`
	GraceExpiry     sql.NullInt64 `db:"grace_expiry"`
	TerminateReason string        `db:"terminate_reason"`
	Image           string        `db:"image"`
	ContainerName   string        `db:"container_name"`
	NetworkName     string        `db:"network_name"`
	ServiceNames    string        `db:"service_names"`
	Spec            string        `db:"spec"`
	UpdatedAt       int64         `db:"updated_at"`
	RestartCount    int           `db:"restart_count"`
	LastRestartAt   sql.NullInt64 `db:"last_restart_at"`
	NextRestartAt   sql.NullInt64 `db:"next_restart_at"`
	WarnedBeforeNS  int64         `db:"warned_before_ns"`
}

type leaseRow struct {
	ID        int64  `db:"id"`
	SessionID string `db:"session_id"`
	PID       int    `db:"pid"`
	PIDStart  int64  `db:"pid_start"`
	StartedAt int64  `db:"started_at"`
}

const sessionCols = `user, project, id, mode, status, created_at, max_lifetime_at, grace_period_ns,
	grace_expiry, terminate_reason, image, container_name, network_name, service_names, spec, updated_at,
	restart_count, last_restart_at, next_restart_at, warned_before_ns`

func ts(t time.Time) int64 { return t.UnixNano() }

func fromTS(n int64) time.Time { return time.Unix(0, n).UTC() }

// nullTS stores the zero time as NULL.
func nullTS(t time.Time) sql.NullInt64 {
	if t.IsZero() {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: ts(t), Valid: true}
}

func (r sessionRow) toSession() (*desired.Session, error) {
	s := &desired.Session{
		Key:             desired.SessionKey{User: r.User, Project: r.Project},
		ID:              r.ID,
		Mode:            desired.Mode(r.Mode),
		Status:          desired.Status(r.Status),
		CreatedAt:       fromTS(r.CreatedAt),
		MaxLifetimeAt:   fromTS(r.MaxLifetimeAt),
		GracePeriod:     time.Duration(r.GracePeriodNS),
		TerminateReason: r.TerminateReason,
	}
	if r.GraceExpiry.Valid {
		s.GraceExpiry = fromTS(r.GraceExpiry.Int64)
	}
	s.RestartCount = r.RestartCount
	s.WarnedBefore = time.Duration(r.WarnedBeforeNS)
	if r.LastRestartAt.Valid {
		s.LastRestartAt = fromTS(r.LastRestartAt.Int64)
	}
	if r.NextRestartAt.Valid {
		s.NextRestartAt = fromTS(r.NextRestartAt.Int64)
	}
	if err := json.Unmarshal([]byte(r.Spec), &s.Spec); err != nil {
		return nil, fmt.Errorf("session %s: corrupt spec column: %w", s.Key, err)
	}
	return s, nil
}

// Load reads every session and lease, in key order (see desired.State).
// It fails as a whole: a partial result would make missing rows look like
// orphans.
func (s *Store) Load(ctx context.Context) ([]*desired.Session, error) {
	tx, err := s.rdb.BeginTxx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("loading sessions: %w", err)
	}
	defer tx.Rollback()
	var rows []sessionRow
	if err := tx.SelectContext(ctx, &rows, `SELECT `+sessionCols+` FROM sessions ORDER BY user, project`); err != nil {
		return nil, fmt.Errorf("loading sessions: %w", err)
	}
	var leases []leaseRow
	if err := tx.SelectContext(ctx, &leases, `SELECT id, session_id, pid, pid_start, started_at FROM leases ORDER BY id`); err != nil {
		return nil, fmt.Errorf("loading leases: %w", err)
	}
	return assemble(rows, leases)
}

// LoadKey reads one session (nil if absent) with its leases.
func (s *Store) LoadKey(ctx context.Context, k desired.SessionKey) (*desired.Session, error) {
	tx, err := s.rdb.BeginTxx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("loading session %s: %w", k, err)
	}
	defer tx.Rollback()
	return loadKeyTx(ctx, tx, k)
}

func loadKeyTx(ctx context.Context, tx *sqlx.Tx, k desired.SessionKey) (*desired.Session, error) {
	var rows []sessionRow
	if err := tx.SelectContext(ctx, &rows, `SELECT `+sessionCols+` FROM sessions WHERE user = ? AND project = ?`, k.User, k.Project); err != nil {
		return nil, fmt.Errorf("loading session %s: %w", k, err)
	}
	if len(rows) == 0 {
		return nil, nil
	}
	var leases []leaseRow
	if err := tx.SelectContext(ctx, &leases, `SELECT id, session_id, pid, pid_start, started_at FROM leases WHERE session_id = ? ORDER BY id`, rows[0].ID); err != nil {
		return nil, fmt.Errorf("loading leases of %s: %w", k, err)
	}
	out, err := assemble(rows, leases)
	if err != nil {
		return nil, err
	}
	return out[0], nil
}

// assemble returns the sessions of rows, in the rows' order, with their
// leases.
func assemble(rows []sessionRow, leases []leaseRow) ([]*desired.Session, error) {
	out := make([]*desired.Session, 0, len(rows))
	byID := make(map[string]*desired.Session, len(rows))
	for _, r := range rows {
		sess, err := r.toSession()
		if err != nil {
			return nil, err
		}
		out = append(out, sess)
		byID[sess.ID] = sess
	}
	for _, l := range leases {
		if sess, ok := byID[l.SessionID]; ok {
			sess.Leases = append(sess.Leases, desired.Lease{
				ID: l.ID, SessionID: l.SessionID, PID: l.PID, PIDStart: uint64(l.PIDStart), StartedAt: fromTS(l.StartedAt),
			})
		}
	}
	return out, nil
}

// NewSessionID returns a random 16-byte hex id.
func NewSessionID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err)) // the kernel's RNG never fails on Linux
	}
	return hex.EncodeToString(b[:])
}

// Tx runs fn in one IMMEDIATE transaction.
func (s *Store) Tx(ctx context.Context, fn func(tx *sqlx.Tx) error) error {
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

func insertSession(ctx context.Context, tx *sqlx.Tx, sess *desired.Session, now time.Time) error {
	spec, err := json.Marshal(sess.Spec)
	if err != nil {
		return err
	}
	svcNames, err := json.Marshal(serviceNames(sess.Spec))
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO sessions (`+sessionCols+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
		sess.Key.User, sess.Key.Project, sess.ID, string(sess.Mode), string(sess.Status), ts(sess.CreatedAt), ts(sess.MaxLifetimeAt),
		int64(sess.GracePeriod), nullTS(sess.GraceExpiry), sess.TerminateReason, sess.Spec.Image, sess.Spec.ContainerName, sess.Spec.NetworkName,
		string(svcNames), string(spec), ts(now), sess.RestartCount, nullTS(sess.LastRestartAt), nullTS(sess.NextRestartAt), int64(sess.WarnedBefore))
	if err != nil {
		return fmt.Errorf("recording session %s: %w", sess.Key, err)
	}
	return nil
}

func serviceNames(spec desired.Spec) []string {
	names := make([]string, 0, len(spec.Services))
	for _, s := range spec.Services {
		names = append(names, spec.ServiceContainerName(s.Name))
	}
	return names
}

// Create inserts a new session row (status creating, or whatever sess says).
func (s *Store) Create(ctx context.Context, sess *desired.Session, now time.Time) error {
	return s.Tx(ctx, func(tx *sqlx.Tx) error { return insertSession(ctx, tx, sess, now) })
}

// exec1 runs a statement and reports whether it changed a row.
func exec1(ctx context.Context, e sqlx.ExecerContext, q string, args ...any) (bool, error) {
	res, err := e.ExecContext(ctx, q, args...)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// MarkRunning moves a creating generation to running. It reports whether
// anything changed.
func (s *Store) MarkRunning(ctx context.Context, sessionID string, now time.Time) (bool, error) {
	return exec1(ctx, s.db, `UPDATE sessions SET status = 'running', updated_at = ? WHERE id = ? AND status = 'creating'`, ts(now), sessionID)
}

// StartGrace sets the grace expiry of a running generation with no leases.
func (s *Store) StartGrace(ctx context.Context, sessionID string, expiry, now time.Time) (bool, error) {
	return exec1(ctx, s.db, `UPDATE sessions SET status = 'grace_period', grace_expiry = ?, updated_at = ?
		WHERE id = ? AND status = 'running' AND NOT EXISTS (SELECT 1 FROM leases WHERE session_id = sessions.id)`, ts(expiry), ts(now), sessionID)
}

// CancelGrace returns a generation in its grace period to running.
func (s *Store) CancelGrace(ctx context.Context, sessionID string, now time.Time) (bool, error) {
	return exec1(ctx, s.db, `UPDATE sessions SET status = 'running', grace_expiry = NULL, updated_at = ? WHERE id = ? AND status = 'grace_period'`, ts(now), sessionID)
}

// MarkTerminating records the decision to tear a generation down, before
// any Docker object is removed.
func (s *Store) MarkTerminating(ctx context.Context, sessionID, reason string, now time.Time) (bool, error) {
	return exec1(ctx, s.db, `UPDATE sessions SET status = 'terminating', terminate_reason = ?, updated_at = ? WHERE id = ? AND status != 'terminating'`, reason, ts(now), sessionID)
}

// RecordRestart records that the session container of a generation is
// being started again: the restart count becomes count, the restart time
// now, and the next restart is not allowed before nextAt. It sets absolute
// values, so executing the same action twice records one restart. A
// terminating generation is left alone.
func (s *Store) RecordRestart(ctx context.Context, sessionID string, count int, nextAt, now time.Time) (bool, error) {
	return exec1(ctx, s.db, `UPDATE sessions SET restart_count = ?, last_restart_at = ?, next_restart_at = ?, updated_at = ?
		WHERE id = ? AND status != 'terminating'`, count, ts(now), nullTS(nextAt), ts(now), sessionID)
}

// ResetRestarts sets the restart count of a generation back to zero (its
// container stayed up long enough) and lifts the back-off. The time of the
// last restart stays, for the record.
func (s *Store) ResetRestarts(ctx context.Context, sessionID string, now time.Time) (bool, error) {
	return exec1(ctx, s.db, `UPDATE sessions SET restart_count = 0, next_restart_at = NULL, updated_at = ?
		WHERE id = ? AND (restart_count != 0 OR next_restart_at IS NOT NULL)`, ts(now), sessionID)
}

// RecordWarning notes that the generation's connections were warned
// before before its max lifetime, so no pass warns at that lead time (or
// a longer one) again.
func (s *Store) RecordWarning(ctx context.Context, sessionID string, before time.Duration, now time.Time) (bool, error) {
	return exec1(ctx, s.db, `UPDATE sessions SET warned_before_ns = ?, updated_at = ?
		WHERE id = ? AND (warned_before_ns = 0 OR warned_before_ns > ?)`, int64(before), ts(now), sessionID, int64(before))
}

// DeleteSession removes a terminating generation and its leases. Called
// only after Docker agreed that its objects are gone.
func (s *Store) DeleteSession(ctx context.Context, sessionID string) (bool, error) {
	var changed bool
	err := s.Tx(ctx, func(tx *sqlx.Tx) error {
		var err error
		changed, err = exec1(ctx, tx, `DELETE FROM sessions WHERE id = ? AND status = 'terminating'`, sessionID)
		if err != nil {
			return err
		}
		// Leases go only with their row: a row that is not terminating
		// keeps its live connections.
		_, err = tx.ExecContext(ctx, `DELETE FROM leases WHERE session_id = ? AND NOT EXISTS (SELECT 1 FROM sessions WHERE id = ?)`, sessionID, sessionID)
		return err
	})
	return changed, err
}

// dsn is the go-sqlite3 URI of the database at path with options q.
func dsn(path string, q url.Values) string {
	return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
}

// AddLease records a live connection served by process pid.
func (s *Store) AddLease(ctx context.Context, sessionID string, pid int, pidStart uint64, now time.Time) (int64, error) {
	return insertLease(ctx, s.db, sessionID, pid, pidStart, now)
}

func insertLease(ctx context.Context, db sqlx.ExecerContext, sessionID string, pid int, pidStart uint64, now time.Time) (int64, error) {
	res, err := db.ExecContext(ctx, `INSERT INTO leases (session_id, pid, pid_start, started_at) VALUES (?,?,?,?)`, sessionID, pid, int64(pidStart), ts(now))
	if err != nil {
		return 0, fmt.Errorf("recording connection: %w", err)
	}
	return res.LastInsertId()
}

// ReleaseLease deletes one lease. Releasing a lease that is gone succeeds.
func (s *Store) ReleaseLease(ctx context.Context, leaseID int64) (bool, error) {
	return exec1(ctx, s.db, `DELETE FROM leases WHERE id = ?`, leaseID)
}

// MarkTerminatingWhere marks every session of user (and project, when
// project is non-nil) terminating and returns their keys. Used by stop,
// remove-user and remove-project, in one transaction.
func (s *Store) MarkTerminatingWhere(ctx context.Context, user string, project *string, reason string, now time.Time) ([]desired.SessionKey, error) {
	if user == "" && (project == nil || *project == "") {
		// A caller bug must never turn into "every session".
		return nil, errors.New("marking sessions terminating: a user or a project is required")
	}
	var keys []desired.SessionKey
	err := s.Tx(ctx, func(tx *sqlx.Tx) error {
		q := `SELECT user, project FROM sessions WHERE 1=1`
		var args []any
		if user != "" {
			q += ` AND user = ?`
			args = append(args, user)
		}
		if project != nil {
			q += ` AND project = ?`
			args = append(args, *project)
		}
		q += ` ORDER BY user, project`
		if err := tx.SelectContext(ctx, &keys, q, args...); err != nil {
			return err
		}
		for _, k := range keys {
			if _, err := tx.ExecContext(ctx, `UPDATE sessions SET status = 'terminating', terminate_reason = ?, updated_at = ?
				WHERE user = ? AND project = ? AND status != 'terminating'`, reason, ts(now), k.User, k.Project); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("marking sessions for removal: %w", err)
	}
	return keys, nil
}

// Replace swaps the generation of key for sess (a new id) in one
// transaction: the old row and its leases go, the new one is inserted.
// Used when a connection finds a session past its lifetime (it gets a new
// one, never the expired one). The old generation's Docker objects carry
// the old id and are reaped as a stale generation.
func (s *Store) Replace(ctx context.Context, tx *sqlx.Tx, old *desired.Session, sess *desired.Session, now time.Time) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM leases WHERE session_id = ?`, old.ID); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE id = ?`, old.ID); err != nil {
		return err
	}
	return insertSession(ctx, tx, sess, now)
}

// LoadKeyTx reads one session inside a transaction.
func (s *Store) LoadKeyTx(ctx context.Context, tx *sqlx.Tx, k desired.SessionKey) (*desired.Session, error) {
	return loadKeyTx(ctx, tx, k)
}
