package ssh

import (
	"regexp"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/test/harness"
)

// containerInspect is the Docker API path of a container inspect.
var containerInspect = regexp.MustCompile(`^GET /containers/[^/]+/json$`)

// TestReattachObservesOnce: a login to a running session observes the
// key's objects once: one list per kind, and one inspect of the session
// container (a key's observation reads each container's own state, see
// dockerobs.ListKey). The attach-or-replace decision, the reconcile after
// the lease is written and the check that the container runs all use that
// one observation. The disconnect observes once more for its reconcile.
func TestReattachObservesOnce(t *testing.T) {
	proxy := harness.NewScopeProxy(t)
	s := newServer(t, serverOptions{Users: []string{"sso"}, SpawnEnv: []string{"DOCKER_HOST=" + proxy.Host()}})
	proxy.AddInstance(s.Env.InstanceID())
	u := s.user("sso")
	if r := s.runSSH(u, nil, "", "true"); r.Code != 0 {
		t.Fatalf("first login: exit %d\n%s", r.Code, r.Stderr)
	}
	proxy.ResetCounts()
	if r := s.runSSH(u, nil, "", "true"); r.Code != 0 {
		t.Fatalf("re-attach: exit %d\n%s", r.Code, r.Stderr)
	}
	got := map[string]int{}
	for call, n := range proxy.Counts() {
		switch {
		case call == "GET /containers/json" || call == "GET /networks" || call == "GET /volumes":
			got[call] += n
		case containerInspect.MatchString(call):
			got["container inspects"] += n
		}
	}
	want := map[string]int{"GET /containers/json": 2, "GET /networks": 2, "GET /volumes": 2, "container inspects": 2}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("observation calls of a re-attach and its disconnect (-want +got):\n%s\nall calls: %v", diff, proxy.Counts())
	}
}
