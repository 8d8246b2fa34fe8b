package k8sobs

import (
	"context"
	"strings"
	"testing"

	"github.com/podspawn/podspawn/observed/k8sobs/kubeapi/fromclientset"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/observed"
)

func TestObjectNameIsValidAndInjective(t *testing.T) {
	keys := []desired.SessionKey{
		{User: "a_b"}, {User: "a-b"}, {User: "a", Project: "b"}, {User: "a-b", Project: "c"}, {User: "a", Project: "b-c"},
		{User: "u_", Project: "p_"}, {User: strings.Repeat("x", 32), Project: strings.Repeat("y", 64)},
	}
	seen := map[string]desired.SessionKey{}
	for _, k := range keys {
		n := ObjectName(k)
		if errs := validation.IsDNS1123Label(n); len(errs) > 0 {
			t.Errorf("ObjectName(%v) = %q: %v", k, n, errs)
		}
		if prev, dup := seen[n]; dup {
			t.Errorf("ObjectName(%v) = ObjectName(%v) = %q", k, prev, n)
		}
		seen[n] = k
		for _, v := range Labels(k, desired.ContainerName(k), map[string]string{observed.LabelInstance: "abc", observed.LabelSession: "s1"}) {
			if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
				t.Errorf("label value %q of %v: %v", v, k, errs)
			}
		}
	}
}

func sessionPod(t *testing.T, k desired.SessionKey, instance string) *corev1.Pod {
	t.Helper()
	l := map[string]string{observed.LabelManagedBy: observed.ManagedByValue, observed.LabelUser: k.User, observed.LabelProject: k.Project,
		observed.LabelSession: "s1", observed.LabelInstance: instance, observed.LabelRole: observed.RoleSession}
	an, err := Annotations(k, desired.ContainerName(k), l)
	if err != nil {
		t.Fatal(err)
	}
	an[AnnotationContainers] = `[{"container":"session","name":"` + desired.ContainerName(k) + `","labels":{"podspawn.user":"` + k.User + `","podspawn.session":"s1","podspawn.role":"session"}}]`
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: ObjectName(k), Namespace: "podspawn", UID: "uid-1", Labels: Labels(k, desired.ContainerName(k), l), Annotations: an},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "session"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{Name: "session",
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}}}
}

func TestListerReadsPodsAsContainers(t *testing.T) {
	k := desired.SessionKey{User: "al_ice"}
	other := desired.SessionKey{User: "bob"}
	unlabelled := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "x", Namespace: "podspawn"}}
	cs := fake.NewClientset(sessionPod(t, k, "i1"), sessionPod(t, other, "i2"), unlabelled)
	l := Lister{C: &Client{API: fromclientset.API(cs), Namespace: "podspawn"}}
	objs, err := l.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 {
		t.Fatalf("List = %d objects, want the 2 labelled pods' containers: %+v", len(objs), objs)
	}
	got, err := l.ListKey(context.Background(), k)
	if err != nil || len(got) != 1 {
		t.Fatalf("ListKey = %+v, %v", got, err)
	}
	o := got[0]
	if key, ok := o.Key(); !ok || key != k || o.Name != "podspawn-al_ice" || !o.Running || o.Instance() != "i1" || o.Labels[observed.LabelManagedBy] != "podspawn" {
		t.Fatalf("object %+v", o)
	}
	if name, ctr, uid, ok := ParseObjectID(o.ID); !ok || name != ObjectName(k) || ctr != "session" || uid != "uid-1" {
		t.Fatalf("ID %q", o.ID)
	}
	in, ok, err := l.InspectContainer(context.Background(), "podspawn-al_ice")
	if err != nil || !ok || in.ID != o.ID {
		t.Fatalf("InspectContainer = %+v, %v, %v", in, ok, err)
	}
	if _, ok, err := l.InspectContainer(context.Background(), "podspawn-nobody"); ok || err != nil {
		t.Fatalf("InspectContainer of a missing name = %v, %v", ok, err)
	}
}

func TestContainerStates(t *testing.T) {
	p := sessionPod(t, desired.SessionKey{User: "al"}, "i1")
	p.Status.ContainerStatuses[0].State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}
	p.Status.ContainerStatuses[0].LastTerminationState = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 3}}
	p.Status.ContainerStatuses[0].RestartCount = 4
	// The kubelet restarts it: not a stop for podspawn to restart.
	o := PodObjects(p)[0]
	if o.Running || o.State != observed.StateRestarting || o.ExitCode != 3 || o.RuntimeRestarts != 4 || o.RuntimeReason != "CrashLoopBackOff" {
		t.Fatalf("crash-looping container: %+v", o)
	}
	// A Pod that will not be restarted (never the executor's) stays exited.
	p.Spec.RestartPolicy = corev1.RestartPolicyNever
	if o := PodObjects(p)[0]; o.State != "exited" {
		t.Fatalf("container of a Pod that is not restarted: %+v", o)
	}
	now := metav1.Now()
	p.DeletionTimestamp = &now
	if o := PodObjects(p)[0]; o.State != observed.StateRemoving || o.Running {
		t.Fatalf("deleting pod: %+v", o)
	}
}
