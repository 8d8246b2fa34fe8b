package ssh

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var incidentRE = regexp.MustCompile(`\(incident ([0-9a-f]{8})\)`)

// TestFailureShowsAnIncident: when podspawn itself fails (the database is
// locked, Docker is unreachable), the SSH user sees a short message with
// an incident id and none of the details (database path, SQLite's or
// Docker's errors); spawn's log has the details under that id.
func TestFailureShowsAnIncident(t *testing.T) {
	t.Run("database locked", func(t *testing.T) {
		s := newServer(t, serverOptions{Users: []string{"ssa"}})
		db, err := sql.Open("sqlite3", s.Env.DBPath)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		conn, err := db.Conn(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := conn.ExecContext(context.Background(), "BEGIN EXCLUSIVE"); err != nil {
			t.Fatal(err)
		}
		r := s.runSSH(s.user("ssa"), nil, "", "echo ran")
		conn.ExecContext(context.Background(), "ROLLBACK")
		checkIncident(t, s, r, []string{s.Env.DBPath, "locked", "sqlite", "state.db"}, "database is locked")
	})
	t.Run("docker unreachable", func(t *testing.T) {
		dead := "unix://" + filepath.Join(t.TempDir(), "dead-docker.sock")
		s := newServer(t, serverOptions{Users: []string{"ssa"}, SpawnEnv: []string{"DOCKER_HOST=" + dead}})
		r := s.runSSH(s.user("ssa"), nil, "", "echo ran")
		checkIncident(t, s, r, []string{"dead-docker.sock", "Docker daemon", "connect"}, "dead-docker.sock")
	})
}

// checkIncident checks the client's view (exit 255, a message with an id,
// none of hidden) and that spawn's log has logged under that id.
func checkIncident(t *testing.T, s *server, r sshResult, hidden []string, logged string) {
	t.Helper()
	if r.Code != 255 || strings.Contains(r.Stdout, "ran") {
		t.Fatalf("ssh: exit %d, stdout %q, stderr %q; want 255 and the command not run", r.Code, r.Stdout, r.Stderr)
	}
	m := incidentRE.FindStringSubmatch(r.Stderr)
	if m == nil || !strings.Contains(r.Stderr, "podspawn could not start your session") {
		t.Fatalf("client stderr has no incident message:\n%s", r.Stderr)
	}
	for _, h := range hidden {
		if strings.Contains(strings.ToLower(r.Stderr), strings.ToLower(h)) {
			t.Errorf("client stderr shows %q:\n%s", h, r.Stderr)
		}
	}
	log, err := os.ReadFile(s.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, line := range strings.Split(string(log), "\n") {
		if strings.Contains(line, m[1]) && strings.Contains(line, logged) {
			found = true
		}
	}
	if !found {
		t.Errorf("spawn's log has no line with incident %s and %q:\n%s", m[1], logged, log)
	}
}
