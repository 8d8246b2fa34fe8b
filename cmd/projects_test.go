package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/desired/lock"
	"github.com/podspawn/podspawn/desired/projects"
)

func TestProjectsLockBusy(t *testing.T) {
	e := newAdminEnv(t)
	l, err := lock.Acquire(context.Background(), e.lockDir, "_projects")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock()
	old := userLockTimeout
	userLockTimeout = 10 * time.Millisecond
	defer func() { userLockTimeout = old }()
	golden(t, "remove_project_locked", e.run("remove-project", "web"))
}

// projectEnv is an admin env with project backend registered.
func projectEnv(t *testing.T) *adminEnv {
	t.Helper()
	e := newAdminEnv(t)
	regPath := filepath.Join(e.root, "projects.yaml")
	f, err := os.OpenFile(e.cfgPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Fprintf(f, "projects_file: %s\n", regPath); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	reg := projects.Registry{"backend": {Repo: "https://example.com/backend.git", ImageTag: "podspawn/backend:podfile-abc123"}}
	if err := reg.Save(regPath); err != nil {
		t.Fatal(err)
	}
	return e
}

func TestRemoveProjectForceGolden(t *testing.T) {
	t.Run("remove_project_force", func(t *testing.T) {
		// Like stop and remove-user: a protected object stays and is named.
		e := projectEnv(t)
		e.keyFile("alice", pubKey(t, 1, "a")+"\n")
		e.keyFile("bob", pubKey(t, 2, "b")+"\n")
		e.seedUserSessions("alice")
		e.seedUserSessions("bob")
		for i := range e.docker.containers {
			if e.docker.containers[i].Names[0] == "/podspawn-bob-backend-postgres" {
				e.docker.containers[i].Labels["podspawn.keep"] = "true"
			}
		}
		golden(t, "remove_project_force", e.run("remove-project", "backend", "--force")+e.run("list"))
		want := []string{"container podspawn-alice", "container podspawn-bob", "container podspawn-bob-backend-postgres", "network podspawn-alice-net", "network podspawn-bob-net"}
		if diff := cmp.Diff(want, e.docker.names()); diff != "" {
			t.Errorf("Docker objects left (-want +got):\n%s", diff)
		}
	})
	t.Run("remove_project_force_user_locked", func(t *testing.T) {
		// A user's lock held by a login: that session is left untouched,
		// and the error says how to finish.
		e := projectEnv(t)
		e.keyFile("alice", pubKey(t, 1, "a")+"\n")
		e.keyFile("bob", pubKey(t, 2, "b")+"\n")
		e.seedUserSessions("alice")
		e.seedUserSessions("bob")
		l, err := lock.Acquire(context.Background(), e.lockDir, "bob")
		if err != nil {
			t.Fatal(err)
		}
		old := userLockTimeout
		userLockTimeout = 10 * time.Millisecond
		defer func() { userLockTimeout = old }()
		out := e.run("remove-project", "backend", "--force")
		l.Unlock()
		golden(t, "remove_project_force_user_locked", out+e.run("stop", "bob@backend"))
		if diff := cmp.Diff([]string{"container podspawn-alice", "container podspawn-bob", "network podspawn-alice-net", "network podspawn-bob-net"}, e.docker.names()); diff != "" {
			t.Errorf("Docker objects left (-want +got):\n%s", diff)
		}
	})
}
