package core_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/podspawn/podspawn/actions/dockeract"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"
	"github.com/go-logr/logr/testr"
	"github.com/google/go-cmp/cmp"
	"k8s.io/utils/clock"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/controller"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/sqlstore"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/observed/dockerobs"
	"github.com/podspawn/podspawn/observed/proc"
	"github.com/podspawn/podspawn/reconcile"
	"github.com/podspawn/podspawn/test/harness"
)

// countingObserver counts the observation calls the controller makes.
type countingObserver struct {
	dockerobs.API
	mu    sync.Mutex
	calls map[string]int
}

func (c *countingObserver) add(m string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls[m]++
}

func (c *countingObserver) ContainerList(ctx context.Context, o container.ListOptions) ([]container.Summary, error) {
	c.add("ContainerList")
	return c.API.ContainerList(ctx, o)
}

func (c *countingObserver) NetworkList(ctx context.Context, o network.ListOptions) ([]network.Summary, error) {
	c.add("NetworkList")
	return c.API.NetworkList(ctx, o)
}

func (c *countingObserver) VolumeList(ctx context.Context, o volume.ListOptions) (volume.ListResponse, error) {
	c.add("VolumeList")
	return c.API.VolumeList(ctx, o)
}

// countingExecutor counts executed actions.
type countingExecutor struct {
	actions.Executor
	n atomic.Int64
}

func (c *countingExecutor) Execute(ctx context.Context, a reconcile.Action) (actions.Outcome, error) {
	c.n.Add(1)
	return c.Executor.Execute(ctx, a)
}

// A pass over a fleet that needs nothing makes one list call per kind
// (containers, networks, volumes) and no call per session, whatever the
// fleet size. PODSPAWN_CORE_SESSIONS sets the size (default 100;
// hack/bench-core.sh runs 500).
func TestSteadyStatePassListsOncePerKind(t *testing.T) {
	n := envInt(t, "PODSPAWN_CORE_SESSIONS", 100)
	e := newCoreEnv(t, harness.Options{})
	ctx := context.Background()
	keys := fleetKeys("cts", n, 10)
	for i := 0; i < n; i += 10 {
		e.AddUser(keys[i].User)
	}

	st := e.OpenStore()
	defer st.Close()
	self, err := proc.Self()
	if err != nil {
		t.Fatal(err)
	}
	// Half the sessions have a live connection, half are in a grace period
	// that ends in an hour: neither needs anything.
	now := time.Now()
	ids := make([]string, n)
	for i, k := range keys {
		s := &desired.Session{Key: k, ID: sqlstore.NewSessionID(), Mode: desired.ModeGracePeriod, Status: desired.StatusRunning,
			CreatedAt: now, MaxLifetimeAt: now.Add(8 * time.Hour), GracePeriod: time.Hour, Spec: harness.SessionSpec(k, nil)}
		if i%2 == 1 {
			s.Status, s.GraceExpiry = desired.StatusGrace, now.Add(time.Hour)
		}
		if err := st.Create(ctx, s, now); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if _, err := st.AddLease(ctx, s.ID, self.PID, self.Start, now); err != nil {
				t.Fatal(err)
			}
		}
		ids[i] = s.ID
	}
	setupStart := time.Now()
	e.makeFleet(keys, func(i int) map[string]string {
		return map[string]string{
			observed.LabelManagedBy: observed.ManagedByValue, observed.LabelUser: keys[i].User, observed.LabelProject: keys[i].Project,
			observed.LabelSession: ids[i], observed.LabelInstance: e.Instance, observed.LabelRole: observed.RoleSession,
		}
	})
	t.Logf("created %d sessions (network + running container each) in %s", n, time.Since(setupStart).Round(time.Millisecond))

	dc, err := client.NewClientWithOpts(client.WithHost(e.Proxy.Host()), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	dc.NegotiateAPIVersion(ctx) // outside the measured pass
	obs := &countingObserver{API: dc, calls: map[string]int{}}
	ex := &countingExecutor{Executor: &dockeract.Executor{API: dc, Store: st, Now: time.Now}}
	ctrl := &controller.Controller{
		Store: st, KeyDir: e.KeyDir, LockDir: e.StateDir + "/locks", Observer: dockerobs.Lister{API: obs}, Executor: ex,
		Options: reconcile.Options{OrphanMinAge: 30 * time.Second, PendingTimeout: 2 * time.Minute},
		Clock:   clock.RealClock{}, Log: testr.New(t), Workers: 4,
	}

	e.Proxy.ResetCounts()
	load := loadAvg()
	start := time.Now()
	rep, err := ctrl.ReconcileOnce(ctx)
	wall := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	wire := e.Proxy.Counts()

	if diff := cmp.Diff(map[string]int{"ContainerList": 1, "NetworkList": 1, "VolumeList": 1}, obs.calls); diff != "" {
		t.Errorf("observation calls (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]int{"GET /containers/json": 1, "GET /networks": 1, "GET /volumes": 1}, wire); diff != "" {
		t.Errorf("Docker API requests of the pass (-want +got):\n%s", diff)
	}
	if got := ex.n.Load(); got != 0 {
		t.Errorf("%d actions executed, want none", got)
	}
	if len(rep.Plan.Actions) != 0 || len(rep.Plan.Skipped) != 0 || rep.Plan.Unchanged != n || len(rep.Keys) != 0 {
		t.Errorf("plan: %d actions, %d skipped, %d unchanged, %d keys reconciled; want 0, 0, %d, 0\nfirst actions: %+v",
			len(rep.Plan.Actions), len(rep.Plan.Skipped), rep.Plan.Unchanged, len(rep.Keys), n, first(rep.Plan.Actions, 3))
	}

	// Where the time of a pass goes, for the performance report.
	t0 := time.Now()
	d, err := ctrl.LoadDesired(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t1 := time.Now()
	o, err := ctrl.Observe(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	t2 := time.Now()
	reconcile.Compute(d, o, t2, ctrl.Options)
	t3 := time.Now()
	t.Logf("steady-state pass over %d sessions: %s wall, 3 list calls, 0 actions (load desired %s, observe %s, compute %s; load average %s)",
		n, wall.Round(time.Millisecond), t1.Sub(t0).Round(time.Millisecond), t2.Sub(t1).Round(time.Millisecond), t3.Sub(t2).Round(time.Microsecond), load)
}

func first(a []reconcile.Action, n int) []reconcile.Action {
	if len(a) < n {
		return a
	}
	return a[:n]
}
