package main

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/desired"
)

func TestStopGolden(t *testing.T) {
	t.Run("stop_bad_arguments", func(t *testing.T) {
		e := newAdminEnv(t)
		golden(t, "stop_bad_arguments", e.run("stop", "@x")+e.run("stop", "alice@")+e.run("stop", "Alice")+
			e.run("stop", "alice@Backend")+e.run("stop", "../etc")+e.run("stop"))
	})
	t.Run("stop_unknown", func(t *testing.T) {
		e := newAdminEnv(t)
		e.seed(session("alice", "", desired.StatusRunning, time.Hour, 8*time.Hour))
		golden(t, "stop_unknown", e.run("stop", "alice@backend")+e.run("stop", "bob")+e.run("stop", "bob", "--dry-run"))
	})
	t.Run("stop_dry_run", func(t *testing.T) {
		e := newAdminEnv(t)
		e.keyFile("alice", pubKey(t, 1, "a")+"\n")
		e.seedUserSessions("alice")
		db, objs := e.dbSnapshot(), e.docker.names()
		golden(t, "stop_dry_run", e.run("stop", "alice@backend", "--dry-run")+e.run("stop", "alice", "--dry-run", "-o", "json"))
		e.assertUnchanged(db, objs)
	})
	t.Run("stop", func(t *testing.T) {
		e := newAdminEnv(t)
		e.keyFile("alice", pubKey(t, 1, "a")+"\n")
		e.seedUserSessions("alice")
		golden(t, "stop", e.run("stop", "alice@backend")+e.run("stop", "alice")+e.run("list"))
		if got := e.docker.names(); len(got) != 0 {
			t.Errorf("Docker objects left: %v", got)
		}
	})
	t.Run("stop_without_objects", func(t *testing.T) {
		// The container is already gone: stop still removes the record.
		e := newAdminEnv(t)
		e.keyFile("alice", pubKey(t, 1, "a")+"\n")
		e.seed(session("alice", "web", desired.StatusRunning, time.Hour, 8*time.Hour))
		golden(t, "stop_without_objects", e.run("stop", "alice@web")+e.run("list"))
	})
	t.Run("stop_docker_refuses", func(t *testing.T) {
		e := newAdminEnv(t)
		e.keyFile("alice", pubKey(t, 1, "a")+"\n")
		e.seedUserSessions("alice")
		e.docker.fail["volume podspawn-alice-backend-postgres-data"] = "remove podspawn-alice-backend-postgres-data: volume is in use - [abc123]"
		golden(t, "stop_docker_refuses", e.run("stop", "alice@backend")+e.run("list"))
		s := desired.State{Sessions: e.dbSnapshot()}.Session(desired.SessionKey{User: "alice", Project: "backend"})
		if s == nil || s.Status != desired.StatusTerminating || s.TerminateReason != "user-requested" {
			t.Fatalf("alice@backend must stay terminating for user-requested, got %+v", s)
		}
		// Running stop again once Docker agrees finishes the job.
		delete(e.docker.fail, "volume podspawn-alice-backend-postgres-data")
		golden(t, "stop_docker_refuses_retry", e.run("stop", "alice@backend"))
		if diff := cmp.Diff([]string{"container podspawn-alice", "network podspawn-alice-net"}, e.docker.names()); diff != "" {
			t.Errorf("Docker objects left (-want +got):\n%s", diff)
		}
	})
	t.Run("stop_protected", func(t *testing.T) {
		// An operator protected the service container: it stays, and stop says so.
		e := newAdminEnv(t)
		e.keyFile("alice", pubKey(t, 1, "a")+"\n")
		e.seedUserSessions("alice")
		for i := range e.docker.containers {
			if e.docker.containers[i].Names[0] == "/podspawn-alice-backend-postgres" {
				e.docker.containers[i].Labels["podspawn.keep"] = "true"
			}
		}
		golden(t, "stop_protected", e.run("stop", "alice@backend"))
		if diff := cmp.Diff([]string{"container podspawn-alice", "container podspawn-alice-backend-postgres", "network podspawn-alice-net"}, e.docker.names()); diff != "" {
			t.Errorf("Docker objects left (-want +got):\n%s", diff)
		}
	})
	t.Run("stop_docker_down", func(t *testing.T) {
		e := newAdminEnv(t)
		e.keyFile("alice", pubKey(t, 1, "a")+"\n")
		e.seedUserSessions("alice")
		db := e.dbSnapshot()
		t.Setenv("DOCKER_HOST", unreachableDocker)
		golden(t, "stop_docker_down", e.run("stop", "alice"))
		if diff := cmp.Diff(db, e.dbSnapshot()); diff != "" {
			t.Errorf("state changed (-before +after):\n%s", diff)
		}
	})
}
