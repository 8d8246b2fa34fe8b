package dockerobs

import (
	"context"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/observed"
)

type volumesOnly []*volume.Volume

func (volumesOnly) ContainerList(context.Context, container.ListOptions) ([]container.Summary, error) {
	return nil, nil
}

func (volumesOnly) NetworkList(context.Context, network.ListOptions) ([]network.Summary, error) {
	return nil, nil
}

func (v volumesOnly) VolumeList(context.Context, volume.ListOptions) (volume.ListResponse, error) {
	return volume.ListResponse{Volumes: v}, nil
}

// TestVolumeWithoutCreationTimeIsYoung: a volume whose creation time does
// not parse must not look ancient (the orphan rule would remove it at
// once); it counts from when this process first saw it, and keeps that
// time on later passes so the orphan rule's wait does end.
func TestVolumeWithoutCreationTimeIsYoung(t *testing.T) {
	t0 := time.Date(2026, 11, 29, 7, 0, 0, 0, time.UTC)
	clk := t0
	now = func() time.Time { return clk }
	t.Cleanup(func() { now = time.Now })

	labels := func(session string) map[string]string {
		return map[string]string{observed.LabelManagedBy: observed.ManagedByValue, observed.LabelSession: session}
	}
	api := volumesOnly{
		{Name: "v-empty", CreatedAt: "", Labels: labels("s1")},
		{Name: "v-garbage", CreatedAt: "yesterday", Labels: labels("s1")},
		{Name: "v-ok", CreatedAt: "2026-11-28T07:00:00+01:00", Labels: labels("s1")},
	}
	created := func() map[string]time.Time {
		t.Helper()
		objs, err := List(context.Background(), api, "")
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]time.Time{}
		for _, o := range objs {
			out[o.Name] = o.Created
		}
		return out
	}

	want := map[string]time.Time{"v-empty": t0, "v-garbage": t0, "v-ok": time.Date(2026, 11, 28, 6, 0, 0, 0, time.UTC)}
	if diff := cmp.Diff(want, created()); diff != "" {
		t.Fatalf("first pass (-want +got):\n%s", diff)
	}
	clk = t0.Add(time.Hour)
	if diff := cmp.Diff(want, created()); diff != "" {
		t.Fatalf("an hour later the first sighting must still count (-want +got):\n%s", diff)
	}

	// A new generation's volume of the same name is young again.
	api[0].Labels = labels("s2")
	want["v-empty"] = clk
	if diff := cmp.Diff(want, created()); diff != "" {
		t.Fatalf("new generation (-want +got):\n%s", diff)
	}
}

// staleList lists containers as a lagging snapshot would, and inspects
// them as they really are.
type staleList struct {
	listed    []container.Summary
	real      map[string]*container.State // by ID; missing: gone
	inspected []string
}

func (s *staleList) ContainerList(context.Context, container.ListOptions) ([]container.Summary, error) {
	return s.listed, nil
}

func (*staleList) NetworkList(context.Context, network.ListOptions) ([]network.Summary, error) {
	return nil, nil
}

func (*staleList) VolumeList(context.Context, volume.ListOptions) (volume.ListResponse, error) {
	return volume.ListResponse{}, nil
}

func (s *staleList) ContainerInspect(_ context.Context, id string) (container.InspectResponse, error) {
	s.inspected = append(s.inspected, id)
	st, ok := s.real[id]
	if !ok {
		return container.InspectResponse{}, errdefs.ErrNotFound.WithMessage("No such container: " + id)
	}
	return container.InspectResponse{ContainerJSONBase: &container.ContainerJSONBase{ID: id, State: st}}, nil
}

// TestInspectCorrectsTheList: the list may still show a container running
// after its die event (dockerd 20.10 updates the list's snapshot later), so
// a key's containers are inspected; the full list inspects only stopped
// ones, for their exit code and times. Containers without a role label
// (not podspawn's to run) are never inspected, and one gone meanwhile is
// left out.
func TestInspectCorrectsTheList(t *testing.T) {
	labels := func(user, role string) map[string]string {
		l := map[string]string{observed.LabelManagedBy: observed.ManagedByValue, observed.LabelUser: user}
		if role != "" {
			l[observed.LabelRole] = role
		}
		return l
	}
	started := time.Date(2026, 11, 29, 7, 0, 0, 0, time.UTC)
	finished := started.Add(3 * time.Second)
	api := &staleList{
		listed: []container.Summary{
			{ID: "c-killed", Names: []string{"/podspawn-alice"}, State: container.StateRunning, Labels: labels("alice", observed.RoleSession)},
			{ID: "c-exited", Names: []string{"/podspawn-bob"}, State: container.StateExited, Labels: labels("bob", observed.RoleSession)},
			{ID: "c-gone", Names: []string{"/podspawn-alice-web"}, State: container.StateExited, Labels: map[string]string{
				observed.LabelManagedBy: observed.ManagedByValue, observed.LabelUser: "alice", observed.LabelProject: "web", observed.LabelRole: observed.RoleSession}},
			{ID: "c-norole", Names: []string{"/podspawn-carol"}, State: container.StateExited, Labels: labels("carol", "")},
		},
		real: map[string]*container.State{
			"c-killed": {Status: container.StateExited, ExitCode: 137, StartedAt: started.Format(time.RFC3339Nano), FinishedAt: finished.Format(time.RFC3339Nano)},
			"c-exited": {Status: container.StateExited, ExitCode: 3, StartedAt: started.Format(time.RFC3339Nano), FinishedAt: finished.Format(time.RFC3339Nano)},
			"c-norole": {Status: container.StateExited, ExitCode: 1},
		},
	}
	type view struct {
		Name, State         string
		Running             bool
		ExitCode            int
		StartedAt, Finished time.Time
	}
	views := func(objs []observed.Object) []view {
		var out []view
		for _, o := range objs {
			out = append(out, view{o.Name, o.State, o.Running, o.ExitCode, o.StartedAt, o.FinishedAt})
		}
		return out
	}

	objs, err := ListKey(context.Background(), api, desired.SessionKey{User: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]view{{"podspawn-alice", "exited", false, 137, started, finished}}, views(objs)); diff != "" {
		t.Errorf("ListKey (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"c-killed"}, api.inspected); diff != "" {
		t.Errorf("ListKey inspected (-want +got):\n%s", diff)
	}

	api.inspected = nil
	objs, err = List(context.Background(), api, "")
	if err != nil {
		t.Fatal(err)
	}
	want := []view{
		{"podspawn-alice", "running", true, 0, time.Time{}, time.Time{}},
		{"podspawn-bob", "exited", false, 3, started, finished},
		{"podspawn-carol", "exited", false, 0, time.Time{}, time.Time{}},
	}
	if diff := cmp.Diff(want, views(objs)); diff != "" {
		t.Errorf("List (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"c-gone", "c-exited"}, api.inspected); diff != "" {
		t.Errorf("List inspected (-want +got):\n%s", diff)
	}
}
