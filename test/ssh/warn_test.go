package ssh

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/sqlstore"
)

// TestLifetimeWarnings: a connected shell gets the 15m and then the 1m
// warning on its terminal, each once, before the max lifetime removes the
// session. Time passes by moving max_lifetime_at in the database; each
// step is one 'podspawn cleanup' pass.
func TestLifetimeWarnings(t *testing.T) {
	s := newServer(t, serverOptions{Users: []string{"ssa"}})
	u := s.user("ssa")
	sess, stdin, out := openShell(t, s, u, 40, 200, 0)
	lifetimeIn := func(d time.Duration) {
		s.exec(`UPDATE sessions SET max_lifetime_at = ? WHERE user = ?`, time.Now().Add(d).UnixNano(), u.Name)
	}
	// The next output up to marker: a warning, if any, comes before it.
	upToMarker := func(n int) string {
		t.Helper()
		fmt.Fprintf(stdin, "echo mark-$((%d+1))\n", n)
		got, err := readUntil(out, fmt.Sprintf("mark-%d", n+1), 20*time.Second)
		if err != nil {
			t.Fatalf("shell output: %v (got %q)", err, got)
		}
		return got
	}
	const text = "this session reaches its maximum lifetime in "

	lifetimeIn(10 * time.Minute)
	s.cleanup(t)
	got := upToMarker(1)
	if strings.Count(got, text) != 1 || !strings.Contains(got, "Files outside a persistent home will be lost") {
		t.Fatalf("first warning: want one, got %q", got)
	}
	if w := s.warnedBefore(u); w != 15*time.Minute {
		t.Fatalf("warned_before = %s, want 15m", w)
	}
	s.cleanup(t)
	if got := upToMarker(2); strings.Contains(got, text) {
		t.Fatalf("second pass warned again: %q", got)
	}

	lifetimeIn(30 * time.Second)
	s.cleanup(t)
	if got := upToMarker(3); strings.Count(got, text) != 1 {
		t.Fatalf("second warning: want one, got %q", got)
	}
	if w := s.warnedBefore(u); w != time.Minute {
		t.Fatalf("warned_before = %s, want 1m", w)
	}

	lifetimeIn(-time.Second)
	r := s.cleanup(t)
	if !strings.Contains(r.Stdout, "removed") {
		t.Fatalf("lifetime removal: %s", r.Stdout)
	}
	done := make(chan error, 1)
	go func() { done <- sess.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the shell did not end with its session")
	}
	if id := s.containerID(desired.ContainerName(desired.SessionKey{User: u.Name})); id != "" {
		t.Fatalf("session container %s still exists", id)
	}
}

func (s *server) warnedBefore(u *testUser) time.Duration {
	s.t.Helper()
	st, err := sqlstore.Open(context.Background(), s.Env.DBPath)
	if err != nil {
		s.t.Fatal(err)
	}
	defer st.Close()
	var ns int64
	if err := st.DB().Get(&ns, `SELECT warned_before_ns FROM sessions WHERE user = ?`, u.Name); err != nil {
		s.t.Fatal(err)
	}
	return time.Duration(ns)
}
