package dockeract_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/desired/config"
)

// TestCreateContainerDiskLimit: a disk limit is the storage driver's size
// option; where the driver cannot apply it, defaults.disk_unsupported
// decides between refusing the container and creating it without.
func TestCreateContainerDiskLimit(t *testing.T) {
	t.Run("applied as the size option", func(t *testing.T) {
		f := newFixture(t)
		a := f.serviceAction()
		a.Container.DiskBytes = 1 << 30
		if o, err := f.exec.Execute(context.Background(), a); err != nil || o != actions.Changed {
			t.Fatalf("Execute = %q, %v; want changed, nil", o, err)
		}
		w := f.docker.world()
		if len(w.Containers) != 1 || !w.Containers[0].Running {
			t.Fatalf("containers = %+v, want one running", w.Containers)
		}
		if diff := cmp.Diff(map[string]string{"size": "1073741824"}, w.Containers[0].StorageOpt); diff != "" {
			t.Fatalf("storage options (-want +got):\n%s", diff)
		}
	})
	t.Run("no limit, no option", func(t *testing.T) {
		f := newFixture(t)
		f.docker.noStorageOpt = true
		if _, err := f.exec.Execute(context.Background(), f.serviceAction()); err != nil {
			t.Fatal(err)
		}
		if w := f.docker.world(); len(w.Containers) != 1 || w.Containers[0].StorageOpt != nil {
			t.Fatalf("containers = %+v, want one without storage options", w.Containers)
		}
	})
	for _, policy := range []string{"", config.DiskRefuse} {
		t.Run("unsupported, refuse "+policy, func(t *testing.T) {
			f := newFixture(t)
			f.docker.noStorageOpt = true
			f.exec.DiskUnsupported = policy
			a := f.serviceAction()
			a.Container.DiskBytes = 1 << 30
			before := f.docker.world()
			_, err := f.exec.Execute(context.Background(), a)
			if err == nil || !errors.Is(err, actions.ErrTerminal) || !strings.Contains(err.Error(),
				`the storage driver cannot limit the container's disk to 1073741824 bytes (defaults.disk; Docker: Error response from daemon: --storage-opt is supported only for overlay over xfs with 'pquota' mount option: invalid argument), and defaults.disk_unsupported is "refuse"`) {
				t.Fatalf("err = %v, want a terminal refusal naming the limit, Docker's reason and the config keys", err)
			}
			if diff := cmp.Diff(before, f.docker.world()); diff != "" {
				t.Fatalf("world changed (-before +after):\n%s", diff)
			}
		})
	}
	t.Run("unsupported, warn", func(t *testing.T) {
		f := newFixture(t)
		f.docker.noStorageOpt = true
		f.exec.DiskUnsupported = config.DiskWarn
		a := f.serviceAction()
		a.Container.DiskBytes = 1 << 30
		if o, err := f.exec.Execute(context.Background(), a); err != nil || o != actions.Changed {
			t.Fatalf("Execute = %q, %v; want changed, nil", o, err)
		}
		if w := f.docker.world(); len(w.Containers) != 1 || !w.Containers[0].Running || w.Containers[0].StorageOpt != nil {
			t.Fatalf("containers = %+v, want one running without the size option", w.Containers)
		}
	})
}
