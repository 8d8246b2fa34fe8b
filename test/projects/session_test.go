package projects_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/test/harness"
)

func TestProjectSession(t *testing.T) {
	e := newEnv(t, harness.Options{})
	user := harness.Uniq("pjalice")
	e.AddUser(user)
	tag := e.addProject("backend", e.newRepo(map[string]string{"podfile.yaml": e.servicePodfile(defaultHooks)}))
	key := desired.SessionKey{User: user, Project: "backend"}

	r := e.mustSpawn(user, "backend", askDB+"; echo \"$GREETING|$PODSPAWN_USER|$PODSPAWN_PROJECT|$(hostname)\"")
	if want := "pong " + user + "\nhello " + user + " from backend|" + user + "|backend|backend\n"; r.Stdout != want {
		t.Errorf("stdout = %q, want %q (stderr %q)", r.Stdout, want, r.Stderr)
	}
	if r.Stderr != "" {
		t.Errorf("stderr = %q, want nothing (hooks succeeded)", r.Stderr)
	}
	r = e.mustSpawn(user, "backend", "cat hooks.log")
	want := "created " + user + " /home/" + user + " hello " + user + " from backend\nstarted\nstarted\n"
	if r.Stdout != want {
		t.Errorf("hooks.log after two connections = %q, want %q", r.Stdout, want)
	}

	sess := e.Row(key)
	if sess == nil {
		t.Fatal("no session row")
	}
	if sess.Spec.Image != tag || sess.Mode != desired.ModeGracePeriod {
		t.Errorf("row image %s mode %s, want %s grace-period", sess.Spec.Image, sess.Mode, tag)
	}
	if got := e.containerImage(desired.ContainerName(key)); got != tag {
		t.Errorf("session container image = %s, want %s", got, tag)
	}
	// Every object of the session carries its user, project and generation.
	objs := harness.ListObjects(e.t, e.dc, e.instance, "podspawn.session="+sess.ID)
	if diff := cmp.Diff(sessionObjectNames(key), harness.ObjectNames(objs)); diff != "" {
		t.Errorf("objects of session %s (-want +got):\n%s", sess.ID, diff)
	}
	for _, o := range objs {
		for k, v := range map[string]string{"managed-by": "podspawn", "podspawn.user": user, "podspawn.project": "backend", "podspawn.session": sess.ID, "podspawn.instance": e.instance} {
			if o.Labels[k] != v {
				t.Errorf("%s %s: label %s = %q, want %q", o.Kind, o.Name, k, o.Labels[k], v)
			}
		}
	}

	out := e.MustRun("list").Stdout
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "USER") || strings.Fields(lines[0])[1] != "PROJECT" {
		t.Fatalf("list output:\n%s", out)
	}
	if f := strings.Fields(lines[1]); f[0] != user || f[1] != "backend" || f[2] != desired.ContainerName(key) {
		t.Errorf("list row = %q, want user %s, project backend, container %s", lines[1], user, desired.ContainerName(key))
	}
}

func TestProjectModePrecedence(t *testing.T) {
	e := newEnv(t, harness.Options{})
	user := harness.Uniq("pjmode")
	e.AddUser(user)
	e.addProject("backend", e.newRepo(map[string]string{"podfile.yaml": e.servicePodfile("mode: destroy-on-disconnect\n")}))
	key := desired.SessionKey{User: user, Project: "backend"}

	// The Podfile's mode wins over session.mode: the session is gone
	// with the connection.
	e.mustSpawn(user, "backend", "true")
	// The teardown finishes after spawn returned, in the process it left.
	harness.Eventually(t, time.Minute, "the destroy-on-disconnect session's row and objects to go", func() bool {
		return e.Row(key) == nil && len(e.keyObjects(key)) == 0
	})

	// The registry's mode wins over the Podfile's.
	reg := e.registry()
	p := reg["backend"]
	p.Mode = desired.ModePersistent
	reg["backend"] = p
	if err := reg.Save(e.registryPath()); err != nil {
		t.Fatal(err)
	}
	e.mustSpawn(user, "backend", "true")
	s := e.Row(key)
	if s == nil || s.Mode != desired.ModePersistent || s.Status != desired.StatusRunning {
		t.Fatalf("row after disconnect = %+v, want a persistent running session", s)
	}
}

func TestTwoUsersOfAProjectAreIsolated(t *testing.T) {
	e := newEnv(t, harness.Options{})
	alice, bob := harness.Uniq("pjalice"), harness.Uniq("pjbob")
	e.AddUser(alice)
	e.AddUser(bob)
	e.addProject("backend", e.newRepo(map[string]string{"podfile.yaml": e.servicePodfile("")}))
	aliceKey := desired.SessionKey{User: alice, Project: "backend"}
	bobKey := desired.SessionKey{User: bob, Project: "backend"}

	for _, u := range []string{alice, bob} {
		if got := e.mustSpawn(u, "backend", askDB).Stdout; got != "pong "+u+"\n" {
			t.Errorf("%s's db answered %q, want its own", u, got)
		}
	}
	for _, k := range []desired.SessionKey{aliceKey, bobKey} {
		if diff := cmp.Diff(sessionObjectNames(k), harness.ObjectNames(e.keyObjects(k))); diff != "" {
			t.Errorf("objects of %s (-want +got):\n%s", k, diff)
		}
	}

	info, err := e.dc.ContainerInspect(context.Background(), desired.ContainerName(bobKey)+"-db")
	if err != nil {
		t.Fatal(err)
	}
	bobDBIP := info.NetworkSettings.Networks[desired.NetworkName(bobKey)].IPAddress
	if bobDBIP == "" {
		t.Fatalf("bob's db has no address on %s", desired.NetworkName(bobKey))
	}
	probe := fmt.Sprintf(`nc -w 2 %s 5432 </dev/null && echo reached-ip; nc -w 2 %s 5432 </dev/null && echo reached-name; nslookup %s >/dev/null 2>&1 && echo resolved; true`,
		bobDBIP, desired.ContainerName(bobKey)+"-db", desired.ContainerName(bobKey)+"-db")
	if got := e.mustSpawn(alice, "backend", probe).Stdout; got != "" {
		t.Errorf("from %s's session, %s's db: %q; want neither resolvable nor reachable", alice, bob, got)
	}
}

func TestTeardownRemovesServicesAndVolumes(t *testing.T) {
	e := newEnv(t, harness.Options{Cleanup: "  orphan_min_age: 0s\n"})
	e.addProject("backend", e.newRepo(map[string]string{"podfile.yaml": e.servicePodfile("")}))
	start := func(prefix string) desired.SessionKey {
		t.Helper()
		u := harness.Uniq(prefix)
		e.AddUser(u)
		k := desired.SessionKey{User: u, Project: "backend"}
		e.mustSpawn(u, "backend", "true")
		if diff := cmp.Diff(sessionObjectNames(k), harness.ObjectNames(e.keyObjects(k))); diff != "" {
			t.Fatalf("objects of %s (-want +got):\n%s", k, diff)
		}
		return k
	}
	gone := func(k desired.SessionKey, how string) {
		t.Helper()
		if objs := e.keyObjects(k); len(objs) != 0 {
			t.Errorf("after %s, objects of %s remain: %v", how, k, harness.ObjectNames(objs))
		}
		if s := e.Row(k); s != nil {
			t.Errorf("after %s, row of %s remains: %+v", how, k, s)
		}
	}

	graceKey := start("pjgrace")
	if s := e.Row(graceKey); s == nil || s.Status != desired.StatusGrace {
		t.Fatalf("row after disconnect = %+v, want grace_period", s)
	}
	e.ExecSQL(`UPDATE sessions SET grace_expiry = ? WHERE user = ? AND project = ?`, time.Now().Add(-time.Minute).UnixNano(), graceKey.User, graceKey.Project)
	e.cleanup()
	gone(graceKey, "grace expiry and cleanup")

	stopKey := start("pjstop")
	r := e.MustRun("stop", stopKey.String())
	if want := "Destroyed session: " + stopKey.String() + " (container " + desired.ContainerName(stopKey) + ")\n"; r.Stdout != want {
		t.Errorf("stop stdout = %q, want %q", r.Stdout, want)
	}
	gone(stopKey, "stop")

	orphanKey := start("pjorphan")
	e.ExecSQL(`DELETE FROM sessions WHERE user = ? AND project = ?`, orphanKey.User, orphanKey.Project)
	e.cleanup()
	gone(orphanKey, "deleting the row and cleanup")
}
