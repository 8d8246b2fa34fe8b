package k8sact

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/spec"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/observed/k8sobs"
	"github.com/podspawn/podspawn/reconcile"
)

// TestPodMountsAgentDirs: a generation made with agent forwarding gets
// the relay's emptyDirs in its session container instead of a host
// directory, and services do not see them.
func TestPodMountsAgentDirs(t *testing.T) {
	x := &Executor{C: &k8sobs.Client{Namespace: "podspawn"}}
	k := desired.SessionKey{User: "cy"}
	a := action(reconcile.KindCreateContainer, k, desired.ContainerName(k), observed.RoleSession, "i1")
	a.Container = &spec.Container{Role: observed.RoleSession, Image: "img", User: "cy",
		Mounts: []desired.Mount{{Source: "/run/podspawn/agent/s1", Target: desired.AgentMountTarget, Prepare: desired.PrepareAgentDir}}}
	svc := action(reconcile.KindCreateContainer, k, "podspawn-cy-db", observed.RoleService, "i1")
	svc.Container = &spec.Container{Role: observed.RoleService, Image: "db"}
	p, err := x.podFor(a, []reconcile.Action{svc})
	if err != nil {
		t.Fatal(err)
	}
	empty := corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}
	if want := []corev1.Volume{{Name: "agent", VolumeSource: empty}, {Name: "agent-relay", VolumeSource: empty}}; !reflect.DeepEqual(p.Spec.Volumes, want) {
		t.Fatalf("volumes %+v, want %+v", p.Spec.Volumes, want)
	}
	want := []corev1.VolumeMount{{Name: "agent", MountPath: desired.AgentMountTarget}, {Name: "agent-relay", MountPath: desired.AgentRelayDir}}
	if m := p.Spec.Containers[0].VolumeMounts; !reflect.DeepEqual(m, want) {
		t.Fatalf("session mounts %+v, want %+v", m, want)
	}
	if m := p.Spec.Containers[1].VolumeMounts; len(m) != 0 {
		t.Fatalf("service mounts %+v, want none", m)
	}
	if len(a.Container.Mounts) != 1 {
		t.Fatalf("the action's spec was changed: %+v", a.Container.Mounts)
	}
}
