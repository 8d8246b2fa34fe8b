package controller

import (
	"testing"

	"github.com/go-logr/logr/funcr"
	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/reconcile"
)

// A session container the kubelet restarts is reported once per change of
// what the plan says of it, whatever the number of passes, and again if
// it comes back after a pass without it.
func TestRuntimeRestartsReportedOncePerChange(t *testing.T) {
	var logged []string
	c := &Controller{Log: funcr.New(func(_, args string) { logged = append(logged, args) }, funcr.Options{})}
	k := desired.SessionKey{User: "alice"}
	other := desired.SessionKey{User: "bob"}
	skip := func(d string) []reconcile.Skip {
		return []reconcile.Skip{{Key: k, Target: "podspawn-alice", Reason: reconcile.ReasonRuntimeRestarting, Detail: d},
			{Key: k, Target: "x", Reason: reconcile.ReasonProtected, Detail: "kept"}}
	}
	for _, pass := range [][]reconcile.Skip{skip("3 restarts"), skip("3 restarts"), skip("3 restarts"), skip("4 restarts"), skip("4 restarts"), nil, skip("4 restarts")} {
		c.reportRuntimeRestarts(k, pass)
		c.reportRuntimeRestarts(other, nil)
	}
	line := func(d string) string {
		return `"level"=0 "msg"="Session container is being restarted by the runtime" "user"="alice" "project"="" "container"="podspawn-alice" "reason"="runtime-restarting" "detail"="` + d + `"`
	}
	if diff := cmp.Diff([]string{line("3 restarts"), line("4 restarts"), line("4 restarts")}, logged); diff != "" {
		t.Fatalf("logged (-want +got):\n%s", diff)
	}
}
