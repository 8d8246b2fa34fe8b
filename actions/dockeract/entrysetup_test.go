package dockeract_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/google/go-cmp/cmp"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/reconcile"
)

func (f *fakeDocker) ImageInspect(_ context.Context, ref string, _ ...client.ImageInspectOption) (image.InspectResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("ImageInspect", ref); err != nil {
		return image.InspectResponse{}, err
	}
	if !f.images[ref] {
		return image.InspectResponse{}, notFound("image", ref)
	}
	cfg := f.imageConfigs[ref]
	if cfg == nil {
		cfg = &dockerspec.DockerOCIImageConfig{}
	}
	return image.InspectResponse{ID: "sha256:" + ref, Config: cfg}, nil
}

// ContainerAttach streams what the container writes from its start on
// (see runEntrySetup), multiplexed as for a container without a TTY.
func (f *fakeDocker) ContainerAttach(_ context.Context, id string, _ container.AttachOptions) (types.HijackedResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("ContainerAttach", id); err != nil {
		return types.HijackedResponse{}, err
	}
	o := find(f.containers, id)
	if o == nil {
		return types.HijackedResponse{}, notFound("container", id)
	}
	pr, pw := io.Pipe()
	f.attached[o.ID] = pw
	conn, peer := net.Pipe()
	peer.Close()
	return types.HijackedResponse{Conn: conn, Reader: bufio.NewReader(pr)}, nil
}

// isEntrySetup reports whether cmd is the account setup run as the
// container's command (dockeract's entrySetupArgv).
func isEntrySetup(cmd []string) bool {
	return len(cmd) > 5 && cmd[0] == "sh" && cmd[1] == "-c" && cmd[3] == "podspawn-setup"
}

// runEntrySetup plays a started container's command: one that sets up
// the account writes "uid gid" and runs on, or, with execExit set, writes
// execOutput on stderr and exits; one that dies on start writes nothing.
// Callers hold f.mu.
func (f *fakeDocker) runEntrySetup(o *object) {
	cmd := f.cmds[o.ID]
	if isEntrySetup(cmd) {
		f.ran = append(f.ran, execRun{Container: o.Name, User: "(command)", Cmd: cmd[3:6]})
	}
	pw := f.attached[o.ID]
	if pw == nil {
		return
	}
	delete(f.attached, o.ID)
	switch {
	case f.dieOnStart || !isEntrySetup(cmd):
		pw.Close()
	case f.execExit != 0:
		o.Running, f.exits[o.ID] = false, f.execExit
		out := f.execOutput
		go func() {
			stdcopy.NewStdWriter(pw, stdcopy.Stderr).Write([]byte(out))
			pw.Close()
		}()
	default:
		go stdcopy.NewStdWriter(pw, stdcopy.Stdout).Write([]byte("1000 1000\n"))
	}
}

// A session container of an image without an entrypoint, run as root,
// sets up its account as its own command: no exec after the start, and
// the image's command runs after the setup.
func TestCreateContainerSetsUpTheAccountAtItsStart(t *testing.T) {
	f := newFixture(t)
	o, err := f.exec.Execute(context.Background(), f.action(reconcile.KindCreateContainer, f.sess.Spec.ContainerName))
	if err != nil || o != actions.Changed {
		t.Fatalf("Execute = %q, %v; want changed, nil", o, err)
	}
	want := []execRun{{Container: "podspawn-alice-web", User: "(command)", Cmd: []string{"podspawn-setup", "alice", "/bin/sh"}}}
	if diff := cmp.Diff(want, f.docker.execsRun()); diff != "" {
		t.Fatalf("setups (-want +got):\n%s", diff)
	}
	cmd := f.docker.cmds[f.docker.world().Containers[0].ID]
	if !cmp.Equal(cmd[len(cmd)-2:], []string{"sleep", "infinity"}) || !strings.Contains(cmd[2], `exec "$cmd" "$@"`) {
		t.Fatalf("command = %q, want the setup, then the image's command", cmd)
	}
	calls := f.docker.callLog()
	attach, start := -1, -1
	for i, c := range calls {
		switch {
		case strings.HasPrefix(c, "ContainerAttach "):
			attach = i
		case strings.HasPrefix(c, "ContainerStart "):
			start = i
		}
	}
	if attach < 0 || attach > start {
		t.Fatalf("calls = %q, want the attach before the start (the setup's line is read from its output)", calls)
	}
}

// The exec after the start stays for what the container's command cannot
// do: an image with an entrypoint or another user (the command would
// change), a persistent home (checked before the setup writes to it).
func TestCreateContainerSetupByExec(t *testing.T) {
	for name, tc := range map[string]struct {
		image *dockerspec.DockerOCIImageConfig
		home  bool
	}{
		"entrypoint":      {image: &dockerspec.DockerOCIImageConfig{ImageConfig: ocispec.ImageConfig{Entrypoint: []string{"/init"}}}},
		"non-root user":   {image: &dockerspec.DockerOCIImageConfig{ImageConfig: ocispec.ImageConfig{User: "app"}}},
		"persistent home": {home: true},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			f.docker.imageConfigs["podspawn-test:busybox"] = tc.image
			a := f.action(reconcile.KindCreateContainer, f.sess.Spec.ContainerName)
			if tc.home {
				f.exec.HomesDir = t.TempDir()
				a.Container.Mounts = append(a.Container.Mounts, desired.Mount{Source: f.exec.HomesDir + "/alice", Target: "/home/alice", Prepare: desired.PrepareHome})
				// The fake has no process whose root holds the mount.
				f.docker.hook = func(method, _ string) error {
					if method == "ContainerExecCreate" {
						t.Fatal("the setup ran before the home mount was checked")
					}
					return nil
				}
			}
			_, err := f.exec.Execute(context.Background(), a)
			if tc.home {
				if err == nil || !strings.Contains(err.Error(), "checking the home mount") {
					t.Fatalf("err = %v, want the home mount checked before any setup", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			runs := f.docker.execsRun()
			if len(runs) != 1 || runs[0].User != "root" || !cmp.Equal(runs[0].Cmd[len(runs[0].Cmd)-3:], []string{"podspawn-setup", "alice", "/bin/sh"}) {
				t.Fatalf("runs = %+v, want the setup by exec as root", runs)
			}
			if cmd := f.docker.cmds[f.docker.world().Containers[0].ID]; !cmp.Equal(cmd, []string{"sleep", "infinity"}) {
				t.Fatalf("command = %q, want the image's own", cmd)
			}
		})
	}
}

// A stopped container whose command sets up the account is started the
// same way when adopted: its setup is waited for, not run a second time
// by an exec beside it.
func TestCreateAdoptsAStoppedContainerWithItsSetup(t *testing.T) {
	f := newFixture(t)
	a := f.action(reconcile.KindCreateContainer, f.sess.Spec.ContainerName)
	f.docker.hook = func(method, _ string) error {
		if method == "ContainerStart" {
			return errStartOnce
		}
		return nil
	}
	if _, err := f.exec.Execute(context.Background(), a); err == nil {
		t.Fatal("the first start did not fail")
	}
	f.docker.hook = nil
	o, err := f.exec.Execute(context.Background(), a)
	if err != nil || o != actions.Changed {
		t.Fatalf("Execute = %q, %v; want changed, nil", o, err)
	}
	want := []execRun{{Container: "podspawn-alice-web", User: "(command)", Cmd: []string{"podspawn-setup", "alice", "/bin/sh"}}}
	if diff := cmp.Diff(want, f.docker.execsRun()); diff != "" {
		t.Fatalf("setups (-want +got):\n%s", diff)
	}
	if w := f.docker.world(); len(w.Containers) != 1 || !w.Containers[0].Running {
		t.Fatalf("containers = %+v, want the adopted one running", w.Containers)
	}
}

var errStartOnce = errors.New("Error response from daemon: start failed once")
