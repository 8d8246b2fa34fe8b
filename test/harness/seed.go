package harness

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"golang.org/x/crypto/ssh"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/config"
	"github.com/podspawn/podspawn/desired/keys"
	"github.com/podspawn/podspawn/desired/sqlstore"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/observed/proc"
)

// Uniq returns prefix plus 6 random hex digits: user, object and image
// names are global on the daemon, and a crashed earlier run must not collide.
func Uniq(prefix string) string {
	var b [3]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// AddUser writes a key file with a fresh ed25519 key for user, so the user
// exists (and is not "removed") for podspawn. The file has the mode the
// key writer insists on, so admin commands may rewrite it.
func (e *Env) AddUser(user string) {
	e.T.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		e.T.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		e.T.Fatal(err)
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp))) + " " + user + "@test\n"
	if err := os.WriteFile(filepath.Join(e.KeyDir, user), []byte(line), keys.FileMode); err != nil {
		e.T.Fatal(err)
	}
}

// OpenStore opens the env's state database (creating it and its instance
// id); the caller closes it.
func (e *Env) OpenStore() *sqlstore.Store {
	e.T.Helper()
	st, err := sqlstore.Open(context.Background(), e.DBPath)
	if err != nil {
		e.T.Fatalf("opening state db: %v", err)
	}
	return st
}

// WithDB runs fn on a fresh handle of the env's state database.
func (e *Env) WithDB(fn func(db *sqlx.DB)) {
	e.T.Helper()
	st := e.OpenStore()
	defer st.Close()
	fn(st.DB())
}

// ExecSQL runs one SQL statement (tests move deadlines this way).
func (e *Env) ExecSQL(q string, args ...any) {
	e.T.Helper()
	e.WithDB(func(db *sqlx.DB) {
		if _, err := db.Exec(q, args...); err != nil {
			e.T.Fatalf("%s: %v", q, err)
		}
	})
}

// Row loads one session (nil if absent).
func (e *Env) Row(key desired.SessionKey) *desired.Session {
	e.T.Helper()
	st := e.OpenStore()
	defer st.Close()
	s, err := st.LoadKey(context.Background(), key)
	if err != nil {
		e.T.Fatal(err)
	}
	return s
}

// ReleaseLeases drops every lease of the key, as a clean disconnect would.
func (e *Env) ReleaseLeases(key desired.SessionKey) {
	e.T.Helper()
	e.ExecSQL(`DELETE FROM leases WHERE session_id = (SELECT id FROM sessions WHERE user = ? AND project = ?)`, key.User, key.Project)
}

// SessionSpec is the spec spawn would record for key with the env's config.
func SessionSpec(key desired.SessionKey, services []desired.Service) desired.Spec {
	return desired.Spec{
		Image: Image, Shell: "/bin/sh",
		ContainerName: desired.ContainerName(key), NetworkName: desired.NetworkName(key),
		Security: config.Defaults().SecuritySpec(), Services: services,
	}
}

// SeedOptions tune SeedCreating.
type SeedOptions struct {
	Mode     desired.Mode // default grace-period
	Services []desired.Service
	// Lease is the process holding the connection; zero means this test process.
	Lease observed.ProcessRef
	// NoLease seeds the row without a connection.
	NoLease bool
}

// SeedCreating inserts a row in status creating with a live lease, as a
// spawn would before creating anything, and returns the session id.
func (e *Env) SeedCreating(key desired.SessionKey, o SeedOptions) string {
	e.T.Helper()
	if o.Mode == "" {
		o.Mode = desired.ModeGracePeriod
	}
	now := time.Now()
	sess := &desired.Session{
		Key: key, ID: sqlstore.NewSessionID(), Mode: o.Mode, Status: desired.StatusCreating,
		CreatedAt: now, MaxLifetimeAt: now.Add(8 * time.Hour), GracePeriod: time.Minute,
		Spec: SessionSpec(key, o.Services),
	}
	st := e.OpenStore()
	defer st.Close()
	ctx := context.Background()
	if err := st.Create(ctx, sess, now); err != nil {
		e.T.Fatal(err)
	}
	if !o.NoLease {
		ref := o.Lease
		if ref.PID == 0 {
			var err error
			if ref, err = proc.Self(); err != nil {
				e.T.Fatal(err)
			}
		}
		if _, err := st.AddLease(ctx, sess.ID, ref.PID, ref.Start, now); err != nil {
			e.T.Fatal(err)
		}
	}
	return sess.ID
}

// DBDump returns every row of every table, for before/after comparisons.
func (e *Env) DBDump() map[string][]map[string]any {
	e.T.Helper()
	out := map[string][]map[string]any{}
	e.WithDB(func(db *sqlx.DB) {
		var tables []string
		if err := db.Select(&tables, `SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name`); err != nil {
			e.T.Fatal(err)
		}
		for _, tbl := range tables {
			out[tbl] = e.dumpTable(db, tbl)
		}
	})
	return out
}

func (e *Env) dumpTable(db *sqlx.DB, tbl string) []map[string]any {
	e.T.Helper()
	rows, err := db.Queryx(`SELECT * FROM "` + tbl + `" ORDER BY rowid`)
	if err != nil {
		e.T.Fatal(err)
	}
	defer rows.Close()
	out := []map[string]any{}
	for rows.Next() {
		m := map[string]any{}
		if err := rows.MapScan(m); err != nil {
			e.T.Fatal(err)
		}
		for k, v := range m {
			if b, ok := v.([]byte); ok {
				m[k] = string(b)
			}
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		e.T.Fatal(err)
	}
	return out
}
