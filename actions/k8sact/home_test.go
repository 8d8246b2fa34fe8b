package k8sact

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/podspawn/podspawn/observed/k8sobs/kubeapi/fromclientset"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/spec"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/observed/k8sobs"
	"github.com/podspawn/podspawn/reconcile"
)

// A user's home is one claim: made once with the home size and storage
// class, labelled as podspawn's home of that user on this instance, left
// out of the session selector, refused when another instance owns the
// name, and purged only by Purge.
func TestHomeClaim(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset()
	c := &k8sobs.Client{API: fromclientset.API(cs), Namespace: "podspawn"}
	h := Homes{C: c, Instance: "i1"}
	size := resource.MustParse("2Gi")
	for range 2 {
		if err := h.Ensure(ctx, "al_ice", size, "fast"); err != nil {
			t.Fatal(err)
		}
	}
	name := k8sobs.HomeClaimName("al_ice")
	pvc, err := cs.CoreV1().PersistentVolumeClaims("podspawn").Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(name, "ps-home-al-ice-") || *pvc.Spec.StorageClassName != "fast" || pvc.Spec.Resources.Requests.Storage().String() != "2Gi" ||
		pvc.Labels[k8sobs.LabelInstance] != "i1" || pvc.Labels[k8sobs.LabelManagedBy] != "podspawn" || pvc.Annotations[k8sobs.AnnotationUser] != "al_ice" ||
		len(pvc.OwnerReferences) != 0 {
		t.Fatalf("claim %+v", pvc)
	}
	sel, err := labels.Parse(k8sobs.Selector)
	if err != nil || sel.Matches(labels.Set(pvc.Labels)) {
		t.Fatalf("the session selector %q matches the home claim (%v)", k8sobs.Selector, err)
	}
	// The lister (every pass) does not see it.
	objs, err := k8sobs.Lister{C: c}.List(ctx)
	if err != nil || len(objs) != 0 {
		t.Fatalf("a pass observes %+v, %v", objs, err)
	}
	if got, err := h.Get(ctx, "al_ice"); err != nil || got == nil || got.Name != name || got.Requested.String() != "2Gi" || !got.Capacity.IsZero() {
		t.Fatalf("get: %+v, %v", got, err)
	}
	if got, err := h.Get(ctx, "bob"); err != nil || got != nil {
		t.Fatalf("no home: %+v, %v", got, err)
	}
	other := Homes{C: c, Instance: "i2"}
	if err := other.Ensure(ctx, "al_ice", size, ""); !errors.Is(err, actions.ErrTerminal) {
		t.Fatalf("another instance's home: %v, want ErrTerminal", err)
	}
	if _, err := other.Purge(ctx, "al_ice"); !errors.Is(err, actions.ErrTerminal) {
		t.Fatalf("purging another instance's home: %v", err)
	}
	if ok, err := h.Purge(ctx, "al_ice"); err != nil || !ok {
		t.Fatalf("purge: %v, %v", ok, err)
	}
	if _, err := cs.CoreV1().PersistentVolumeClaims("podspawn").Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("claim still there: %v", err)
	}
	if ok, err := h.Purge(ctx, "al_ice"); err != nil || ok {
		t.Fatalf("second purge: %v, %v", ok, err)
	}
}

// A persistent session's Pod mounts the user's claim at the home: its
// root for a default session, the project's directory for a project
// session; the host path of the row is not used.
func TestPodMountsHome(t *testing.T) {
	x := &Executor{C: &k8sobs.Client{Namespace: "podspawn"}}
	for _, k := range []desired.SessionKey{{User: "cy"}, {User: "cy", Project: "web"}} {
		a := action(reconcile.KindCreateContainer, k, desired.ContainerName(k), observed.RoleSession, "i1")
		a.Container = &spec.Container{Role: observed.RoleSession, Image: "img", User: "cy",
			Mounts: []desired.Mount{{Source: "/var/lib/podspawn/homes/cy", Target: "/home/cy", Prepare: desired.PrepareHome}}}
		p, err := x.podFor(a, nil)
		if err != nil {
			t.Fatal(err)
		}
		var vol *corev1.Volume
		for i := range p.Spec.Volumes {
			if p.Spec.Volumes[i].Name == "home" {
				vol = &p.Spec.Volumes[i]
			}
		}
		if vol == nil || vol.PersistentVolumeClaim == nil || vol.PersistentVolumeClaim.ClaimName != k8sobs.HomeClaimName("cy") || vol.HostPath != nil {
			t.Fatalf("%s: volumes %+v", k, p.Spec.Volumes)
		}
		m := p.Spec.Containers[0].VolumeMounts
		if len(m) != 1 || m[0].Name != "home" || m[0].MountPath != "/home/cy" || m[0].SubPath != k.Project {
			t.Fatalf("%s: mounts %+v", k, m)
		}
		if len(a.Container.Mounts) != 1 {
			t.Fatalf("the action's spec was changed: %+v", a.Container.Mounts)
		}
	}
}
