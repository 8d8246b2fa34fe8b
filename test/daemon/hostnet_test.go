package daemon_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/network"

	"github.com/podspawn/podspawn/test/harness"
)

// The private dockerd leaves the host's network alone: its bridges are not
// the host's links, and once it has run and stopped, the host's docker0 is
// still there and the host's dockerd still runs a container on its default
// network. (Sharing the host's namespace, dockerd --bridge=none deleted
// docker0 at start.)
func TestPrivateDockerdLeavesHostNetworkAlone(t *testing.T) {
	if !hostBridgeBefore {
		t.Fatalf("the host had no %s before this package started a dockerd, so whether it survives cannot be checked; "+
			"restart the host's Docker to recreate it", hostBridge)
	}
	dc := privateDockerd.use(t)
	ctx := context.Background()
	name := uniq("dmhostnet-")
	n, err := dc.NetworkCreate(ctx, name, network.CreateOptions{Driver: "bridge"})
	if err != nil {
		t.Fatal(err)
	}
	// libnetwork's name for the bridge of a network without a bridge.name option.
	bridge := "br-" + n.ID[:12]
	if _, err := net.InterfaceByName(bridge); err == nil {
		t.Errorf("the private dockerd's network %s made bridge %s in the host's network namespace", name, bridge)
	}
	if err := dc.NetworkRemove(ctx, n.ID); err != nil {
		t.Fatal(err)
	}

	privateDockerd.stop(t)
	if _, err := net.InterfaceByName(hostBridge); err != nil {
		t.Errorf("the host's %s is gone after the private dockerd ran: %v", hostBridge, err)
	}
	hostDockerRunOnDefaultBridge(t)
	// Later tests start it again through use(); shutdown does in any case.
}

// hostDockerRunOnDefaultBridge runs `docker run --rm` of the test image on
// the host dockerd's default network, as a user of the machine would.
func hostDockerRunOnDefaultBridge(t *testing.T) {
	t.Helper()
	env := hostDockerEnv()
	// The image is FROM scratch and builds offline; a no-op when up to date.
	build := exec.Command("bash", filepath.Join(harness.RepoRoot(), "hack", "build-test-image.sh"), harness.Image)
	build.Env = env
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building %s on the host's dockerd: %v\n%s", harness.Image, err, out)
	}
	run := exec.Command("docker", "run", "--rm", "--network", "bridge", harness.Image, "true")
	run.Env = env
	if out, err := run.CombinedOutput(); err != nil {
		t.Errorf("docker run --rm on the host's default network: %v\n%s", err, out)
	}
}

// hostDockerEnv is this process's environment with the host dockerd's
// DOCKER_HOST instead of the private one.
func hostDockerEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DOCKER_HOST=") {
			env = append(env, kv)
		}
	}
	if hostDockerHost != "" {
		env = append(env, "DOCKER_HOST="+hostDockerHost)
	}
	return env
}
