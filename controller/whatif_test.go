package controller_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/observed/dockerobs"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/podspawn/podspawn/controller"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/sqlstore"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/reconcile"
)

// listOnly is an observer with a fixed world; PlanKeysWith must only list.
type listOnly struct {
	containers []container.Summary
	networks   []network.Summary
}

func (l listOnly) ContainerList(context.Context, container.ListOptions) ([]container.Summary, error) {
	return l.containers, nil
}

func (l listOnly) NetworkList(context.Context, network.ListOptions) ([]network.Summary, error) {
	return l.networks, nil
}

func (l listOnly) VolumeList(context.Context, volume.ListOptions) (volume.ListResponse, error) {
	return volume.ListResponse{}, nil
}

func TestPlanKeysWith(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := sqlstore.Open(ctx, filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	keyDir := filepath.Join(dir, "keys")
	if err := os.MkdirAll(keyDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(keyDir, "alice"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	key := desired.SessionKey{User: "alice", Project: "web"}
	sess := &desired.Session{Key: key, ID: "s1", Mode: desired.ModePersistent, Status: desired.StatusRunning,
		CreatedAt: epoch.Add(-time.Hour), MaxLifetimeAt: epoch.Add(time.Hour),
		Spec: desired.Spec{Image: "img", ContainerName: "podspawn-alice-web", NetworkName: "podspawn-alice-web-net"}}
	if err := st.Create(ctx, sess, epoch); err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{observed.LabelManagedBy: observed.ManagedByValue, observed.LabelUser: "alice", observed.LabelProject: "web",
		observed.LabelSession: "s1", observed.LabelInstance: st.InstanceID(), observed.LabelRole: observed.RoleSession}
	obs := listOnly{
		containers: []container.Summary{{ID: "c1", Names: []string{"/podspawn-alice-web"}, State: container.StateRunning, Labels: labels}},
		networks:   []network.Summary{{ID: "n1", Name: "podspawn-alice-web-net", Labels: labels}},
	}
	rec := &recorder{}
	c := &controller.Controller{Store: st, KeyDir: keyDir, LockDir: filepath.Join(dir, "locks"), Observer: dockerobs.Lister{API: obs}, Executor: rec,
		Clock: testingclock.NewFakeClock(epoch), Log: logr.Discard()}
	before, err := st.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}

	teardown := func(r reconcile.Reason) []reconcile.Action {
		return []reconcile.Action{
			{Kind: reconcile.KindRemoveContainer, Key: key, Target: "podspawn-alice-web", TargetID: "c1", SessionID: "s1", Reason: r, Detail: "marked for removal", RemovesSession: true},
			{Kind: reconcile.KindRemoveNetwork, Key: key, Target: "podspawn-alice-web-net", TargetID: "n1", SessionID: "s1", Reason: r, Detail: "marked for removal"},
			{Kind: reconcile.KindDeleteSession, Key: key, Target: "session alice@web", SessionID: "s1", Reason: r, Detail: "marked for removal"},
		}
	}
	for _, tc := range []struct {
		name string
		keys []desired.SessionKey
		edit func(*desired.State)
		want reconcile.Plan
		// unplanned marks every wanted action as decided from absence.
		unplanned bool
	}{
		{
			name: "no edit: a healthy persistent session needs nothing",
			keys: []desired.SessionKey{key},
			want: reconcile.Plan{Now: epoch, Unchanged: 1},
		},
		{
			name: "marked terminating, key given twice",
			keys: []desired.SessionKey{key, key},
			edit: func(d *desired.State) {
				d.Session(key).Status = desired.StatusTerminating
				d.Session(key).TerminateReason = string(reconcile.ReasonUserRequested)
			},
			want: reconcile.Plan{Now: epoch, Actions: teardown(reconcile.ReasonUserRequested)},
		},
		{
			name: "user dropped",
			keys: []desired.SessionKey{key},
			edit: func(d *desired.State) { d.RemoveUser("alice") },
			want: reconcile.Plan{Now: epoch, Actions: append([]reconcile.Action{
				{Kind: reconcile.KindMarkTerminating, Key: key, Target: "session alice@web", SessionID: "s1", Reason: reconcile.ReasonUserRemoved, Detail: "user alice has no key file"},
			}, func() []reconcile.Action {
				a := teardown(reconcile.ReasonUserRemoved)
				for i := range a {
					a[i].Detail = "user alice has no key file"
				}
				return a
			}()...)},
			// A missing key file is an absence: the guard may hold it.
			unplanned: true,
		},
		{
			name: "a key without a row or objects",
			keys: []desired.SessionKey{{User: "bob"}},
			edit: func(d *desired.State) {},
			want: reconcile.Plan{Now: epoch},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := c.PlanKeysWith(ctx, tc.keys, tc.edit)
			if err != nil {
				t.Fatal(err)
			}
			if tc.unplanned {
				tc.want.Actions = slices.Clone(tc.want.Actions)
				for i := range tc.want.Actions {
					tc.want.Actions[i].Unplanned = true
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("plan (-want +got):\n%s", diff)
			}
			after, err := st.Load(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(before, after); diff != "" {
				t.Errorf("the store changed (-before +after):\n%s", diff)
			}
			if len(rec.actions) != 0 {
				t.Errorf("actions executed: %v", rec.actions)
			}
		})
	}

	// A key directory that cannot be read is an error, never "no users".
	c.KeyDir = filepath.Join(dir, "missing")
	if _, err := c.PlanKeysWith(ctx, []desired.SessionKey{key}, nil); err == nil {
		t.Error("PlanKeysWith with a missing key directory succeeded")
	}
}

// recorder is an executor that only records, to show that planning
// executes nothing.
type recorder struct {
	mu      sync.Mutex
	actions []reconcile.Action
}

func (r *recorder) Execute(_ context.Context, a reconcile.Action) (actions.Outcome, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.actions = append(r.actions, a)
	return actions.Changed, nil
}
