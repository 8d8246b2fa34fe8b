package ssh

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"

	"github.com/podspawn/podspawn/test/harness"
)

// TestFailedStartLeavesNothing runs spawn directly as root (no sshd): when
// the session cannot start (its image cannot be had), the user gets an
// error naming the cause and exit 255, and no session, lease, container
// or network is left behind to be retried with nobody waiting.
func TestFailedStartLeavesNothing(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "spawn.log")
	e := harness.NewEnv(t, harness.Options{Extra: "log:\n  file: " + logPath + "\n"})
	docker := harness.Docker(t)
	const missing = "127.0.0.1:1/podspawn-missing:latest"
	cfg, err := os.ReadFile(e.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	fixed := strings.Replace(string(cfg), "image: "+harness.Image, "image: "+missing, 1)
	if fixed == string(cfg) {
		t.Fatalf("config has no image line to replace:\n%s", cfg)
	}
	if err := os.WriteFile(e.ConfigPath, []byte(fixed), 0o644); err != nil {
		t.Fatal(err)
	}
	user := fmt.Sprintf("ssf%d", os.Getpid())
	if err := os.WriteFile(filepath.Join(e.KeyDir, user), []byte(testPubKey(t)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	r := e.RunEnv([]string{"SSH_ORIGINAL_COMMAND=echo ran"}, "", "spawn", "--user", user)
	// The user sees an incident id; the log has the cause under that id.
	m := incidentRE.FindStringSubmatch(r.Stderr)
	if r.Code != 255 || strings.Contains(r.Stdout, "ran") || m == nil || strings.Contains(r.Stderr, missing) {
		t.Fatalf("spawn with a missing image: exit %d\nstdout:\n%s\nstderr:\n%s", r.Code, r.Stdout, r.Stderr)
	}
	if log, err := os.ReadFile(logPath); err != nil || !regexp.MustCompile(m[1]+`.*starting the session of `+user+`.*`+regexp.QuoteMeta(missing)).Match(log) {
		t.Fatalf("spawn's log (%v) has no line with incident %s and the missing image:\n%s", err, m[1], log)
	}
	var rows []json.RawMessage
	if out := e.MustRun("list", "-o", "json").Stdout; json.Unmarshal([]byte(out), &rows) != nil || len(rows) != 0 {
		t.Fatalf("sessions left after a failed start: %s", out)
	}
	f := labelFilter("podspawn.instance=" + e.InstanceID())
	ctrs, err := docker.ContainerList(context.Background(), container.ListOptions{All: true, Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	nets, err := docker.NetworkList(context.Background(), network.ListOptions{Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	if len(ctrs) != 0 || len(nets) != 0 {
		t.Fatalf("left behind: %d containers, %d networks", len(ctrs), len(nets))
	}
}

// TestFailedNetworkLeavesNoContainer: a new session's container is created
// while its network is; when the network cannot be had (a network of that
// name that podspawn does not own), the session fails with the reason and
// the container made meanwhile goes with the rest of the attempt, while
// the foreign network is left alone.
func TestFailedNetworkLeavesNoContainer(t *testing.T) {
	e := harness.NewEnv(t, harness.Options{})
	docker := harness.Docker(t)
	ctx := context.Background()
	user := fmt.Sprintf("ssn%d", os.Getpid())
	if err := os.WriteFile(filepath.Join(e.KeyDir, user), []byte(testPubKey(t)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	netName := "podspawn-" + user + "-net"
	created, err := docker.NetworkCreate(ctx, netName, network.CreateOptions{Driver: "bridge"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { docker.NetworkRemove(context.Background(), created.ID) })

	r := e.RunEnv([]string{"SSH_ORIGINAL_COMMAND=echo ran"}, "", "spawn", "--user", user)
	if r.Code != 255 || strings.Contains(r.Stdout, "ran") {
		t.Fatalf("spawn with a foreign network in the way: exit %d\nstdout:\n%s\nstderr:\n%s", r.Code, r.Stdout, r.Stderr)
	}
	f := labelFilter("podspawn.instance=" + e.InstanceID())
	ctrs, err := docker.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	if len(ctrs) != 0 {
		t.Fatalf("left behind: %d containers (%v)", len(ctrs), ctrs[0].Names)
	}
	var rows []json.RawMessage
	if out := e.MustRun("list", "-o", "json").Stdout; json.Unmarshal([]byte(out), &rows) != nil || len(rows) != 0 {
		t.Fatalf("sessions left after a failed start: %s", out)
	}
	if _, err := docker.NetworkInspect(ctx, created.ID, network.InspectOptions{}); err != nil {
		t.Fatalf("the foreign network: %v, want it left alone", err)
	}
}
