package dockerobs

import (
	"context"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/google/go-cmp/cmp"

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
