package ssh

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/observed/k8sobs"
	"github.com/podspawn/podspawn/test/harness"
)

// TestKubernetesNamedVolume: a service's named volume is a
// PersistentVolumeClaim of the session, as Docker's named volume is a
// volume of the session: it keeps its files while the session lives and
// goes with it (stop, remove-project --force), so a new login after stop
// starts with an empty volume. An orphan claim of this instance is
// removed; another instance's and an unlabelled one are left alone.
func TestKubernetesNamedVolume(t *testing.T) {
	s, cs := k8sServer(t, serverOptions{Users: []string{"skv"}, Options: harness.Options{Cleanup: "  orphan_min_age: 1s\n"}})
	u := s.user("skv")
	inst := s.Env.InstanceID()
	project := fmt.Sprintf("skvol%d", os.Getpid())
	addK8sProject(t, s, project, "base: "+harness.Image+"\nshell: /bin/sh\nservices:\n"+
		"  - {name: db, image: "+harness.Image+", command: [sleep, infinity], volumes: ['data:/var/lib/db']}\n")
	key := desired.SessionKey{User: u.Name, Project: project}
	claimName := k8sobs.ClaimName(key, desired.ContainerName(key)+"-db-data")
	cfg, err := clientcmd.BuildConfigFromFlags("", k8sAdminKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	login := func() *corev1.PersistentVolumeClaim {
		t.Helper()
		if r := s.runSSH(u, []string{"-o", "SetEnv=PODSPAWN_PROJECT=" + project}, "", "true"); r.Code != 0 {
			t.Fatalf("login into %s: exit %d, stderr %q", project, r.Code, r.Stderr)
		}
		c, err := cs.CoreV1().PersistentVolumeClaims(k8sNamespace).Get(context.Background(), claimName, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("the session's claim: %v", err)
		}
		return c
	}
	first := login()
	if first.Labels[k8sobs.LabelInstance] != inst || first.Labels[k8sobs.LabelManagedBy] != "podspawn" ||
		first.Annotations[k8sobs.AnnotationName] != desired.ContainerName(key)+"-db-data" || first.Spec.StorageClassName == nil ||
		*first.Spec.StorageClassName != k8sStorageClass || first.Spec.Resources.Requests.Storage().Cmp(resource.MustParse("16Mi")) != 0 {
		t.Fatalf("claim %+v", first)
	}
	pod := k8sobs.ObjectName(key)
	if out, err := execOut(cs, cfg, pod, "service-0", "sh", "-c", "echo kept > /var/lib/db/f && cat /var/lib/db/f"); err != nil || out != "kept\n" {
		t.Fatalf("writing to the volume: %q, %v", out, err)
	}
	// A second login in the same session sees the same volume.
	if again := login(); again.UID != first.UID {
		t.Fatal("a login into the live session made a new claim")
	}

	s.Env.MustRun("stop", key.String())
	claimGone(t, cs, first)
	// A new session: a new, empty volume (Docker's named volume went with
	// the session too).
	second := login()
	if second.UID == first.UID {
		t.Fatal("the claim survived stop")
	}
	if out, _ := execOut(cs, cfg, pod, "service-0", "sh", "-c", "ls /var/lib/db; echo end"); out != "end\n" {
		t.Fatalf("the new session's volume is not empty: %q", out)
	}

	orphan := labelledClaim(t, cs, "skvorphan"+harness.Uniq(""), inst, true)
	foreign := labelledClaim(t, cs, "skvforeign"+harness.Uniq(""), "other-"+inst, true)
	plain := labelledClaim(t, cs, "skvplain"+harness.Uniq(""), inst, false)
	harness.Eventually(t, 20*time.Second, "cleanup to remove the orphan claim", func() bool {
		s.Env.MustRun("cleanup")
		_, err := cs.CoreV1().PersistentVolumeClaims(k8sNamespace).Get(context.Background(), orphan.Name, metav1.GetOptions{})
		return err != nil
	})
	for _, c := range []*corev1.PersistentVolumeClaim{foreign, plain} {
		if got, err := cs.CoreV1().PersistentVolumeClaims(k8sNamespace).Get(context.Background(), c.Name, metav1.GetOptions{}); err != nil || got.DeletionTimestamp != nil {
			t.Fatalf("claim %s was touched: %v", c.Name, err)
		}
	}

	s.Env.MustRun("remove-project", project, "--force")
	claimGone(t, cs, second)
}

// claimGone waits for c, and the volume bound to it, to be gone.
func claimGone(t *testing.T, cs kubernetes.Interface, c *corev1.PersistentVolumeClaim) {
	t.Helper()
	harness.Eventually(t, 30*time.Second, "claim "+c.Name+" and its volume to go", func() bool {
		got, err := cs.CoreV1().PersistentVolumeClaims(k8sNamespace).Get(context.Background(), c.Name, metav1.GetOptions{})
		if err == nil && got.UID == c.UID {
			return false
		}
		if c.Spec.VolumeName == "" {
			return true
		}
		_, err = cs.CoreV1().PersistentVolumes().Get(context.Background(), c.Spec.VolumeName, metav1.GetOptions{})
		return err != nil
	})
}

// labelledClaim creates a claim that looks like a session volume of user
// for instance, or an unlabelled one, and deletes it at the end.
func labelledClaim(t *testing.T, cs kubernetes.Interface, user, instance string, labelled bool) *corev1.PersistentVolumeClaim {
	t.Helper()
	key := desired.SessionKey{User: user}
	name := desired.ContainerName(key) + "-db-data"
	l := map[string]string{"managed-by": "podspawn", "podspawn.user": user, "podspawn.project": "", "podspawn.session": "s-orphan",
		"podspawn.instance": instance, "podspawn.role": "service", "podspawn.service": "db"}
	an, err := k8sobs.Annotations(key, name, l)
	if err != nil {
		t.Fatal(err)
	}
	labels := k8sobs.Labels(key, name, l)
	if !labelled {
		labels, an = map[string]string{"podspawn-test": instance}, nil
	}
	sc := k8sStorageClass
	c := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: k8sobs.ClaimName(key, name), Labels: labels, Annotations: an},
		Spec: corev1.PersistentVolumeClaimSpec{StorageClassName: &sc, AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Mi")}}}}
	created, err := cs.CoreV1().PersistentVolumeClaims(k8sNamespace).Create(context.Background(), c, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cs.CoreV1().PersistentVolumeClaims(k8sNamespace).Delete(context.Background(), created.Name, metav1.DeleteOptions{})
	})
	return created
}

// addK8sProject registers project from a repository holding podfile;
// its sessions, and its images on this host, go at the end of the test.
func addK8sProject(t *testing.T, s *server, project, podfile string) {
	t.Helper()
	repo := t.TempDir()
	if err := os.WriteFile(repo+"/podfile.yaml", []byte(podfile), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"init", "-q"}, {"add", "podfile.yaml"}, {"-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "podfile"}} {
		run(t, "git", append([]string{"-C", repo}, args...)...)
	}
	s.Env.MustRun("add-project", project, "--repo", repo)
	t.Cleanup(func() {
		s.Env.Run("remove-project", project, "--force")
		out, _ := exec.Command("docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", "podspawn/"+project).Output()
		for _, ref := range strings.Fields(string(out)) {
			exec.Command("docker", "image", "rm", ref).Run()
		}
	})
}
