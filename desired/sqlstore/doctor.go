package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/jmoiron/sqlx"
)

// Health is what a read-only look at the database finds (for doctor).
type Health struct {
	// SchemaVersion is the newest applied migration; 0 for a database that
	// was never migrated.
	SchemaVersion int
	// Supported is the newest schema this binary knows.
	Supported int
	// Problems are the lines PRAGMA quick_check reported other than "ok".
	Problems []string
}

// CheckHealth opens path without creating, migrating or writing it and runs
// PRAGMA quick_check. A missing file is an error wrapping fs.ErrNotExist.
func CheckHealth(ctx context.Context, path string) (Health, error) {
	h := Health{Supported: len(migrations) - 1}
	if _, err := os.Stat(path); err != nil {
		return h, err
	}
	// SQLite reports a permission problem only as "unable to open database
	// file"; find it first so the caller can say "run as root".
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return h, err
	}
	f.Close()
	// mode=rw never creates the file (mode=ro cannot open a WAL database
	// whose -shm is gone); query_only refuses every write on top of that.
	q := url.Values{}
	q.Set("mode", "rw")
	q.Set("_query_only", "true")
	q.Set("_busy_timeout", "5000")
	db, err := sqlx.Open("sqlite3", dsn(path, q))
	if err != nil {
		return h, fmt.Errorf("opening state db %s: %w", path, err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)

	var lines []string
	if err := db.SelectContext(ctx, &lines, `PRAGMA quick_check`); err != nil {
		return h, fmt.Errorf("state db %s: quick_check: %w", path, err)
	}
	for _, l := range lines {
		if l != "ok" {
			h.Problems = append(h.Problems, l)
		}
	}
	if len(h.Problems) > 0 {
		return h, nil
	}
	var v sql.NullInt64
	err = db.GetContext(ctx, &v, `SELECT MAX(version) FROM schema_migrations`)
	if err != nil && !strings.Contains(err.Error(), "no such table") && !errors.Is(err, sql.ErrNoRows) {
		return h, fmt.Errorf("state db %s: reading schema version: %w", path, err)
	}
	h.SchemaVersion = int(v.Int64)
	return h, nil
}

// OpenQueryOnly opens an existing, fully migrated database for reading
// only: it never creates, migrates or writes the file, so doctor can plan
// from it without changing anything.
func OpenQueryOnly(ctx context.Context, path string) (*Store, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	q := url.Values{}
	q.Set("mode", "rw") // mode=ro cannot open a WAL database whose -shm is gone
	q.Set("_query_only", "true")
	q.Set("_busy_timeout", "5000")
	db, err := sqlx.Open("sqlite3", dsn(path, q))
	if err != nil {
		return nil, fmt.Errorf("opening state db %s: %w", path, err)
	}
	db.SetMaxOpenConns(2)
	s := &Store{db: db, rdb: db, path: path}
	var v sql.NullInt64
	if err := db.GetContext(ctx, &v, `SELECT MAX(version) FROM schema_migrations`); err != nil {
		db.Close()
		return nil, fmt.Errorf("state db %s: reading schema version: %w", path, err)
	}
	if latest := len(migrations) - 1; int(v.Int64) != latest {
		db.Close()
		return nil, fmt.Errorf("state db %s: schema version %d, this podspawn uses %d; run 'podspawn cleanup' once to migrate it", path, v.Int64, latest)
	}
	if err := s.readMeta(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("state db %s: %w", path, err)
	}
	return s, nil
}
