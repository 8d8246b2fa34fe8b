package dockeract_test

import (
	"context"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/reconcile"
)

// containerCalls are the calls of c's log that act on containers or the
// host access rules.
func containerCalls(c []string) []string {
	var out []string
	for _, s := range c {
		if strings.HasPrefix(s, "Container") || strings.HasPrefix(s, "HostFirewall") {
			out = append(out, strings.Fields(s)[0])
		}
	}
	return out
}

// Prepare creates the container after the host access check and leaves
// it stopped; executing the action then only starts it (no second create,
// no second check).
func TestPrepareCreatesTheContainerExecuteStartsIt(t *testing.T) {
	f := newFixture(t)
	f.exec.HostFirewall = &fakeFirewall{docker: f.docker}
	a := f.action(reconcile.KindCreateContainer, f.sess.Spec.ContainerName)
	f.exec.Prepare(context.Background(), a)
	if w := f.docker.world(); len(w.Containers) != 1 || w.Containers[0].Running || w.Containers[0].Labels["podspawn.session"] != f.sess.ID {
		t.Fatalf("containers after Prepare = %+v, want the labelled container, not started", w.Containers)
	}
	o, err := f.exec.Execute(context.Background(), a)
	if err != nil || o != actions.Changed {
		t.Fatalf("Execute = %q, %v; want changed, nil", o, err)
	}
	want := []string{"HostFirewall.Ensure", "ContainerCreate", "ContainerAttach", "ContainerStart"}
	if diff := cmp.Diff(want, containerCalls(f.docker.callLog())); diff != "" {
		t.Fatalf("calls (-want +got):\n%s", diff)
	}
	if w := f.docker.world(); len(w.Containers) != 1 || !w.Containers[0].Running {
		t.Fatalf("containers = %+v, want it running", w.Containers)
	}
	// Executed again, the action finds it running: nothing is left prepared.
	if o, err := f.exec.Execute(context.Background(), a); err != nil || o != actions.Unchanged {
		t.Fatalf("second Execute = %q, %v; want unchanged, nil", o, err)
	}
}

// A container that mounts volumes is not prepared: they are created after
// the network, and Docker would make a missing one without labels.
func TestPrepareLeavesContainersWithVolumes(t *testing.T) {
	f := newFixture(t)
	f.exec.Prepare(context.Background(), f.serviceAction())
	if w := f.docker.world(); len(w.Containers) != 0 || len(w.Volumes) != 0 {
		t.Fatalf("world after Prepare = %+v, want nothing created", w)
	}
}

// A prepared container removed before its action ran (the rollback of a
// plan that failed after Prepare) is created again by the action.
func TestPreparedContainerGoneIsCreatedAgain(t *testing.T) {
	f := newFixture(t)
	a := f.action(reconcile.KindCreateContainer, f.sess.Spec.ContainerName)
	f.exec.Prepare(context.Background(), a)
	w := f.docker.world()
	if len(w.Containers) != 1 {
		t.Fatalf("containers after Prepare = %+v, want one", w.Containers)
	}
	if err := f.docker.ContainerRemove(context.Background(), w.Containers[0].ID, container.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	o, err := f.exec.Execute(context.Background(), a)
	if err != nil || o != actions.Changed {
		t.Fatalf("Execute = %q, %v; want changed, nil", o, err)
	}
	if w := f.docker.world(); len(w.Containers) != 1 || !w.Containers[0].Running {
		t.Fatalf("containers = %+v, want a new one running", w.Containers)
	}
}
