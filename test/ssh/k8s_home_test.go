package ssh

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/observed/k8sobs"
	"github.com/podspawn/podspawn/test/harness"
)

// TestKubernetesPersistentHome: in persistent mode the home is the user's
// claim, the container user's with mode 0700; a file written there
// survives stop and a new login in a new Pod; a project session's home is
// the project's directory of it, and a link in its place is refused;
// cleanup passes leave the claim alone; remove-user --force keeps it (and says so), --purge-home
// deletes it.
func TestKubernetesPersistentHome(t *testing.T) {
	s, cs := k8sServer(t, serverOptions{Users: []string{"skh", "ski"},
		Options: harness.Options{Session: "  grace_period: 60s\n  max_lifetime: 8h\n  mode: persistent\n"}})
	a, b := s.user("skh"), s.user("ski")
	ctx := context.Background()
	claims := cs.CoreV1().PersistentVolumeClaims(k8sNamespace)
	podUID := func(u *testUser) string {
		t.Helper()
		p, err := cs.CoreV1().Pods(k8sNamespace).Get(ctx, k8sobs.ObjectName(desired.SessionKey{User: u.Name}), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return string(p.UID)
	}

	out := s.mustSSH(a, `echo kept > ~/keep.txt && ls -ldn ~ | cut -c1-10 && stat -c %u ~ && id -u`)
	if f := strings.Fields(out); len(f) != 3 || f[0] != "drwx------" || f[1] != f[2] {
		t.Fatalf("home: %q, want mode drwx------ and owned by the user", out)
	}
	name := k8sobs.HomeClaimName(a.Name)
	c, err := claims.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the home claim: %v", err)
	}
	if c.Labels[k8sobs.LabelInstance] != s.Env.InstanceID() || c.Annotations[k8sobs.AnnotationUser] != a.Name || len(c.OwnerReferences) != 0 ||
		*c.Spec.StorageClassName != k8sStorageClass || c.Spec.Resources.Requests.Storage().Cmp(resource.MustParse("16Mi")) != 0 {
		t.Fatalf("claim %+v", c)
	}
	first := podUID(a)

	s.Env.MustRun("stop", a.Name)
	if out := s.mustSSH(a, "cat ~/keep.txt"); out != "kept\n" {
		t.Fatalf("after stop and a new login: %q, want kept", out)
	}
	if podUID(a) == first {
		t.Fatal("the login after stop did not get a new Pod")
	}
	s.Env.MustRun("cleanup")
	if again, err := claims.Get(ctx, name, metav1.GetOptions{}); err != nil || again.UID != c.UID {
		t.Fatalf("after a cleanup pass: %v", err)
	}
	r := s.Env.MustRun("list-users", "-o", "wide")
	if !strings.Contains(r.Stdout, a.Name+"  (1 key)  home: n/a of 16.0 MiB (persistentvolumeclaim/"+name+")") ||
		!strings.Contains(r.Stdout, b.Name+"  (1 key)  home: no home") {
		t.Fatalf("list-users -o wide:\n%s", r.Stdout)
	}

	// A project home is the project's directory of the same claim, as
	// <homes_dir>/<user>/<project> is on Docker: the user's, and seen in
	// the default home.
	project := fmt.Sprintf("skhome%d", os.Getpid())
	addK8sProject(t, s, project, "base: "+harness.Image+"\nshell: /bin/sh\n")
	pr := s.runSSH(a, []string{"-o", "SetEnv=PODSPAWN_PROJECT=" + project}, "", `echo from-project > ~/p.txt && pwd && stat -c %u:%a ~`)
	if uid := strings.Fields(out)[2]; pr.Code != 0 || pr.Stdout != "/home/"+a.Name+"\n"+uid+":700\n" {
		t.Fatalf("project session: exit %d, stdout %q, stderr %q", pr.Code, pr.Stdout, pr.Stderr)
	}
	if got := s.mustSSH(a, "cat ~/"+project+"/p.txt"); got != "from-project\n" {
		t.Fatalf("the project home seen from the default session: %q", got)
	}
	// The user swaps the project's directory for a link to the node's
	// /etc: the kubelet refuses it, and /etc is untouched.
	etcBefore := statOf(t, "/etc")
	s.Env.MustRun("stop", desired.SessionKey{User: a.Name, Project: project}.String())
	s.mustSSH(a, "rm -r ~/"+project+" && ln -s /etc ~/"+project)
	if pr := s.runSSH(a, []string{"-o", "SetEnv=PODSPAWN_PROJECT=" + project}, "", "true"); pr.Code == 0 {
		t.Fatal("a project session started on a home that is a link")
	}
	if log, _ := os.ReadFile(s.LogPath); !strings.Contains(string(log), "CreateContainerConfigError") {
		t.Fatalf("spawn log does not say why the Pod cannot start:\n%s", log)
	}
	if got := statOf(t, "/etc"); got.Uid != etcBefore.Uid || got.Mode != etcBefore.Mode {
		t.Fatalf("/etc changed: uid %d mode %o", got.Uid, got.Mode)
	}

	r = s.Env.MustRun("remove-user", a.Name, "--force")
	if !strings.Contains(r.Stderr, "the persistent home persistentvolumeclaim/"+name+" was kept") {
		t.Fatalf("remove-user --force: stdout %q stderr %q", r.Stdout, r.Stderr)
	}
	if again, err := claims.Get(ctx, name, metav1.GetOptions{}); err != nil || again.UID != c.UID || again.DeletionTimestamp != nil {
		t.Fatalf("the home after remove-user without --purge-home: %v", err)
	}

	s.mustSSH(b, "true")
	r = s.Env.MustRun("remove-user", b.Name, "--force", "--purge-home")
	if !strings.Contains(r.Stdout, "deleted persistent home persistentvolumeclaim/"+k8sobs.HomeClaimName(b.Name)) {
		t.Fatalf("remove-user --purge-home: %s", r.Stdout)
	}
	if _, err := claims.Get(ctx, k8sobs.HomeClaimName(b.Name), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the purged home claim: %v", err)
	}
}
