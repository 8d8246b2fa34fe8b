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
