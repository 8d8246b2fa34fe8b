package main

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/ssh"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/lock"
)

// pubKey returns a deterministic authorized_keys line.
func pubKey(t *testing.T, seed byte, comment string) string {
	t.Helper()
	s := make([]byte, ed25519.SeedSize)
	for i := range s {
		s[i] = seed
	}
	pk, err := ssh.NewPublicKey(ed25519.NewKeyFromSeed(s).Public())
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk))) + " " + comment
}

func TestListUsersGolden(t *testing.T) {
	t.Run("list_users", func(t *testing.T) {
		e := newAdminEnv(t)
		e.keyFile("alice", fmt.Sprintf("# alice's keys\n%s\n\n%s\n%s\n", pubKey(t, 1, "alice@laptop"), pubKey(t, 2, "alice@desk"), pubKey(t, 3, "alice@phone")))
		e.keyFile("bob", fmt.Sprintf("%s\nssh-rsa not-base64 bob@old\nthis is not a key\n", pubKey(t, 4, "bob@laptop")))
		e.keyFile("ci-runner", pubKey(t, 5, "ci")+"\n")
		e.keyFile("deploy", "garbage\n")
		e.keyFile("erin", "")
		// Key files are plain files: root reports a link, never follows it.
		if err := os.Mkdir(filepath.Join(e.root, "carol-dir"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join(e.root, "carol-dir"), filepath.Join(e.keyDir, "carol")); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join(e.root, "gone"), filepath.Join(e.keyDir, "dangling")); err != nil {
			t.Fatal(err)
		}
		// Not users: ignored, the invalid names with a warning.
		e.keyFile("Alice", pubKey(t, 6, "x")+"\n")
		e.keyFile("alice.pub", pubKey(t, 7, "x")+"\n")
		e.keyFile(".hidden", pubKey(t, 8, "x")+"\n")
		if err := os.Mkdir(filepath.Join(e.keyDir, "subdir"), 0o700); err != nil {
			t.Fatal(err)
		}
		golden(t, "list_users", e.run("list-users"))
	})
	t.Run("list_users_empty", func(t *testing.T) {
		e := newAdminEnv(t)
		golden(t, "list_users_empty", e.run("list-users"))
	})
	t.Run("list_users_missing_dir", func(t *testing.T) {
		e := newAdminEnv(t)
		if err := os.Remove(e.keyDir); err != nil {
			t.Fatal(err)
		}
		golden(t, "list_users_missing_dir", e.run("list-users"))
	})
	t.Run("list_users_not_a_dir", func(t *testing.T) {
		e := newAdminEnv(t)
		if err := os.Remove(e.keyDir); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(e.keyDir, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		golden(t, "list_users_not_a_dir", e.run("list-users"))
	})
}

// dbSnapshot is the whole desired state, for "nothing changed" checks.
func (e *adminEnv) dbSnapshot() []*desired.Session {
	e.t.Helper()
	m, err := e.store().Load(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return m
}

// seedUserSessions gives user a default and a project session, each with
// its Docker objects in the fake daemon (the project one with a service).
func (e *adminEnv) seedUserSessions(user string) []*desired.Session {
	e.t.Helper()
	def := session(user, "", desired.StatusRunning, time.Hour, 8*time.Hour)
	proj := session(user, "backend", desired.StatusGrace, 2*time.Hour, 8*time.Hour)
	proj.GraceExpiry = t0.Add(time.Minute)
	e.seed(def, proj)
	e.lease(def, true)
	id := e.store().InstanceID()
	e.docker.addSessionObjects(id, def)
	e.docker.addSessionObjects(id, proj, "postgres")
	return []*desired.Session{def, proj}
}

func TestRemoveUserGolden(t *testing.T) {
	t.Run("remove_user_invalid_names", func(t *testing.T) {
		e := newAdminEnv(t)
		// A file the traversal would reach must survive.
		victim := filepath.Join(e.root, "config.yaml")
		before, _ := os.ReadFile(victim)
		out := e.run("remove-user", "../config.yaml") + e.run("remove-user", "Alice") + e.run("remove-user", "")
		golden(t, "remove_user_invalid_names", out)
		after, err := os.ReadFile(victim)
		if err != nil || string(after) != string(before) {
			t.Errorf("config.yaml changed or removed: %v", err)
		}
	})
	t.Run("remove_user_unknown", func(t *testing.T) {
		e := newAdminEnv(t)
		e.seed(session("carol", "", desired.StatusRunning, time.Hour, 8*time.Hour))
		golden(t, "remove_user_unknown", e.run("remove-user", "bob")+e.run("remove-user", "bob", "--force", "--dry-run")+
			e.run("remove-user", "carol"))
	})
	t.Run("remove_user_no_sessions", func(t *testing.T) {
		e := newAdminEnv(t)
		e.keyFile("alice", pubKey(t, 1, "a")+"\n")
		e.keyFile("bob", pubKey(t, 2, "b")+"\n")
		out := e.run("remove-user", "alice", "--dry-run") + e.run("remove-user", "alice") + e.run("list-users")
		golden(t, "remove_user_no_sessions", out)
		if got := e.docker.mutations(); len(got) != 0 {
			t.Errorf("Docker calls that change state: %v", got)
		}
	})
	t.Run("remove_user_active_refused", func(t *testing.T) {
		e := newAdminEnv(t)
		e.keyFile("alice", pubKey(t, 1, "a")+"\n")
		e.seedUserSessions("alice")
		db, objs := e.dbSnapshot(), e.docker.names()
		golden(t, "remove_user_active_refused", e.run("remove-user", "alice")+e.run("remove-user", "alice", "--dry-run"))
		e.assertUnchanged(db, objs)
		if _, err := os.Stat(filepath.Join(e.keyDir, "alice")); err != nil {
			t.Errorf("key file: %v", err)
		}
	})
	t.Run("remove_user_force_dry_run", func(t *testing.T) {
		e := newAdminEnv(t)
		e.keyFile("alice", pubKey(t, 1, "a")+"\n")
		e.seedUserSessions("alice")
		db, objs := e.dbSnapshot(), e.docker.names()
		golden(t, "remove_user_force_dry_run", e.run("remove-user", "alice", "--force", "--dry-run")+
			e.run("remove-user", "alice", "--force", "--dry-run", "-o", "json"))
		e.assertUnchanged(db, objs)
		if _, err := os.Stat(filepath.Join(e.keyDir, "alice")); err != nil {
			t.Errorf("key file: %v", err)
		}
	})
	t.Run("remove_user_force", func(t *testing.T) {
		e := newAdminEnv(t)
		e.keyFile("alice", pubKey(t, 1, "a")+"\n")
		e.keyFile("bob", pubKey(t, 2, "b")+"\n")
		e.seedUserSessions("alice")
		bob := session("bob", "", desired.StatusRunning, time.Hour, 8*time.Hour)
		e.seed(bob)
		e.docker.addSessionObjects(e.store().InstanceID(), bob)
		if err := os.MkdirAll(filepath.Join(e.homesDir, "alice"), 0o700); err != nil {
			t.Fatal(err)
		}
		golden(t, "remove_user_force", e.run("remove-user", "alice", "--force")+e.run("list"))
		if diff := cmp.Diff([]string{"container podspawn-bob", "network podspawn-bob-net"}, e.docker.names()); diff != "" {
			t.Errorf("Docker objects left (-want +got):\n%s", diff)
		}
		if _, err := os.Stat(filepath.Join(e.keyDir, "alice")); !os.IsNotExist(err) {
			t.Errorf("key file of alice still there: %v", err)
		}
		if _, err := os.Stat(filepath.Join(e.homesDir, "alice")); err != nil {
			t.Errorf("persistent home must be kept: %v", err)
		}
	})
	t.Run("remove_user_purge_home", func(t *testing.T) {
		e := newAdminEnv(t)
		e.keyFile("alice", pubKey(t, 1, "a")+"\n")
		e.keyFile("bob", pubKey(t, 2, "b")+"\n")
		e.seedUserSessions("alice")
		// The home holds a file, a project home, and a link the user
		// planted to a directory outside it: sizes count the files only,
		// the purge removes the link and keeps what it points to.
		home := filepath.Join(e.homesDir, "alice")
		outside := t.TempDir()
		for _, f := range []struct {
			path string
			size int
		}{{filepath.Join(home, "notes.txt"), 4096}, {filepath.Join(home, "web", "data"), 8192}, {filepath.Join(outside, "big"), 1 << 20}} {
			if err := os.MkdirAll(filepath.Dir(f.path), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(f.path, make([]byte, f.size), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Symlink(outside, filepath.Join(home, "etc-link")); err != nil {
			t.Fatal(err)
		}
		out := e.run("list-users", "-o", "wide") + e.run("remove-user", "alice", "--purge-home") +
			e.run("remove-user", "alice", "--force", "--purge-home") + e.run("list-users", "-o", "wide")
		golden(t, "remove_user_purge_home", out)
		if _, err := os.Lstat(home); !os.IsNotExist(err) {
			t.Errorf("home still there: %v", err)
		}
		if _, err := os.Stat(filepath.Join(outside, "big")); err != nil {
			t.Errorf("the purge followed the link: %v", err)
		}
	})
	t.Run("remove_user_force_partial_failure", func(t *testing.T) {
		e := newAdminEnv(t)
		e.keyFile("alice", pubKey(t, 1, "a")+"\n")
		e.seedUserSessions("alice")
		e.docker.fail["network id-podspawn-alice-backend-net"] = "error while removing network: network podspawn-alice-backend-net id id-podspawn-alice-backend-net has active endpoints"
		golden(t, "remove_user_force_partial_failure", e.run("remove-user", "alice", "--force")+e.run("list"))
		// The failed session waits for cleanup, marked terminating.
		db := e.dbSnapshot()
		s := desired.State{Sessions: db}.Session(desired.SessionKey{User: "alice", Project: "backend"})
		if len(db) != 1 || s == nil || s.Status != desired.StatusTerminating || s.TerminateReason != "user-removed" {
			t.Errorf("want only alice@backend left, terminating for user-removed; got %v", db)
		}
		// Once Docker lets go, cleanup finishes the job.
		delete(e.docker.fail, "network id-podspawn-alice-backend-net")
		golden(t, "remove_user_force_partial_failure_cleanup", e.run("cleanup"))
		if len(e.dbSnapshot()) != 0 || len(e.docker.names()) != 0 {
			t.Errorf("after cleanup: rows %v, objects %v", e.dbSnapshot(), e.docker.names())
		}
	})
	t.Run("remove_user_docker_down", func(t *testing.T) {
		e := newAdminEnv(t)
		e.keyFile("alice", pubKey(t, 1, "a")+"\n")
		e.seedUserSessions("alice")
		db := e.dbSnapshot()
		t.Setenv("DOCKER_HOST", unreachableDocker)
		golden(t, "remove_user_docker_down", e.run("remove-user", "alice", "--force"))
		if diff := cmp.Diff(db, e.dbSnapshot()); diff != "" {
			t.Errorf("state changed (-before +after):\n%s", diff)
		}
		if _, err := os.Stat(filepath.Join(e.keyDir, "alice")); err != nil {
			t.Errorf("key file: %v", err)
		}
	})
	t.Run("remove_user_locked", func(t *testing.T) {
		e := newAdminEnv(t)
		e.keyFile("alice", pubKey(t, 1, "a")+"\n")
		l, err := lock.Acquire(context.Background(), e.lockDir, "alice")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Unlock()
		old := userLockTimeout
		userLockTimeout = 10 * time.Millisecond
		defer func() { userLockTimeout = old }()
		golden(t, "remove_user_locked", e.run("remove-user", "alice"))
		if _, err := os.Stat(filepath.Join(e.keyDir, "alice")); err != nil {
			t.Errorf("key file: %v", err)
		}
	})
}

// assertUnchanged fails if the database or the fake Docker changed.
func (e *adminEnv) assertUnchanged(db []*desired.Session, objs []string) {
	e.t.Helper()
	if diff := cmp.Diff(db, e.dbSnapshot()); diff != "" {
		e.t.Errorf("state database changed (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff(objs, e.docker.names()); diff != "" {
		e.t.Errorf("Docker objects changed (-before +after):\n%s", diff)
	}
	if got := e.docker.mutations(); len(got) != 0 {
		e.t.Errorf("Docker calls that change state: %v", got)
	}
}

// TestDirHomesFindsAnImageWithoutItsMountPoint: a capped home whose mount
// point is gone (removed by hand, a failed earlier purge) is still found
// through its image, so --purge-home deletes it.
func TestDirHomesFindsAnImageWithoutItsMountPoint(t *testing.T) {
	dir := t.TempDir()
	if _, ok, _ := (dirHomes{dir: dir}).Find(context.Background(), "alice"); ok {
		t.Fatal("found a home in an empty homes_dir")
	}
	if err := os.MkdirAll(filepath.Join(dir, ".images"), 0o700); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, ".images", "alice.ext4")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	got, ok, err := (dirHomes{dir: dir}).Find(context.Background(), "alice")
	if err != nil || !ok || got != (homeRef{What: "home image", Name: img}) {
		t.Fatalf("Find = %+v, %v, %v; want the image", got, ok, err)
	}
}
