package dockerobs

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestOperation(t *testing.T) {
	for _, tc := range []struct{ method, path, want string }{
		{"GET", "/v1.47/containers/json", "containers.list"},
		{"POST", "/v1.47/containers/create", "containers.create"},
		{"GET", "/v1.47/containers/0123abcd/json", "containers.inspect"},
		{"DELETE", "/v1.47/containers/0123abcd", "containers.delete"},
		{"POST", "/v1.47/containers/podspawn-alice-web/start", "containers.start"},
		{"POST", "/v1.47/containers/0123abcd/kill", "containers.kill"},
		{"POST", "/v1.47/containers/0123abcd/exec", "containers.exec"},
		{"GET", "/v1.47/containers/0123abcd/something-new", "containers.other"},
		{"POST", "/v1.47/exec/feed/start", "exec.start"},
		{"GET", "/v1.47/networks", "networks.list"},
		{"POST", "/v1.47/networks/create", "networks.create"},
		{"GET", "/v1.47/networks/podspawn-alice-web-net", "networks.inspect"},
		{"DELETE", "/v1.47/networks/abc", "networks.delete"},
		{"POST", "/v1.47/networks/abc/disconnect", "networks.disconnect"},
		{"GET", "/v1.47/volumes", "volumes.list"},
		{"DELETE", "/v1.47/volumes/podspawn-alice-home", "volumes.delete"},
		{"GET", "/v1.47/images/registry.example/team/img:1/json", "images.inspect"},
		{"DELETE", "/v1.47/images/registry.example/team/img:1", "images.delete"},
		{"POST", "/v1.47/images/create", "images.create"},
		{"GET", "/v1.47/events", "events"},
		{"HEAD", "/_ping", "ping"},
		{"GET", "/v1.47/version", "version"},
		{"GET", "/v1.47/info", "info"},
		{"GET", "/v1.47/swarm", "other"},
		{"GET", "/", "other"},
	} {
		if got := Operation(tc.method, tc.path); got != tc.want {
			t.Errorf("Operation(%s %s) = %q, want %q", tc.method, tc.path, got, tc.want)
		}
	}
}

// The instrumented client reaches the daemon DOCKER_HOST names and times
// each request under its operation.
func TestInstrumentedClient(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Api-Version", "1.45")
		switch {
		case strings.HasSuffix(r.URL.Path, "/_ping"):
			w.Write([]byte("OK"))
		case strings.HasSuffix(r.URL.Path, "/containers/json"):
			w.Write([]byte(`[{"Id":"abc","Names":["/x"],"Labels":{"managed-by":"podspawn"}}]`))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	t.Setenv("DOCKER_HOST", "tcp://"+strings.TrimPrefix(srv.URL, "http://"))
	var mu sync.Mutex
	var ops []string
	c, err := NewInstrumentedClient(func(op string, d time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		ops = append(ops, op)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	n, err := CountContainers(context.Background(), c)
	if err != nil || n != 1 {
		t.Fatalf("CountContainers = %d, %v; want 1", n, err)
	}
	if _, err := c.ContainerInspect(context.Background(), "0123abcd"); err == nil {
		t.Fatal("inspect of a missing container succeeded")
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"ping", "containers.list", "containers.inspect"}
	if diff := cmp.Diff(want, ops); diff != "" {
		t.Errorf("operations (-want +got):\n%s", diff)
	}
}
