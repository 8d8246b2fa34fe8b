package projects_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/projects"
	"github.com/podspawn/podspawn/test/harness"
)

func TestAddProject(t *testing.T) {
	e := newEnv(t, harness.Options{})
	repo := e.newRepo(map[string]string{"podfile.yaml": e.servicePodfile(defaultHooks)})
	tag := e.addProject("backend", repo)

	pf, err := projects.ParsePodfile([]byte(e.servicePodfile(defaultHooks)))
	if err != nil {
		t.Fatal(err)
	}
	if want := pf.Tag("backend"); tag != want {
		t.Fatalf("image tag = %s, want %s (sha256 of the Podfile)", tag, want)
	}
	info, err := e.dc.ImageInspect(context.Background(), tag)
	if err != nil {
		t.Fatalf("docker image inspect %s: %v", tag, err)
	}
	if got := info.Config.Labels["podspawn.project"]; got != "backend" {
		t.Errorf("image label podspawn.project = %q, want backend", got)
	}
	want := projects.Registry{"backend": {
		Repo: repo, LocalPath: filepath.Join(e.projectsDir(), "backend"), ImageTag: tag, PodfilePath: "podfile.yaml",
	}}
	if diff := cmp.Diff(want, e.registry()); diff != "" {
		t.Errorf("projects.yaml mismatch (-want +got):\n%s", diff)
	}
	if _, err := os.Stat(filepath.Join(e.projectsDir(), "backend", "podfile.yaml")); err != nil {
		t.Errorf("clone: %v", err)
	}

	t.Run("second add of the same name is refused", func(t *testing.T) {
		r := e.Run("add-project", "backend", "--repo", repo)
		if r.Code != 1 || !strings.Contains(r.Stderr, `project "backend" already registered; use update-project to rebuild it`) {
			t.Fatalf("exit %d, stderr %q; want 1 and the already-registered error", r.Code, r.Stderr)
		}
		if diff := cmp.Diff(want, e.registry()); diff != "" {
			t.Errorf("projects.yaml changed (-want +got):\n%s", diff)
		}
	})

	t.Run("a bad Podfile leaves nothing behind", func(t *testing.T) {
		bad := harness.Uniq("pjbad")
		badRepo := e.newRepo(map[string]string{".podspawn/podfile.yaml": "# " + e.nonce + "\nbase: " + harness.Image + "\nservices:\n  - name: db\n    volumes: [\"/etc:/data\"]\n"})
		r := e.Run("add-project", bad, "--repo", badRepo)
		if r.Code != 1 || !strings.Contains(r.Stderr, "field services[0].image") {
			t.Fatalf("exit %d, stderr %q; want 1 and an error naming services[0].image", r.Code, r.Stderr)
		}
		entries, err := os.ReadDir(e.projectsDir())
		if err != nil {
			t.Fatal(err)
		}
		var left []string
		for _, en := range entries {
			left = append(left, en.Name())
		}
		if diff := cmp.Diff([]string{"backend"}, left); diff != "" {
			t.Errorf("projects dir after the failed add (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(want, e.registry()); diff != "" {
			t.Errorf("projects.yaml changed (-want +got):\n%s", diff)
		}
		imgs, err := e.dc.ImageList(context.Background(), image.ListOptions{Filters: filters.NewArgs(filters.Arg("reference", "podspawn/"+bad))})
		if err != nil {
			t.Fatal(err)
		}
		if len(imgs) != 0 {
			t.Errorf("images of %s after the failed add: %+v", bad, imgs)
		}
	})

	t.Run("invalid name", func(t *testing.T) {
		r := e.Run("add-project", "../x", "--repo", repo)
		if r.Code != 1 || !strings.Contains(r.Stderr, `invalid project name "../x"`) {
			t.Fatalf("exit %d, stderr %q", r.Code, r.Stderr)
		}
	})
}

func TestUnregisteredProjectAndMissingImage(t *testing.T) {
	e := newEnv(t, harness.Options{})
	user := harness.Uniq("pjun")
	e.AddUser(user)

	r := e.spawn(user, "nope", "echo should-not-run")
	if r.Code != 255 || r.Stdout != "" || !strings.Contains(r.Stderr, `project "nope" is not registered on this server; ask an admin to run podspawn add-project`) {
		t.Fatalf("spawn to an unregistered project: exit %d, stdout %q, stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	if s := e.Row(desired.SessionKey{User: user, Project: "nope"}); s != nil {
		t.Errorf("row recorded for an unregistered project: %+v", s)
	}
	if objs := harness.ListObjects(e.t, e.dc, e.instance, "podspawn.user="+user); len(objs) != 0 {
		t.Errorf("objects created for an unregistered project: %v", harness.ObjectNames(objs))
	}

	tag := e.addProject("backend", e.newRepo(map[string]string{"podfile.yaml": e.servicePodfile("")}))
	if _, err := e.dc.ImageRemove(context.Background(), tag, image.RemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	r = e.spawn(user, "backend", "echo should-not-run")
	if r.Code != 255 || r.Stdout != "" || !strings.Contains(r.Stderr, "image "+tag+" not built; run: podspawn update-project backend") {
		t.Fatalf("spawn with the image missing: exit %d, stdout %q, stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	if objs := harness.ListObjects(e.t, e.dc, e.instance, "podspawn.user="+user); len(objs) != 0 {
		t.Errorf("objects created although the image is missing: %v", harness.ObjectNames(objs))
	}

	out := e.MustRun("update-project", "backend").Stdout
	if want := "project backend: podfile unchanged, image " + tag + " was missing and has been rebuilt\n"; out != want {
		t.Errorf("update-project stdout = %q, want %q", out, want)
	}
	if got := e.mustSpawn(user, "backend", "echo $GREETING").Stdout; got != "hello "+user+" from backend\n" {
		t.Errorf("stdout = %q", got)
	}
}

func TestUpdateProject(t *testing.T) {
	e := newEnv(t, harness.Options{})
	alice, bob := harness.Uniq("pja"), harness.Uniq("pjb")
	e.AddUser(alice)
	e.AddUser(bob)
	repo := e.newRepo(map[string]string{"podfile.yaml": e.servicePodfile("")})
	oldTag := e.addProject("backend", repo)
	aliceKey := desired.SessionKey{User: alice, Project: "backend"}
	e.mustSpawn(alice, "backend", "true")
	if got := e.containerImage(desired.ContainerName(aliceKey)); got != oldTag {
		t.Fatalf("session image = %s, want %s", got, oldTag)
	}

	r := e.MustRun("update-project", "backend")
	if want := "project backend: podfile unchanged, skipping rebuild\n"; r.Stdout != want {
		t.Errorf("unchanged update stdout = %q, want %q", r.Stdout, want)
	}

	e.commit(repo, map[string]string{"podfile.yaml": e.servicePodfile("env:\n  EXTRA: v2\n")})
	// That Podfile repeats the env key: the update fails and changes nothing.
	r = e.Run("update-project", "backend")
	if r.Code != 1 || !strings.Contains(r.Stderr, `mapping key "env" already defined`) || !strings.Contains(r.Stderr, "project backend is unchanged") {
		t.Fatalf("update with a broken Podfile: exit %d, stderr %q", r.Code, r.Stderr)
	}
	if got := e.registry()["backend"].ImageTag; got != oldTag {
		t.Errorf("registry image after a failed update = %s, want %s", got, oldTag)
	}
	clone := filepath.Join(e.projectsDir(), "backend")
	if got, want := gitRun(t, clone, "rev-parse", "HEAD"), gitRun(t, repo, "rev-parse", "HEAD~1"); got != want {
		t.Errorf("clone HEAD after a failed update = %s, want the previous commit %s", got, want)
	}

	changed := strings.Replace(e.servicePodfile(""), "env:\n", "env:\n  EXTRA: v2\n", 1)
	e.commit(repo, map[string]string{"podfile.yaml": changed})
	r = e.MustRun("update-project", "backend")
	newTag := e.registry()["backend"].ImageTag
	e.trackImage(newTag)
	if newTag == oldTag {
		t.Fatalf("image tag unchanged after a Podfile change: %s", newTag)
	}
	if want := "project backend rebuilt, image: " + newTag + "\n"; r.Stdout != want {
		t.Errorf("update stdout = %q, want %q", r.Stdout, want)
	}
	if !e.imageExists(newTag) {
		t.Errorf("image %s was not built", newTag)
	}

	// The running session keeps its image and env; a new one gets the new ones.
	if got := e.mustSpawn(alice, "backend", "echo extra=$EXTRA").Stdout; got != "extra=\n" {
		t.Errorf("running session after the update: %q, want the old env", got)
	}
	if got := e.containerImage(desired.ContainerName(aliceKey)); got != oldTag {
		t.Errorf("running session image after the update = %s, want %s", got, oldTag)
	}
	if got := e.mustSpawn(bob, "backend", "echo extra=$EXTRA").Stdout; got != "extra=v2\n" {
		t.Errorf("new session after the update: %q", got)
	}
	if got := e.containerImage(desired.ContainerName(desired.SessionKey{User: bob, Project: "backend"})); got != newTag {
		t.Errorf("new session image = %s, want %s", got, newTag)
	}
	e.MustRun("stop", aliceKey.String())
	e.mustSpawn(alice, "backend", "true")
	if got := e.containerImage(desired.ContainerName(aliceKey)); got != newTag {
		t.Errorf("recreated session image = %s, want %s", got, newTag)
	}

	if r := e.Run("update-project", "nope"); r.Code != 1 || !strings.Contains(r.Stderr, `project "nope" is not registered; use add-project first`) {
		t.Errorf("update of an unknown project: exit %d, stderr %q", r.Code, r.Stderr)
	}
}

func TestRemoveProject(t *testing.T) {
	e := newEnv(t, harness.Options{})
	user := harness.Uniq("pjr")
	e.AddUser(user)
	tag := e.addProject("backend", e.newRepo(map[string]string{"podfile.yaml": e.servicePodfile("")}))
	key := desired.SessionKey{User: user, Project: "backend"}
	e.mustSpawn(user, "backend", "true")
	clone := filepath.Join(e.projectsDir(), "backend")

	r := e.Run("remove-project", "backend")
	if r.Code != 1 || !strings.Contains(r.Stderr, "project backend has 1 live session(s); stop them first or use --force to destroy them") {
		t.Fatalf("remove-project with a live session: exit %d, stderr %q", r.Code, r.Stderr)
	}
	if _, ok := e.registry()["backend"]; !ok {
		t.Error("registry entry removed although the command was refused")
	}
	if diff := cmp.Diff(sessionObjectNames(key), harness.ObjectNames(e.keyObjects(key))); diff != "" {
		t.Errorf("session objects after the refusal (-want +got):\n%s", diff)
	}

	r = e.MustRun("remove-project", "backend", "--force", "--dry-run")
	if want := "would deregister project backend and remove " + clone + "\nwould destroy 1 session(s): " + key.String() + "\n"; r.Stdout != want {
		t.Errorf("dry run stdout = %q, want %q", r.Stdout, want)
	}

	r = e.MustRun("remove-project", "backend", "--force")
	want := "Destroyed session: " + key.String() + " (container " + desired.ContainerName(key) + ")\n" +
		"removed project backend\n" +
		"note: image " + tag + " still exists; run 'docker rmi ...' to remove it\n"
	if r.Stdout != want {
		t.Errorf("stdout = %q, want %q", r.Stdout, want)
	}
	if objs := e.keyObjects(key); len(objs) != 0 {
		t.Errorf("objects left after remove-project --force: %v", harness.ObjectNames(objs))
	}
	if s := e.Row(key); s != nil {
		t.Errorf("row left: %+v", s)
	}
	if _, ok := e.registry()["backend"]; ok {
		t.Error("registry entry left")
	}
	if _, err := os.Stat(clone); !os.IsNotExist(err) {
		t.Errorf("clone %s: %v, want it removed", clone, err)
	}
	if !e.imageExists(tag) {
		t.Errorf("image %s was removed; remove-project keeps it", tag)
	}
	r = e.spawn(user, "backend", "true")
	if r.Code != 255 || !strings.Contains(r.Stderr, `project "backend" is not registered on this server`) {
		t.Errorf("spawn after removal: exit %d, stderr %q", r.Code, r.Stderr)
	}
}

// TestAddProjectStaysInTheClone: a repository whose podfile.yaml is a
// link to a root-only file outside the clone must not get that file read
// (nor its lines printed), and what a Podfile says reaches the terminal
// quoted, escape sequences included.
func TestAddProjectStaysInTheClone(t *testing.T) {
	e := newEnv(t, harness.Options{})
	shadow := filepath.Join(e.Root, "shadow")
	if err := os.WriteFile(shadow, []byte("secret_key: hunter2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	repo := e.newRepo(map[string]string{"README": "a project\n"})
	if err := os.Symlink(shadow, filepath.Join(repo, "podfile.yaml")); err != nil {
		t.Fatal(err)
	}
	gitRun(t, repo, "add", "-A")
	gitRun(t, repo, "commit", "--quiet", "-m", "podfile as a link")

	name := harness.Uniq("pjlink")
	r := e.Run("add-project", name, "--repo", repo)
	want := `podfile "podfile.yaml" in the clone ` // the clone's temporary path follows
	if r.Code != 1 || !strings.Contains(r.Stderr, want) ||
		!strings.Contains(r.Stderr, `resolves outside the clone (a symbolic link to "`+shadow+`"); podspawn reads nothing from outside a project's clone: make it a plain file in the repository`) {
		t.Fatalf("exit %d, stderr %q; want 1 and the refusal", r.Code, r.Stderr)
	}
	if strings.Contains(r.Stdout+r.Stderr, "secret_key") || strings.Contains(r.Stdout+r.Stderr, "hunter2") {
		t.Errorf("the linked file's content reached the output: %q", r.Stderr)
	}
	if _, ok := e.registry()[name]; ok {
		t.Errorf("project %s registered", name)
	}
	if entries, _ := os.ReadDir(e.projectsDir()); len(entries) != 0 {
		t.Errorf("left in the projects dir: %v", entries)
	}

	// An escape sequence in the Podfile (here in an unknown key) is shown
	// escaped.
	repo = e.newRepo(map[string]string{"podfile.yaml": "base: " + harness.Image + "\n\"\\e]0;owned\\a\\e[2J\": 1\n"})
	r = e.Run("add-project", name, "--repo", repo)
	if r.Code != 1 || !strings.Contains(r.Stderr, `field \x1b]0;owned\a\x1b[2J not found`) {
		t.Fatalf("exit %d, stderr %q; want 1 and the key escaped", r.Code, r.Stderr)
	}
	if strings.ContainsAny(r.Stdout+r.Stderr, "\x1b\a") {
		t.Errorf("raw control characters in the output: %q", r.Stderr)
	}
}
