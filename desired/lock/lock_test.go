package lock_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/podspawn/podspawn/desired/lock"
)

// A helper process runs one of these modes, selected by environment, on
// the lock directory and name it is given.
const (
	envMode = "PODSPAWN_LOCK_TEST_MODE"
	envDir  = "PODSPAWN_LOCK_TEST_DIR"
	envName = "PODSPAWN_LOCK_TEST_NAME"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(envMode); mode != "" {
		os.Exit(helper(mode, os.Getenv(envDir), os.Getenv(envName)))
	}
	os.Exit(m.Run())
}

// helper: "hold" takes the lock, says "locked" and releases it when stdin
// closes; "try" tries for 100ms and reports what happened.
func helper(mode, dir, name string) int {
	switch mode {
	case "hold":
		l, err := lock.Acquire(context.Background(), dir, name)
		if err != nil {
			fmt.Println("error:", err)
			return 1
		}
		fmt.Println("locked")
		io.Copy(io.Discard, os.Stdin)
		l.Unlock()
		return 0
	case "try":
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		l, err := lock.Acquire(ctx, dir, name)
		if err != nil {
			fmt.Println("error:", err)
			return 3
		}
		l.Unlock()
		fmt.Println("acquired")
		return 0
	}
	return 2
}

// waitFor bounds waits on other processes and goroutines.
const waitFor = 20 * time.Second

type holder struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
}

// hold starts a helper process holding the lock and waits until it has it.
func hold(t *testing.T, dir, name string) *holder {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envMode+"=hold", envDir+"="+dir, envName+"="+name)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- strings.TrimSpace(s)
		io.Copy(io.Discard, stdout)
	}()
	select {
	case l := <-line:
		if l != "locked" {
			t.Fatalf("helper said %q, want locked", l)
		}
	case <-time.After(waitFor):
		t.Fatal("helper never took the lock")
	}
	return &holder{cmd: cmd, stdin: stdin}
}

// release makes the helper unlock and exit, and waits for it.
func (h *holder) release(t *testing.T) {
	t.Helper()
	h.stdin.Close()
	if err := h.cmd.Wait(); err != nil {
		t.Fatalf("helper: %v", err)
	}
}

func acquire(t *testing.T, dir, name string) *lock.Lock {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	l, err := lock.Acquire(ctx, dir, name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func tryFor(dir, name string, d time.Duration) (*lock.Lock, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return lock.Acquire(ctx, dir, name)
}

func TestMutualExclusionAcrossGoroutines(t *testing.T) {
	dir := t.TempDir()
	var (
		inside, maxInside, total atomic.Int32
		wg                       sync.WaitGroup
		errs                     = make(chan error, 16)
	)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				l, err := lock.Acquire(context.Background(), dir, "alice")
				if err != nil {
					errs <- err
					return
				}
				n := inside.Add(1)
				for {
					m := maxInside.Load()
					if n <= m || maxInside.CompareAndSwap(m, n) {
						break
					}
				}
				total.Add(1)
				for range 20 {
					runtime.Gosched() // widen the window an overlap would need
				}
				inside.Add(-1)
				l.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if m := maxInside.Load(); m != 1 {
		t.Fatalf("%d goroutines held the lock at once", m)
	}
	if n := total.Load(); n != 16*20 {
		t.Fatalf("%d critical sections ran, want %d", n, 16*20)
	}
}

func TestLocksOfDifferentNamesAreIndependent(t *testing.T) {
	dir := t.TempDir()
	a := acquire(t, dir, "alice")
	defer a.Unlock()
	b, err := tryFor(dir, "bob", 5*time.Second)
	if err != nil {
		t.Fatalf("bob's lock waited on alice's: %v", err)
	}
	b.Unlock()
}

func TestMutualExclusionAcrossProcesses(t *testing.T) {
	dir := t.TempDir()

	h := hold(t, dir, "alice")
	if l, err := tryFor(dir, "alice", 100*time.Millisecond); err == nil {
		l.Unlock()
		t.Fatal("took the lock while another process held it")
	} else if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want a deadline error", err)
	}
	h.release(t)
	l := acquire(t, dir, "alice")

	// And the other way round: a process cannot take it from us.
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envMode+"=try", envDir+"="+dir, envName+"=alice")
	out, err := cmd.Output()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 3 || !strings.Contains(string(out), "acquiring lock for alice: context deadline exceeded") {
		t.Fatalf("helper while we hold the lock: %v, %q; want it to time out", err, out)
	}
	l.Unlock()
	cmd = exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envMode+"=try", envDir+"="+dir, envName+"=alice")
	if out, err := cmd.Output(); err != nil || strings.TrimSpace(string(out)) != "acquired" {
		t.Fatalf("helper after we released: %v, %q; want acquired", err, out)
	}
}

func TestLockIsReleasedWhenItsHolderDies(t *testing.T) {
	dir := t.TempDir()
	h := hold(t, dir, "alice")
	if err := h.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	h.cmd.Wait()
	acquire(t, dir, "alice").Unlock()
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestAcquireGivesUpWithTheContext(t *testing.T) {
	dir := t.TempDir()
	held := acquire(t, dir, "alice")
	defer held.Unlock()

	l, err := tryFor(dir, "alice", 50*time.Millisecond)
	if l != nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "acquiring lock for alice") {
		t.Fatalf("Acquire with a deadline = %v, %v; want a deadline error naming the lock", l, err)
	}
	// Counted after one failed attempt, so lazily opened runtime
	// descriptors are not mistaken for a leak.
	before := openFDs(t)

	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() {
		l, err := lock.Acquire(ctx, dir, "alice")
		if l != nil {
			l.Unlock()
		}
		res <- err
	}()
	cancel()
	select {
	case err := <-res:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Acquire after cancel: %v, want context.Canceled", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Acquire did not return after its context was cancelled")
	}

	for range 20 {
		if _, err := tryFor(dir, "alice", time.Millisecond); err == nil {
			t.Fatal("took a held lock")
		}
	}
	if after := openFDs(t); after != before {
		t.Fatalf("open descriptors went from %d to %d: a failed Acquire leaks its file", before, after)
	}
}

func TestLockFileIsNeverRemoved(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "locks", "nested")
	path := filepath.Join(dir, "alice.lock")
	ino := func() uint64 {
		t.Helper()
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatalf("lock file: %v", err)
		}
		return fi.Sys().(*syscall.Stat_t).Ino
	}
	l := acquire(t, dir, "alice")
	first := ino()
	l.Unlock()
	if got := ino(); got != first {
		t.Fatalf("lock file replaced after Unlock (inode %d, then %d)", first, got)
	}
	h := hold(t, dir, "alice")
	h.release(t)
	acquire(t, dir, "alice").Unlock()
	if got := ino(); got != first {
		t.Fatalf("lock file replaced by another holder (inode %d, then %d)", first, got)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("lock file mode %v, want 0600", fi.Mode().Perm())
	}
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o700 {
		t.Fatalf("lock directory mode %v, want 0700", di.Mode().Perm())
	}
}

func TestUnlockIsSafeOnNilAndTwice(t *testing.T) {
	var nilLock *lock.Lock
	nilLock.Unlock()
	l := acquire(t, t.TempDir(), "alice")
	l.Unlock()
	l.Unlock()
}

func TestAcquireReportsAnUnusableDirectory(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := tryFor(filepath.Join(file, "locks"), "alice", time.Second)
	if l != nil || err == nil || !strings.Contains(err.Error(), "acquiring lock for alice") {
		t.Fatalf("Acquire under a file = %v, %v; want an error naming the lock", l, err)
	}
}
