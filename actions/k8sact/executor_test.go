package k8sact

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/podspawn/podspawn/observed/k8sobs/kubeapi/fromclientset"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/spec"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/observed/k8sobs"
	"github.com/podspawn/podspawn/reconcile"
)

func action(kind reconcile.Kind, k desired.SessionKey, target, role, instance string) reconcile.Action {
	return reconcile.Action{Kind: kind, Key: k, Target: target, SessionID: "s1", Labels: map[string]string{
		observed.LabelManagedBy: observed.ManagedByValue, observed.LabelUser: k.User, observed.LabelProject: k.Project,
		observed.LabelSession: "s1", observed.LabelInstance: instance, observed.LabelRole: role}}
}

func TestPolicyCreateIsIdempotentAndRefusesForeign(t *testing.T) {
	k := desired.SessionKey{User: "al_ice"}
	cs := fake.NewClientset()
	x := &Executor{C: &k8sobs.Client{API: fromclientset.API(cs), Namespace: "podspawn"}, Now: time.Now}
	a := action(reconcile.KindCreateNetwork, k, "podspawn-al_ice-net", observed.RoleSession, "i1")
	for want := range []actions.Outcome{actions.Changed, actions.Unchanged} {
		o, err := x.Execute(context.Background(), a)
		if err != nil || o != []actions.Outcome{actions.Changed, actions.Unchanged}[want] {
			t.Fatalf("create %d: %v, %v", want, o, err)
		}
	}
	np, err := cs.NetworkingV1().NetworkPolicies("podspawn").Get(context.Background(), k8sobs.ObjectName(k), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sel := np.Spec.PodSelector.MatchLabels; sel[k8sobs.LabelKey] != k8sobs.KeyHash(k) || len(np.Spec.Ingress) != 1 {
		t.Fatalf("policy %+v", np.Spec)
	}
	other := action(reconcile.KindCreateNetwork, k, "podspawn-al_ice-net", observed.RoleSession, "i2")
	if _, err := x.Execute(context.Background(), other); !errors.Is(err, actions.ErrTerminal) {
		t.Fatalf("another instance's policy: err %v, want ErrTerminal", err)
	}
}

func TestRemoveIsPinnedByUID(t *testing.T) {
	k := desired.SessionKey{User: "bob"}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: k8sobs.ObjectName(k), Namespace: "podspawn", UID: "new"}}
	cs := fake.NewClientset(pod)
	x := &Executor{C: &k8sobs.Client{API: fromclientset.API(cs), Namespace: "podspawn"}, Now: time.Now}
	a := action(reconcile.KindRemoveContainer, k, "podspawn-bob", observed.RoleSession, "i1")
	a.TargetID = k8sobs.ObjectID(pod.Name, "session", "old")
	// The fake client ignores preconditions, so only the parsing and the
	// not-found path are checked here; the e2e tests delete for real.
	a.TargetID = "not-an-id"
	if _, err := x.Execute(context.Background(), a); !errors.Is(err, actions.ErrTerminal) {
		t.Fatalf("bad target id: %v", err)
	}
	a.TargetID = k8sobs.ObjectID(pod.Name, "session", "new")
	if o, err := x.Execute(context.Background(), a); err != nil || o != actions.Changed {
		t.Fatalf("remove: %v, %v", o, err)
	}
	if _, err := cs.CoreV1().Pods("podspawn").Get(context.Background(), pod.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("pod still there: %v", err)
	}
	if o, err := x.Execute(context.Background(), a); err != nil || o != actions.Unchanged {
		t.Fatalf("second remove: %v, %v", o, err)
	}
}

func TestPodSpecSecurity(t *testing.T) {
	k := desired.SessionKey{User: "al_ice", Project: "web"}
	x := &Executor{C: &k8sobs.Client{Namespace: "podspawn"}, Settings: Settings{NodeSelector: map[string]string{"pool": "s"}, RuntimeClass: "gvisor",
		ImagePullSecrets: []string{"regcred", "ghcr"}}}
	svc := action(reconcile.KindCreateContainer, k, "podspawn-al_ice-web-db", observed.RoleService, "i1")
	svc.Container = &spec.Container{Role: observed.RoleService, Image: "db", Aliases: []string{"db"}}
	a := action(reconcile.KindCreateContainer, k, "podspawn-al_ice-web", observed.RoleSession, "i1")
	a.Container = &spec.Container{Role: observed.RoleSession, Image: "img", Cmd: []string{"sleep", "infinity"}, Hostname: "al_ice",
		CPUs: 1.5, MemoryBytes: 256 << 20, Security: desired.Security{CapDrop: []string{"ALL"}, CapAdd: []string{"CHOWN", "CAP_SETUID"}}}
	p, err := x.podFor(a, []reconcile.Action{svc})
	if err != nil {
		t.Fatal(err)
	}
	s := p.Spec
	if *s.AutomountServiceAccountToken || *s.TerminationGracePeriodSeconds != 1 || *s.RuntimeClassName != "gvisor" || s.NodeSelector["pool"] != "s" ||
		s.Hostname != "al-ice" || len(s.Containers) != 2 || len(s.HostAliases) != 1 || s.HostAliases[0].Hostnames[0] != "db" ||
		!reflect.DeepEqual(s.ImagePullSecrets, []corev1.LocalObjectReference{{Name: "regcred"}, {Name: "ghcr"}}) {
		t.Fatalf("pod spec %+v", s)
	}
	c := s.Containers[0]
	sc := c.SecurityContext
	if *sc.AllowPrivilegeEscalation || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault || sc.Capabilities.Drop[0] != "ALL" ||
		len(sc.Capabilities.Add) != 2 || sc.Capabilities.Add[1] != "SETUID" {
		t.Fatalf("security context %+v", sc)
	}
	if c.Resources.Limits.Cpu().MilliValue() != 1500 || c.Resources.Requests.Memory().Value() != 256<<20 {
		t.Fatalf("resources %+v", c.Resources)
	}
	if p.Labels[k8sobs.LabelManagedBy] != "podspawn" || p.Annotations[k8sobs.AnnotationUser] != "al_ice" || p.Annotations[k8sobs.AnnotationProject] != "web" {
		t.Fatalf("meta %v %v", p.Labels, p.Annotations)
	}
	mounts := *a.Container
	mounts.Mounts = []desired.Mount{{Source: "/h", Target: "/home"}}
	a.Container = &mounts
	if _, err := x.podFor(a, nil); !errors.Is(err, actions.ErrTerminal) {
		t.Fatalf("host mounts: %v, want ErrTerminal", err)
	}
}

// A named volume is a claim of the session: created once (adopted after),
// with the storage class and size of the config, refused when another
// instance owns the name, removed (and waited for) by its UID, and
// mounted by the Pod that uses it.
func TestClaimLifecycle(t *testing.T) {
	k := desired.SessionKey{User: "cy", Project: "web"}
	cs := fake.NewClientset()
	x := &Executor{C: &k8sobs.Client{API: fromclientset.API(cs), Namespace: "podspawn"}, Now: time.Now,
		Settings: Settings{StorageClass: "fast", VolumeSize: resource.MustParse("2Gi")}}
	vol := "podspawn-cy-web-db-data"
	a := action(reconcile.KindCreateVolume, k, vol, observed.RoleService, "i1")
	for i, want := range []actions.Outcome{actions.Changed, actions.Unchanged} {
		if o, err := x.Execute(context.Background(), a); err != nil || o != want {
			t.Fatalf("create %d: %v, %v", i, o, err)
		}
	}
	c, err := cs.CoreV1().PersistentVolumeClaims("podspawn").Get(context.Background(), k8sobs.ClaimName(k, vol), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *c.Spec.StorageClassName != "fast" || c.Spec.Resources.Requests.Storage().String() != "2Gi" || c.Labels[k8sobs.LabelInstance] != "i1" {
		t.Fatalf("claim %+v", c)
	}
	if o := k8sobs.ClaimObject(c); o.Kind != observed.KindVolume || o.Name != vol || o.Instance() != "i1" {
		t.Fatalf("observed as %+v", o)
	}
	if _, err := x.Execute(context.Background(), action(reconcile.KindCreateVolume, k, vol, observed.RoleService, "i2")); !errors.Is(err, actions.ErrTerminal) {
		t.Fatalf("another instance's claim: %v", err)
	}
	svc := &spec.Container{Role: observed.RoleService, Image: "busybox", Volumes: []desired.VolumeMount{{Name: vol, Target: "/data"}}}
	ctr, vols, err := container("service-0", "", svc, func(v string) string { return k8sobs.ClaimName(k, v) })
	if err != nil || len(vols) != 1 || vols[0].PersistentVolumeClaim.ClaimName != c.Name || ctr.VolumeMounts[0].MountPath != "/data" || ctr.VolumeMounts[0].Name != vols[0].Name {
		t.Fatalf("pod volumes %+v, mounts %+v, %v", vols, ctr.VolumeMounts, err)
	}
	rm := action(reconcile.KindRemoveVolume, k, vol, observed.RoleService, "i1")
	rm.TargetID = k8sobs.ObjectID(c.Name, "", "uid-1") // the fake sets no UID and ignores preconditions
	for i, want := range []actions.Outcome{actions.Changed, actions.Unchanged} {
		if o, err := x.Execute(context.Background(), rm); err != nil || o != want {
			t.Fatalf("remove %d: %v, %v", i, o, err)
		}
	}
}

// TestRemoveWaitsUntilThePodIsGone: a graceful delete leaves the Pod until
// the kubelet has stopped it; the removal is done only when the Pod is
// gone, through a watch that the server may end midway (it is started
// again from a fresh read).
func TestRemoveWaitsUntilThePodIsGone(t *testing.T) {
	k := desired.SessionKey{User: "carol"}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: k8sobs.ObjectName(k), Namespace: "podspawn", UID: "u1"}}
	cs := fake.NewClientset(pod)
	// The API server only marks the Pod for deletion; the kubelet finishes it.
	cs.PrependReactor("delete", "pods", func(k8stesting.Action) (bool, runtime.Object, error) { return true, nil, nil })
	watchers := make(chan *watch.FakeWatcher)
	cs.PrependWatchReactor("pods", func(k8stesting.Action) (bool, watch.Interface, error) {
		w := watch.NewFake()
		go func() { watchers <- w }()
		return true, w, nil
	})
	x := &Executor{C: &k8sobs.Client{API: fromclientset.API(cs), Namespace: "podspawn"}, Now: time.Now}
	a := action(reconcile.KindRemoveContainer, k, "podspawn-carol", observed.RoleSession, "i1")
	a.TargetID = k8sobs.ObjectID(pod.Name, "session", "u1")
	type result struct {
		o   actions.Outcome
		err error
	}
	done := make(chan result, 1)
	go func() {
		o, err := x.Execute(context.Background(), a)
		done <- result{o, err}
	}()

	(<-watchers).Stop() // the server ends the first watch
	w := <-watchers
	if err := cs.Tracker().Delete(corev1.SchemeGroupVersion.WithResource("pods"), "podspawn", pod.Name); err != nil {
		t.Fatal(err)
	}
	w.Delete(pod)
	if r := <-done; r.err != nil || r.o != actions.Changed {
		t.Fatalf("remove: %v, %v", r.o, r.err)
	}
}
