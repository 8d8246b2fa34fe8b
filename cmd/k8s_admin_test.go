package main

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/podspawn/podspawn/observed/k8sobs/kubeapi/fromclientset"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/observed/k8sobs"
)

// kubeEnv is an adminEnv with runtime: kubernetes on a fake clientset.
func kubeEnv(t *testing.T) (*adminEnv, *fake.Clientset) {
	e := newAdminEnv(t)
	f, err := os.OpenFile(e.cfgPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("runtime: kubernetes\nkubernetes:\n  kubeconfig: /nonexistent/kubeconfig\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	cs := fake.NewClientset()
	old := newKubeClient
	newKubeClient = func(_, ns string, _ k8sobs.RequestObserver) (*k8sobs.Client, error) {
		return &k8sobs.Client{API: fromclientset.API(cs), Namespace: ns}, nil
	}
	t.Cleanup(func() { newKubeClient = old })
	return e, cs
}

// sessionPod is the Pod of s as the executor labels it, with the session
// container's status st.
func (e *adminEnv) sessionPod(s *desired.Session, instance, node string, st corev1.ContainerStatus) *corev1.Pod {
	e.t.Helper()
	l := map[string]string{observed.LabelManagedBy: observed.ManagedByValue, observed.LabelUser: s.Key.User, observed.LabelProject: s.Key.Project,
		observed.LabelSession: s.ID, observed.LabelInstance: instance, observed.LabelRole: observed.RoleSession}
	an, err := k8sobs.Annotations(s.Key, s.Spec.ContainerName, l)
	if err != nil {
		e.t.Fatal(err)
	}
	an[k8sobs.AnnotationContainers] = `[{"container":"session","name":"` + s.Spec.ContainerName + `","labels":{"podspawn.role":"session"}},` +
		`{"container":"service-0","name":"` + s.Spec.ContainerName + `-db","labels":{"podspawn.role":"service"}}]`
	st.Name = "session"
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: k8sobs.ObjectName(s.Key), Namespace: "podspawn", UID: types.UID("uid-" + s.Key.User),
		Labels: k8sobs.Labels(s.Key, s.Spec.ContainerName, l), Annotations: an},
		Spec:   corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "session"}, {Name: "service-0"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{st, {Name: "service-0", RestartCount: 9}}}}
}

// seedKube: alice's Pod runs on node-a; bob's is not scheduled yet;
// carol's session container crash-loops (the kubelet backs off after 4
// restarts); dave's restarted twice, long ago; erin has no Pod; a Pod of
// another instance with carol's name is not read.
func seedKube(e *adminEnv, cs *fake.Clientset) {
	alice := session("alice", "backend", desired.StatusRunning, 90*time.Minute, 8*time.Hour)
	bob := session("bob", "", desired.StatusCreating, 5*time.Second, 8*time.Hour)
	carol := session("carol", "", desired.StatusRunning, time.Hour, 8*time.Hour)
	dave := session("dave", "", desired.StatusGrace, 3*time.Hour, 8*time.Hour)
	erin := session("erin", "", desired.StatusRunning, time.Minute, 8*time.Hour)
	e.seed(alice, bob, carol, dave, erin)
	inst := e.store().InstanceID()
	running := func(ago time.Duration) corev1.ContainerState {
		return corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(t0.Add(-ago))}}
	}
	pods := []*corev1.Pod{
		e.sessionPod(alice, inst, "node-a", corev1.ContainerStatus{State: running(time.Hour)}),
		e.sessionPod(bob, inst, "", corev1.ContainerStatus{State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}}),
		e.sessionPod(carol, inst, "node-b", corev1.ContainerStatus{RestartCount: 4,
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}}),
		e.sessionPod(dave, inst, "node-a", corev1.ContainerStatus{RestartCount: 2, State: running(2 * time.Hour)}),
	}
	foreign := e.sessionPod(carol, "other-instance", "node-z", corev1.ContainerStatus{RestartCount: 99})
	foreign.Name += "-x"
	for _, p := range append(pods, foreign) {
		if err := cs.Tracker().Add(p); err != nil {
			e.t.Fatal(err)
		}
	}
}

func TestKubernetesListAndStatusGolden(t *testing.T) {
	for _, tc := range []struct {
		name        string
		unreachable bool
		args        []string
	}{
		{"k8s_list", false, []string{"list"}},
		{"k8s_list_wide", false, []string{"list", "-o", "wide"}},
		{"k8s_list_json", false, []string{"list", "-o", "json"}},
		{"k8s_list_wide_unreachable", true, []string{"list", "-o", "wide"}},
		{"k8s_status", false, []string{"status"}},
		{"k8s_status_unreachable", true, []string{"status"}},
		{"k8s_status_prometheus", false, []string{"status", "--prometheus"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, cs := kubeEnv(t)
			seedKube(e, cs)
			if tc.unreachable {
				cs.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
					return true, nil, errors.New("dial tcp 127.0.0.1:16443: connect: connection refused")
				})
			}
			golden(t, tc.name, e.run(tc.args...))
		})
	}
}

// On Docker, NODE is this host's name for every session, read without
// asking Docker.
func TestListWideDocker(t *testing.T) {
	e := newAdminEnv(t)
	seedListSessions(e)
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	got := e.run("list", "-o", "wide")
	golden(t, "list_sessions_wide", strings.ReplaceAll(got, " "+host+"\n", " $HOST\n"))
	if calls := e.docker.calls; len(calls) != 0 {
		t.Fatalf("list -o wide asked Docker: %v", calls)
	}
}
