package sqlstore

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCheckHealth(t *testing.T) {
	ctx := context.Background()
	supported := len(migrations) - 1

	t.Run("healthy database, read-only", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "state.db")
		st, err := Open(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		st.Close()
		before, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		h, err := CheckHealth(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(Health{SchemaVersion: supported, Supported: supported}, h); diff != "" {
			t.Errorf("health (-want +got):\n%s", diff)
		}
		after, _ := os.ReadFile(path)
		if string(before) != string(after) {
			t.Error("CheckHealth changed the database file")
		}
	})

	t.Run("healthy database while another connection is open", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "state.db")
		st, err := Open(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		h, err := CheckHealth(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		if h.SchemaVersion != supported || len(h.Problems) != 0 {
			t.Errorf("got %+v", h)
		}
	})

	t.Run("missing file is not created", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "state.db")
		_, err := CheckHealth(ctx, path)
		if !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("err = %v, want fs.ErrNotExist", err)
		}
		if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("CheckHealth created %s", path)
		}
	})

	t.Run("not a database", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "state.db")
		if err := os.WriteFile(path, []byte(strings.Repeat("garbage ", 1000)), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := CheckHealth(ctx, path)
		if err == nil || !strings.Contains(err.Error(), "not a database") {
			t.Fatalf("err = %v, want 'not a database'", err)
		}
	})

	t.Run("newer schema is reported", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "state.db")
		st, err := Open(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.DB().ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, 0)`, supported+5); err != nil {
			t.Fatal(err)
		}
		st.Close()
		h, err := CheckHealth(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(Health{SchemaVersion: supported + 5, Supported: supported}, h); diff != "" {
			t.Errorf("health (-want +got):\n%s", diff)
		}
	})
}
