package main

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/podspawn/podspawn/desired"
)

// appendConfig adds lines to the env's config file.
func (e *adminEnv) appendConfig(lines string) {
	e.t.Helper()
	f, err := os.OpenFile(e.cfgPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := fmt.Fprint(f, lines); err != nil {
		e.t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		e.t.Fatal(err)
	}
}

// seedBusyPass sets up a pass with a bit of everything: alice@backend's
// grace period is over (its objects and record go), bob is back within
// his (it is cancelled), carol's objects have no record
// (orphans), and erin's session has no objects left (its record goes).
func (e *adminEnv) seedBusyPass() {
	e.t.Helper()
	for i, u := range []string{"alice", "bob", "erin"} {
		e.keyFile(u, pubKey(e.t, byte(i+1), u)+"\n")
	}
	e.seedUserSessions("alice")
	bob := session("bob", "", desired.StatusGrace, time.Hour, 8*time.Hour)
	bob.GraceExpiry = t0.Add(time.Hour)
	e.seed(bob)
	e.lease(bob, true)
	id := e.store().InstanceID()
	e.docker.addSessionObjects(id, bob)
	carol := session("carol", "", desired.StatusRunning, time.Hour, 8*time.Hour)
	e.docker.addSessionObjects(id, carol)
	erin := session("erin", "web", desired.StatusTerminating, time.Hour, 8*time.Hour)
	erin.TerminateReason = "user-requested"
	e.seed(erin)
	e.clock.Step(2 * time.Minute)
}

// seedHeldAndFailing sets up a pass the blast-radius guard stops in part
// (three running sessions whose users have no key file, over
// cleanup.max_unplanned_removals: 1) and in which one teardown fails
// (Docker refuses to remove alice@backend's network).
func (e *adminEnv) seedHeldAndFailing() {
	e.t.Helper()
	e.appendConfig("cleanup:\n  max_unplanned_removals: 1\n")
	e.keyFile("alice", pubKey(e.t, 1, "a")+"\n")
	e.seedUserSessions("alice")
	id := e.store().InstanceID()
	for _, u := range []string{"dave", "frank", "grace"} {
		s := session(u, "", desired.StatusRunning, time.Hour, 8*time.Hour)
		e.seed(s)
		e.lease(s, true)
		e.docker.addSessionObjects(id, s)
	}
	e.docker.fail["network id-podspawn-alice-backend-net"] = "error while removing network: network podspawn-alice-backend-net id id-podspawn-alice-backend-net has active endpoints"
	e.clock.Step(2 * time.Minute)
}

// The default output of a pass: what it did on stdout, ending with the
// summary; on stderr only what went wrong.
func TestCleanupGolden(t *testing.T) {
	t.Run("cleanup", func(t *testing.T) {
		e := newAdminEnv(t)
		e.seedBusyPass()
		// The second pass has nothing left to do.
		golden(t, "cleanup", e.run("cleanup")+e.run("cleanup"))
	})
	t.Run("cleanup_json", func(t *testing.T) {
		e := newAdminEnv(t)
		e.seedBusyPass()
		golden(t, "cleanup_json", e.run("cleanup", "-o", "json"))
	})
	t.Run("cleanup_held_and_failed", func(t *testing.T) {
		e := newAdminEnv(t)
		e.seedHeldAndFailing()
		golden(t, "cleanup_held_and_failed", e.run("cleanup"))
	})
	t.Run("cleanup_held_and_failed_json", func(t *testing.T) {
		e := newAdminEnv(t)
		e.seedHeldAndFailing()
		golden(t, "cleanup_held_and_failed_json", e.run("cleanup", "-o", "json"))
	})
}
