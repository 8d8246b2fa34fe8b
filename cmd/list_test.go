package main

import (
	"testing"
	"time"

	"github.com/podspawn/podspawn/desired"
)

// seedListSessions covers every row shape list and status must render.
func seedListSessions(e *adminEnv) {
	alice := session("alice", "backend", desired.StatusRunning, 90*time.Minute, 8*time.Hour)
	bob := session("bob", "", desired.StatusGrace, 45*time.Minute, 8*time.Hour)
	bob.GraceExpiry = t0.Add(30 * time.Second)
	carol := session("carol", "frontend", desired.StatusRunning, 5*time.Minute+10*time.Second, 8*time.Hour)
	// Persistent and past the lifetime it never enforces: "never", not "expired".
	dave := session("dave", "ml", desired.StatusRunning, 30*time.Hour, 8*time.Hour)
	dave.Mode = desired.ModePersistent
	erin := session("erin", "", desired.StatusRunning, 8*time.Hour+2*time.Minute, 8*time.Hour)
	frank := session("frank", "api", desired.StatusCreating, 45*time.Second, 8*time.Hour)
	gina := session("gina", "", desired.StatusTerminating, 2*time.Hour, 8*time.Hour)
	gina.TerminateReason = "user-requested"
	// Exactly at the deadline: expired.
	hank := session("hank", "", desired.StatusRunning, 8*time.Hour, 8*time.Hour)
	// Its container stopped and was started again twice; it backs off.
	carol.RestartCount, carol.LastRestartAt, carol.NextRestartAt = 2, t0.Add(-time.Second), t0.Add(time.Second)
	// Torn down for crash-looping.
	judy := session("judy", "", desired.StatusTerminating, 10*time.Minute, 8*time.Hour)
	judy.TerminateReason, judy.RestartCount = "crash-loop", 10
	e.seed(alice, bob, carol, dave, erin, frank, gina, hank, judy)
	e.lease(alice, true)
	e.lease(alice, true)
	e.lease(alice, false) // its process is gone: not a connection
	e.lease(carol, true)
	e.lease(erin, true)
	e.lease(frank, false)
}

func TestListGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		seed bool
		args []string
	}{
		{"list_empty", false, []string{"list"}},
		{"list_empty_json", false, []string{"list", "-o", "json"}},
		{"list_sessions", true, []string{"list"}},
		{"list_sessions_json", true, []string{"list", "--output", "json"}},
		{"list_clock_stepped_back", true, []string{"list"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newAdminEnv(t)
			if tc.seed {
				seedListSessions(e)
			}
			if tc.name == "list_clock_stepped_back" {
				e.clock.SetTime(t0.Add(-10 * time.Minute))
			}
			golden(t, tc.name, e.run(tc.args...))
		})
	}
}

func TestFormatAge(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{-time.Second, "0s"},
		{0, "0s"},
		{999 * time.Millisecond, "0s"},
		{45 * time.Second, "45s"},
		{59*time.Second + 999*time.Millisecond, "59s"},
		{time.Minute, "1m"},
		{5*time.Minute + 59*time.Second, "5m"},
		{59*time.Minute + 59*time.Second, "59m"},
		{time.Hour, "1h"},
		{2*time.Hour + 59*time.Second, "2h"},
		{2*time.Hour + 30*time.Minute + 59*time.Second, "2h30m"},
		{49*time.Hour + 5*time.Minute, "49h5m"},
	} {
		if got := formatAge(tc.d); got != tc.want {
			t.Errorf("formatAge(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}
