package metrics

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// Readiness follows the daemon's resyncs and event stream.
func TestHealthTransitions(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	h := NewHealth(time.Minute, func() time.Time { return now })
	steps := []struct {
		name string
		do   func()
		want string // "" ready, else a substring of the reason
	}{
		{"before the first resync", func() {}, "no resync has finished yet"},
		{"database answered", func() { h.Database(nil) }, "docker: no resync"},
		{"docker answered", func() { h.Docker(nil) }, "event stream not connected"},
		{"stream connected", func() { h.Stream(true) }, ""},
		{"docker fails in a resync", func() { h.Docker(errors.New("connection refused")) }, "docker: connection refused"},
		{"docker answers again", func() { h.Docker(nil) }, ""},
		{"stream lost", func() { h.Stream(false) }, "event stream not connected"},
		{"stream back", func() { h.Stream(true) }, ""},
		{"database fails", func() { h.Database(errors.New("database is locked")) }, "database: database is locked"},
		{"database back", func() { h.Database(nil) }, ""},
		{"no resync for longer than MaxAge", func() { now = now.Add(61 * time.Second) }, "last answered 1m1s ago"},
		{"a resync answers", func() { h.Database(nil); h.Docker(nil) }, ""},
	}
	for _, s := range steps {
		s.do()
		err := h.Ready()
		switch {
		case s.want == "" && err != nil:
			t.Errorf("%s: not ready (%v), want ready", s.name, err)
		case s.want != "" && (err == nil || !strings.Contains(err.Error(), s.want)):
			t.Errorf("%s: Ready() = %v, want an error containing %q", s.name, err, s.want)
		}
	}
}

func TestNilHealthIsReady(t *testing.T) {
	var h *Health
	h.Database(errors.New("x"))
	h.Docker(nil)
	h.Stream(false)
	if err := h.Ready(); err != nil {
		t.Fatal(err)
	}
}
