package controller_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/sqlstore"
	"github.com/podspawn/podspawn/observed/proc"
	"github.com/podspawn/podspawn/reconcile"
)

// TestNewSessionStartsItsContainersSideBySide: a new session's service
// containers and session container wait only for its network, so they are
// created at the same time: each creation here waits for all three to be
// in flight, which a one-after-another executor never reaches.
func TestNewSessionStartsItsContainersSideBySide(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	k := desired.SessionKey{User: "alice", Project: "web"}
	e.addUser(t, "alice")
	s := &desired.Session{
		Key: k, ID: sqlstore.NewSessionID(), Mode: desired.ModeGracePeriod, Status: desired.StatusCreating,
		CreatedAt: epoch, MaxLifetimeAt: epoch.Add(maxLifetime), GracePeriod: gracePeriod,
		Spec: desired.Spec{Image: "podspawn-test:busybox", Shell: "/bin/sh", ContainerName: desired.ContainerName(k), NetworkName: desired.NetworkName(k),
			Services: []desired.Service{{Name: "db", Image: "podspawn-test:busybox"}, {Name: "cache", Image: "podspawn-test:busybox"}}},
	}
	if err := e.store.Create(ctx, s, epoch); err != nil {
		t.Fatal(err)
	}
	self, err := proc.Self()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.AddLease(ctx, s.ID, self.PID, self.Start, epoch); err != nil {
		t.Fatal(err)
	}

	const want = 3
	var mu sync.Mutex
	inFlight, most := 0, 0
	all := make(chan struct{})
	e.exec.setIntercept(func(ctx context.Context, a reconcile.Action, next actions.Executor) (actions.Outcome, error) {
		if a.Kind != reconcile.KindCreateContainer {
			return next.Execute(ctx, a)
		}
		mu.Lock()
		inFlight++
		most = max(most, inFlight)
		if inFlight == want {
			close(all)
		}
		mu.Unlock()
		select {
		case <-all:
		case <-time.After(10 * time.Second): // only reached when they run one at a time
		}
		mu.Lock()
		inFlight--
		mu.Unlock()
		return next.Execute(ctx, a)
	})
	if rep := e.ctrl.ReconcileKey(ctx, k); rep.Err != nil {
		t.Fatal(rep.Err)
	}
	if most != want {
		t.Fatalf("at most %d container creations were in flight at once, want %d", most, want)
	}
	if got := e.status(t, k); got != desired.StatusRunning {
		t.Fatalf("status after the reconcile = %q, want running", got)
	}
	got := e.world.names()
	for _, name := range []string{s.Spec.ContainerName, s.Spec.ServiceContainerName("db"), s.Spec.ServiceContainerName("cache")} {
		if !slices.Contains(got, "container/"+name+":running") {
			t.Errorf("container %s was not created and started: %v", name, got)
		}
	}
}

// preparingExecutor is the fake executor with actions.Preparer.
type preparingExecutor struct {
	*fakeExecutor
	prepare func(ctx context.Context, a reconcile.Action)
}

func (p *preparingExecutor) Prepare(ctx context.Context, a reconcile.Action) { p.prepare(ctx, a) }

// TestNewSessionPreparesItsContainerWhileItsNetworkIsCreated: the executor
// is asked to prepare the session's container creations while the network
// is being created (the network's creation here waits for that, which a
// controller that prepares nothing never reaches), and the containers are
// executed only after the network.
func TestNewSessionPreparesItsContainerWhileItsNetworkIsCreated(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	k := desired.SessionKey{User: "alice", Project: "web"}
	e.addUser(t, "alice")
	s := &desired.Session{
		Key: k, ID: sqlstore.NewSessionID(), Mode: desired.ModeGracePeriod, Status: desired.StatusCreating,
		CreatedAt: epoch, MaxLifetimeAt: epoch.Add(maxLifetime), GracePeriod: gracePeriod,
		Spec: desired.Spec{Image: "podspawn-test:busybox", Shell: "/bin/sh", ContainerName: desired.ContainerName(k), NetworkName: desired.NetworkName(k),
			Services: []desired.Service{{Name: "db", Image: "podspawn-test:busybox"}}},
	}
	if err := e.store.Create(ctx, s, epoch); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var prepared, order []string
	sessionPrepared := make(chan struct{})
	e.ctrl.Executor = &preparingExecutor{fakeExecutor: e.exec, prepare: func(_ context.Context, a reconcile.Action) {
		mu.Lock()
		defer mu.Unlock()
		prepared = append(prepared, string(a.Kind)+" "+a.Target)
		if a.Target == s.Spec.ContainerName {
			close(sessionPrepared)
		}
	}}
	e.exec.setIntercept(func(ctx context.Context, a reconcile.Action, next actions.Executor) (actions.Outcome, error) {
		if a.Kind == reconcile.KindCreateNetwork {
			select {
			case <-sessionPrepared:
			case <-time.After(10 * time.Second): // only reached when nothing is prepared meanwhile
			}
		}
		o, err := next.Execute(ctx, a)
		mu.Lock()
		order = append(order, string(a.Kind)+" "+a.Target)
		mu.Unlock()
		return o, err
	})
	if rep := e.ctrl.ReconcileKey(ctx, k); rep.Err != nil {
		t.Fatal(rep.Err)
	}
	slices.Sort(prepared)
	wantPrepared := []string{"create-container " + s.Spec.ContainerName, "create-container " + s.Spec.ServiceContainerName("db")}
	slices.Sort(wantPrepared)
	if !slices.Equal(prepared, wantPrepared) {
		t.Fatalf("prepared %q, want the session's container creations %q", prepared, wantPrepared)
	}
	select {
	case <-sessionPrepared:
	default:
		t.Fatal("the session container was not prepared")
	}
	if len(order) < 3 || order[0] != "create-network "+s.Spec.NetworkName {
		t.Fatalf("executed %q, want the network first, then the containers", order)
	}
	if got := e.status(t, k); got != desired.StatusRunning {
		t.Fatalf("status after the reconcile = %q, want running", got)
	}
}
