package spawn

import (
	"context"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestWatchHangup: the connection's context ends when the reader of our
// stdout goes away (sshd closing its end of the pipe or socket), and not
// while it is there.
func TestWatchHangup(t *testing.T) {
	pipe := func(t *testing.T) (w *os.File, closeReader func()) {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { w.Close() })
		return w, func() { r.Close() }
	}
	socket := func(t *testing.T) (w *os.File, closeReader func()) {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
		if err != nil {
			t.Fatal(err)
		}
		w = os.NewFile(uintptr(fds[0]), "ours")
		peer := os.NewFile(uintptr(fds[1]), "peer")
		t.Cleanup(func() { w.Close() })
		return w, func() { peer.Close() }
	}
	for name, mk := range map[string]func(*testing.T) (*os.File, func()){"pipe": pipe, "socket": socket} {
		t.Run(name, func(t *testing.T) {
			w, closeReader := mk(t)
			ctx, stop := WatchHangup(context.Background(), w)
			defer stop()
			if _, err := w.Write([]byte("still connected\n")); err != nil {
				t.Fatal(err)
			}
			if ctx.Err() != nil {
				t.Fatal("context ended while the reader is still there")
			}
			closeReader()
			select {
			case <-ctx.Done():
			case <-time.After(time.Minute):
				t.Fatal("context did not end after the reader went away")
			}
			if got := context.Cause(ctx).Error(); got != "the client closed the connection" {
				t.Fatalf("cause = %q", got)
			}
		})
	}
	t.Run("not a pipe", func(t *testing.T) {
		f, err := os.Create(t.TempDir() + "/out")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		ctx, stop := WatchHangup(context.Background(), f)
		stop()
		if context.Cause(ctx) != context.Canceled {
			t.Fatalf("a regular file is not watched; stop should cancel plainly, cause %v", context.Cause(ctx))
		}
	})
}
