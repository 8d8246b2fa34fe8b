package core_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/test/harness"
)

// member is one session's pair of hand-made objects.
type member struct {
	Key                    desired.SessionKey
	ContainerID, NetworkID string
}

// subnetBlock hands out /26 blocks of 10.213.0.0/16. Networks are given
// explicit subnets because Docker's default address pools hold only about
// 30 bridge networks, far fewer than the fleets here.
var subnetBlock atomic.Int64

func nextSubnet() (string, bool) {
	i := subnetBlock.Add(1) - 1
	if i >= 1024 {
		return "", false
	}
	return fmt.Sprintf("10.213.%d.%d/26", i/4, (i%4)*64), true
}

// fleetKeys returns n session keys: users with perUser projects each.
func fleetKeys(prefix string, n, perUser int) []desired.SessionKey {
	base := harness.Uniq(prefix)
	keys := make([]desired.SessionKey, n)
	for i := range keys {
		keys[i] = desired.SessionKey{User: fmt.Sprintf("%s-%03d", base, i/perUser), Project: fmt.Sprintf("p%d", i%perUser)}
	}
	return keys
}

// makeFleet creates, 8 at a time, a network and a running busybox
// container attached to it for every key, named as podspawn names a
// session's objects and labelled by labels(i). Everything is removed at
// test end, also 8 at a time (before the harness's sequential sweep).
func (e *coreEnv) makeFleet(keys []desired.SessionKey, labels func(i int) map[string]string) []member {
	e.t.Helper()
	ctx := context.Background()
	out := make([]member, len(keys))
	e.t.Cleanup(func() { e.removeFleet(out) })
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	jobs := make(chan int)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				if err := e.makeMember(ctx, keys[i], labels(i), &out[i]); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := range keys {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		e.t.Fatalf("creating the fleet: %v", firstErr)
	}
	for _, m := range out {
		e.Proxy.Allow(m.ContainerID, m.NetworkID)
	}
	return out
}

func (e *coreEnv) makeMember(ctx context.Context, key desired.SessionKey, labels map[string]string, m *member) error {
	m.Key = key
	netName := desired.NetworkName(key)
	for {
		subnet, ok := nextSubnet()
		if !ok {
			return fmt.Errorf("no free /26 left in 10.213.0.0/16 for %s", netName)
		}
		n, err := e.Docker.NetworkCreate(ctx, netName, network.CreateOptions{Driver: "bridge", Labels: labels,
			IPAM: &network.IPAM{Config: []network.IPAMConfig{{Subnet: subnet}}}})
		if err == nil {
			m.NetworkID = n.ID
			break
		}
		// A block taken by something else on this daemon: try the next one.
		if !strings.Contains(err.Error(), "overlaps") {
			return fmt.Errorf("creating network %s: %w", netName, err)
		}
	}
	c, err := e.Docker.ContainerCreate(ctx, &container.Config{Image: harness.Image, Cmd: []string{"sleep", "infinity"}, Labels: labels},
		&container.HostConfig{NetworkMode: container.NetworkMode(netName)}, nil, nil, desired.ContainerName(key))
	if err != nil {
		return fmt.Errorf("creating container %s: %w", desired.ContainerName(key), err)
	}
	m.ContainerID = c.ID
	if err := e.Docker.ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
		return fmt.Errorf("starting container %s: %w", desired.ContainerName(key), err)
	}
	return nil
}

func (e *coreEnv) removeFleet(ms []member) {
	ctx := context.Background()
	var wg sync.WaitGroup
	jobs := make(chan member)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range jobs {
				if m.ContainerID != "" {
					e.Docker.ContainerRemove(ctx, m.ContainerID, container.RemoveOptions{Force: true})
				}
				if m.NetworkID != "" {
					e.Docker.NetworkRemove(ctx, m.NetworkID)
				}
			}
		}()
	}
	for _, m := range ms {
		jobs <- m
	}
	close(jobs)
	wg.Wait()
}

// envInt reads a positive integer setting, or def.
func envInt(t testing.TB, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("invalid %s=%q: must be a positive integer", name, v)
	}
	return n
}
