package dockeract_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/reconcile"
)

// restartAction starts the fixture's stopped session container again,
// recording restart count.
func (f *fixture) restartAction(count int) reconcile.Action {
	a := f.action(reconcile.KindCreateContainer, f.sess.Spec.ContainerName)
	a.Reason = reconcile.ReasonContainerStopped
	a.Restart = &reconcile.Restart{Count: count, NextAt: now.Add(4 * time.Second)}
	return a
}

// stoppedOwn puts the session's own container, stopped after having run.
func (f *fixture) stoppedOwn() {
	f.docker.put(observed.KindContainer, object{ID: "c-own", Name: f.sess.Spec.ContainerName, Labels: f.labels(observed.RoleSession, ""), Image: "podspawn-test:busybox"})
	f.docker.mu.Lock()
	f.docker.started["c-own"] = true
	f.docker.mu.Unlock()
}

type restartRow struct {
	Count      int
	Last, Next time.Time
}

func (f *fixture) restarts(t *testing.T) restartRow {
	s := f.row(t)
	return restartRow{s.RestartCount, s.LastRestartAt, s.NextRestartAt}
}

// A restart is recorded on the row before the container is started, so a
// start that fails still counts; executing the action again records the
// same values.
func TestRestartIsRecordedBeforeTheStart(t *testing.T) {
	f := newFixture(t)
	f.setStatus(t, "running")
	f.stoppedOwn()
	f.docker.hook = func(method, _ string) error {
		if method == "ContainerStart" {
			return errors.New("Error response from daemon: OCI runtime create failed")
		}
		return nil
	}
	if _, err := f.exec.Execute(context.Background(), f.restartAction(3)); err == nil || !strings.Contains(err.Error(), "starting: ") {
		t.Fatalf("err = %v, want the start's failure", err)
	}
	want := restartRow{3, now, now.Add(4 * time.Second)}
	if diff := cmp.Diff(want, f.restarts(t)); diff != "" {
		t.Fatalf("row after a failed start (-want +got):\n%s", diff)
	}

	f.docker.hook = nil
	o, err := f.exec.Execute(context.Background(), f.restartAction(3))
	if err != nil || o != actions.Changed {
		t.Fatalf("Execute = %q, %v; want changed, nil", o, err)
	}
	if diff := cmp.Diff(want, f.restarts(t)); diff != "" {
		t.Fatalf("row after the retry (-want +got):\n%s", diff)
	}
	if w := f.docker.world(); len(w.Containers) != 1 || !w.Containers[0].Running {
		t.Fatalf("containers = %+v, want the own container running", w.Containers)
	}

	// Already running: nothing restarted, nothing recorded.
	o, err = f.exec.Execute(context.Background(), f.restartAction(4))
	if err != nil || o != actions.Unchanged {
		t.Fatalf("Execute on a running container = %q, %v; want unchanged, nil", o, err)
	}
	if diff := cmp.Diff(want, f.restarts(t)); diff != "" {
		t.Fatalf("row after a no-op (-want +got):\n%s", diff)
	}
}

// A container that ran before and dies right after its restart (its
// command exits at once) makes the account setup fail: it is kept (its
// files are the user's) and the start reported, so the crash-loop back-off
// decides what comes next; nothing is removed.
func TestRestartOfAContainerThatDiesAtOnceKeepsIt(t *testing.T) {
	f := newFixture(t)
	f.setStatus(t, "running")
	f.stoppedOwn()
	f.docker.dieOnStart = true
	o, err := f.exec.Execute(context.Background(), f.restartAction(1))
	if err != nil || o != actions.Changed {
		t.Fatalf("Execute = %q, %v; want changed, nil", o, err)
	}
	want := []object{{ID: "c-own", Name: "podspawn-alice-web", Labels: f.labels(observed.RoleSession, ""), Image: "podspawn-test:busybox"}}
	if diff := cmp.Diff(want, f.docker.world().Containers); diff != "" {
		t.Fatalf("containers (-want +got):\n%s", diff)
	}
	if got := f.restarts(t).Count; got != 1 {
		t.Fatalf("restart count = %d, want 1", got)
	}

	// A new container that dies at once is still removed, as before: it
	// has no user files, and a retry starts over.
	g := newFixture(t)
	g.docker.dieOnStart = true
	if _, err := g.exec.Execute(context.Background(), g.action(reconcile.KindCreateContainer, g.sess.Spec.ContainerName)); err == nil {
		t.Fatal("creating a container that dies at once succeeded")
	}
	if w := g.docker.world(); len(w.Containers) != 0 {
		t.Fatalf("containers = %+v, want the new one removed", w.Containers)
	}
}

type lines struct {
	mu  sync.Mutex
	all []string
}

func (l *lines) add(_, args string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all = append(l.all, args)
}

// A remove-container with a log tail logs the container's last lines (its
// stdout and stderr, demultiplexed), then removes it; when the logs cannot
// be read, the removal goes ahead and the failure is logged.
func TestRemoveContainerLogsItsTail(t *testing.T) {
	f := newFixture(t)
	logs := &lines{}
	f.exec.Log = funcr.New(logs.add, funcr.Options{})
	f.stoppedOwn()
	f.docker.logs["c-own"] = "starting\nboom: cannot open /data\nexiting 3\n"
	a := f.action(reconcile.KindRemoveContainer, f.sess.Spec.ContainerName)
	a.TargetID, a.Reason, a.Detail, a.LogTail = "c-own", reconcile.ReasonCrashLoop, "container is exited (exit code 3) again after 10 restarts", 2
	o, err := f.exec.Execute(context.Background(), a)
	if err != nil || o != actions.Changed {
		t.Fatalf("Execute = %q, %v; want changed, nil", o, err)
	}
	want := []string{`"level"=0 "msg"="Last output of the container before its removal" "user"="alice" "project"="web" "container"="podspawn-alice-web" "reason"="crash-loop" ` +
		`"detail"="container is exited (exit code 3) again after 10 restarts" "output"="boom: cannot open /data\nexiting 3\n"`}
	if diff := cmp.Diff(want, logs.all); diff != "" {
		t.Fatalf("log lines (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"ContainerLogs c-own tail=2", "ContainerRemove c-own"}, f.docker.callLog()); diff != "" {
		t.Fatalf("calls (-want +got):\n%s", diff)
	}

	g := newFixture(t)
	logs = &lines{}
	g.exec.Log = funcr.New(logs.add, funcr.Options{})
	g.stoppedOwn()
	g.docker.hook = func(method, _ string) error {
		if method == "ContainerLogs" {
			return errors.New("configured logging driver does not support reading")
		}
		return nil
	}
	a.SessionID = g.sess.ID
	if o, err := g.exec.Execute(context.Background(), a); err != nil || o != actions.Changed {
		t.Fatalf("Execute with unreadable logs = %q, %v; want changed, nil", o, err)
	}
	if len(logs.all) != 1 || !strings.Contains(logs.all[0], "Cannot read the last output") || !strings.Contains(logs.all[0], "does not support reading") {
		t.Fatalf("log lines = %q, want the failure to read the logs", logs.all)
	}
	if w := g.docker.world(); len(w.Containers) != 0 {
		t.Fatalf("containers = %+v, want it removed all the same", w.Containers)
	}
}
