package dockeract_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/docker/docker/api/types/network"
	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/reconcile"
)

// fakeFirewall records Ensure calls between the Docker calls it sees.
type fakeFirewall struct {
	mu     sync.Mutex
	docker *fakeDocker
	err    error
	calls  int
}

func (f *fakeFirewall) Ensure(context.Context) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	f.docker.enter("HostFirewall.Ensure", "")
	return nil, f.err
}

// optsDocker records the options networks are created with.
type optsDocker struct {
	*fakeDocker
	opts map[string]network.CreateOptions
}

func (d *optsDocker) NetworkCreate(ctx context.Context, name string, o network.CreateOptions) (network.CreateResponse, error) {
	d.opts[name] = o
	return d.fakeDocker.NetworkCreate(ctx, name, o)
}

// A session network's bridge is named psp<hash of the name>, which the
// host access rules match; the same name gives the same bridge.
func TestSessionNetworkBridgeName(t *testing.T) {
	f := newFixture(t)
	d := &optsDocker{fakeDocker: f.docker, opts: map[string]network.CreateOptions{}}
	f.exec.API = d
	if _, err := f.exec.Execute(context.Background(), f.action(reconcile.KindCreateNetwork, "podspawn-alice-web-net")); err != nil {
		t.Fatal(err)
	}
	// sha256("podspawn-alice-web-net")[:12]
	want := map[string]string{"com.docker.network.bridge.name": "psp42d7851b2a21"}
	if diff := cmp.Diff(want, d.opts["podspawn-alice-web-net"].Options); diff != "" {
		t.Errorf("network options (-want +got):\n%s", diff)
	}
	if o := d.opts["podspawn-alice-web-net"]; o.Driver != "bridge" || o.Labels == nil {
		t.Errorf("network create options: %+v", o)
	}
}

// The rules are ensured before the network and before every container,
// and not for removals.
func TestHostFirewallEnsuredBeforeCreation(t *testing.T) {
	f := newFixture(t)
	fw := &fakeFirewall{docker: f.docker}
	f.exec.HostFirewall = fw
	ctx := context.Background()
	for _, a := range []reconcile.Action{
		f.action(reconcile.KindCreateNetwork, f.sess.Spec.NetworkName),
		f.action(reconcile.KindCreateContainer, f.sess.Spec.ContainerName),
		f.action(reconcile.KindRemoveContainer, f.sess.Spec.ContainerName),
		f.action(reconcile.KindRemoveNetwork, f.sess.Spec.NetworkName),
	} {
		if _, err := f.exec.Execute(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for _, c := range f.docker.callLog() {
		if c == "HostFirewall.Ensure " || strings.HasPrefix(c, "NetworkCreate ") || strings.HasPrefix(c, "ContainerCreate ") ||
			strings.HasPrefix(c, "ContainerRemove ") || strings.HasPrefix(c, "NetworkRemove ") {
			got = append(got, c)
		}
	}
	want := []string{
		"HostFirewall.Ensure ", "NetworkCreate podspawn-alice-web-net",
		"HostFirewall.Ensure ", "ContainerCreate podspawn-alice-web",
		"ContainerRemove podspawn-alice-web", "NetworkRemove podspawn-alice-web-net",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
}

// Without the rules nothing of the session is created.
func TestHostFirewallFailureCreatesNothing(t *testing.T) {
	f := newFixture(t)
	f.exec.HostFirewall = &fakeFirewall{docker: f.docker, err: errors.New("iptables is not installed")}
	ctx := context.Background()
	for _, a := range []reconcile.Action{
		f.action(reconcile.KindCreateNetwork, f.sess.Spec.NetworkName),
		f.action(reconcile.KindCreateContainer, f.sess.Spec.ContainerName),
	} {
		_, err := f.exec.Execute(ctx, a)
		want := string(a.Kind) + " " + a.Target + ": host access rules (security.block_host_access): iptables is not installed"
		if err == nil || err.Error() != want {
			t.Errorf("error = %v, want %q", err, want)
		}
	}
	if w := f.docker.world(); len(w.Networks) != 0 || len(w.Containers) != 0 {
		t.Errorf("created %+v", w)
	}
}
