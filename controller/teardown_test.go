package controller_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/controller"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/lock"
	"github.com/podspawn/podspawn/reconcile"
)

// tryLock reports whether name's lock is free, without waiting: Acquire
// makes one attempt before it looks at the (already ended) context.
func tryLock(t *testing.T, e *env, name string) bool {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	l, err := lock.Acquire(ctx, e.ctrl.LockDir, name)
	if err != nil {
		return false
	}
	l.Unlock()
	return true
}

func TestTeardown(t *testing.T) {
	e := newEnv(t)
	alice, bob, bobWeb := desired.SessionKey{User: "alice"}, desired.SessionKey{User: "bob"}, desired.SessionKey{User: "bob", Project: "web"}
	e.addUser(t, "alice")
	e.addUser(t, "bob")
	e.addSession(t, alice, sessOpts{status: desired.StatusRunning, running: true})
	// Already marked by someone else, for another reason: it keeps it.
	e.addSession(t, bob, sessOpts{status: desired.StatusTerminating, reason: string(reconcile.ReasonUserRemoved), running: true})
	e.addSession(t, bobWeb, sessOpts{status: desired.StatusRunning, running: true})
	e.exec.setIntercept(func(ctx context.Context, a reconcile.Action, next actions.Executor) (actions.Outcome, error) {
		if a.Key == bobWeb && a.Kind == reconcile.KindRemoveNetwork {
			return "", errors.New("network has active endpoints")
		}
		return next.Execute(ctx, a)
	})

	var checked, edited, done []string
	res := e.ctrl.Teardown(context.Background(),
		[]controller.Target{{User: "alice"}, {User: "bob", AllProjects: true}},
		reconcile.ReasonUserRequested,
		controller.TeardownHooks{
			Check: func(tg controller.Target, ss []*desired.Session) error {
				for _, s := range ss {
					checked = append(checked, s.Key.String()+":"+string(e.status(t, s.Key)))
				}
				return nil
			},
			Edit: func(tg controller.Target, ss []*desired.Session) error {
				if tryLock(t, e, tg.User) {
					t.Errorf("Edit of %s ran without the user's lock held", tg.User)
				}
				for _, s := range ss {
					edited = append(edited, s.Key.String()+":"+string(e.status(t, s.Key)))
				}
				return nil
			},
			Done: func(r controller.SessionTeardown) { done = append(done, r.Session.Key.String()) },
		})

	// Check sees the sessions as they were, Edit sees them marked.
	if diff := cmp.Diff([]string{"alice:running", "bob:terminating", "bob@web:running"}, checked); diff != "" {
		t.Errorf("Check saw (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"alice:terminating", "bob:terminating", "bob@web:terminating"}, edited); diff != "" {
		t.Errorf("Edit saw (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"alice", "bob", "bob@web"}, done); diff != "" {
		t.Errorf("Done calls (-want +got):\n%s", diff)
	}

	if len(res) != 2 || res[0].Err != nil || res[1].Err != nil || len(res[0].Sessions) != 1 || len(res[1].Sessions) != 2 {
		t.Fatalf("Teardown = %+v; want alice's target with 1 session and bob's with 2, no target error", res)
	}
	for _, r := range []controller.SessionTeardown{res[0].Sessions[0], res[1].Sessions[0]} {
		if r.Err != nil {
			t.Errorf("%s: %v, want destroyed", r.Session.Key, r.Err)
		}
		if st := e.status(t, r.Session.Key); st != "" {
			t.Errorf("%s: row status %q after a successful teardown, want the row gone", r.Session.Key, st)
		}
	}

	// The failed removal is reported with what was already done, and the
	// session stays marked for the next pass.
	var f *controller.TeardownError
	failed := res[1].Sessions[1]
	if !errors.As(failed.Err, &f) || f.Key != bobWeb || f.Error() != "bob@web: network has active endpoints" {
		t.Fatalf("bob@web: err = %v, want a *TeardownError naming the network failure", failed.Err)
	}
	if diff := cmp.Diff([]step{{Kind: reconcile.KindRemoveContainer, Key: "bob@web", Target: "podspawn-bob-web", Reason: reconcile.ReasonUserRequested}}, steps(f.Done)); diff != "" {
		t.Errorf("bob@web: steps already done (-want +got):\n%s", diff)
	}
	if s, err := e.store.LoadKey(context.Background(), bobWeb); err != nil || s == nil || s.Status != desired.StatusTerminating || s.TerminateReason != string(reconcile.ReasonUserRequested) {
		t.Errorf("bob@web after the failure: %+v, %v; want it kept, terminating for user-requested", s, err)
	}

	// Each session was torn down for its own reason: bob's was not re-marked.
	reasons := map[string]reconcile.Reason{}
	for _, a := range e.exec.executed() {
		reasons[a.Key.String()] = a.Reason
	}
	want := map[string]reconcile.Reason{"alice": reconcile.ReasonUserRequested, "bob": reconcile.ReasonUserRemoved, "bob@web": reconcile.ReasonUserRequested}
	if diff := cmp.Diff(want, reasons); diff != "" {
		t.Errorf("reasons of the executed actions (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"network/podspawn-bob-web-net"}, e.world.names()); diff != "" {
		t.Errorf("world (-want +got):\n%s", diff)
	}
	for _, u := range []string{"alice", "bob"} {
		if !tryLock(t, e, u) {
			t.Errorf("%s's lock is still held after Teardown", u)
		}
	}
}

// A refused Check and a busy lock change nothing for their user; the
// other users' targets go on.
func TestTeardownFailuresBeforeMarkingChangeNothing(t *testing.T) {
	e := newEnv(t)
	e.ctrl.LockTimeout = 10 * time.Millisecond
	alice, bob, carol := desired.SessionKey{User: "alice"}, desired.SessionKey{User: "bob"}, desired.SessionKey{User: "carol"}
	for _, k := range []desired.SessionKey{alice, bob, carol} {
		e.addUser(t, k.User)
		e.addSession(t, k, sessOpts{status: desired.StatusRunning, running: true})
	}
	held, err := lock.Acquire(context.Background(), e.ctrl.LockDir, "bob")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Unlock()
	refused := errors.New("refused")
	edits := 0

	res := e.ctrl.Teardown(context.Background(),
		[]controller.Target{{User: "alice"}, {User: "bob"}, {User: "carol"}, {User: "dave"}},
		reconcile.ReasonUserRequested,
		controller.TeardownHooks{
			Check: func(tg controller.Target, ss []*desired.Session) error {
				if tg.User == "alice" {
					return refused
				}
				return nil
			},
			Edit: func(controller.Target, []*desired.Session) error { edits++; return nil },
		})

	var busy *lock.BusyError
	if !errors.Is(res[0].Err, refused) || len(res[0].Sessions) != 0 {
		t.Errorf("alice: %+v, want the Check's error and no session touched", res[0])
	}
	if !errors.As(res[1].Err, &busy) || len(res[1].Sessions) != 0 {
		t.Errorf("bob: %+v, want a *lock.BusyError and no session touched", res[1])
	}
	if res[2].Err != nil || len(res[2].Sessions) != 1 || res[2].Sessions[0].Err != nil {
		t.Errorf("carol: %+v, want her session destroyed", res[2])
	}
	// A target that selects nothing is no error; Edit still runs for it
	// (remove-user of a user without sessions removes the key file).
	if res[3].Err != nil || len(res[3].Sessions) != 0 || edits != 2 {
		t.Errorf("dave: %+v, Edit ran %d times; want no sessions, no error, and Edit run for carol and dave", res[3], edits)
	}
	for _, k := range []desired.SessionKey{alice, bob} {
		if st := e.status(t, k); st != desired.StatusRunning {
			t.Errorf("%s: status %q, want running (nothing marked)", k, st)
		}
	}
}
