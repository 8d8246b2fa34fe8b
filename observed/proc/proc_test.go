package proc_test

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/observed/proc"
)

const waitFor = 20 * time.Second

// naiveStartTime splits /proc/PID/stat on spaces, which is right only for
// a command name without spaces; it cross-checks the real parser.
func naiveStartTime(t *testing.T, pid int) uint64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.ParseUint(strings.Fields(string(data))[21], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func mustStartTime(t *testing.T, pid int) uint64 {
	t.Helper()
	st, err := proc.StartTime(pid)
	if err != nil {
		t.Fatalf("StartTime(%d): %v", pid, err)
	}
	return st
}

// sleeper starts bin with a long sleep and returns its process; it is
// killed and reaped at the end of the test.
func sleeper(t *testing.T, bin string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, "1000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd
}

func TestStartTimeOfSelf(t *testing.T) {
	pid := os.Getpid()
	if got, want := mustStartTime(t, pid), naiveStartTime(t, pid); got != want {
		t.Fatalf("StartTime(self) = %d, /proc/self/stat field 22 = %d", got, want)
	}
	self, err := proc.Self()
	if err != nil {
		t.Fatal(err)
	}
	if want := (observed.ProcessRef{PID: pid, Start: mustStartTime(t, pid)}); self != want {
		t.Fatalf("Self() = %+v, want %+v", self, want)
	}
}

func TestAlive(t *testing.T) {
	self, err := proc.Self()
	if err != nil {
		t.Fatal(err)
	}

	// A process that ran and was reaped: its PID no longer exists.
	gone := exec.Command("sleep", "1000")
	if err := gone.Start(); err != nil {
		t.Fatal(err)
	}
	goneRef := observed.ProcessRef{PID: gone.Process.Pid, Start: mustStartTime(t, gone.Process.Pid)}
	gone.Process.Kill()
	gone.Wait()
	ranTrue := exec.Command("true")
	if err := ranTrue.Run(); err != nil {
		t.Fatal(err)
	}

	refs := []observed.ProcessRef{
		self,
		{PID: self.PID, Start: self.Start + 1}, // the PID, reused by another process
		goneRef,
		{PID: ranTrue.Process.Pid, Start: 1},
	}
	want := map[observed.ProcessRef]bool{refs[0]: true, refs[1]: false, refs[2]: false, refs[3]: false}
	if diff := cmp.Diff(want, proc.Alive(refs)); diff != "" {
		t.Fatalf("Alive (-want +got):\n%s", diff)
	}
	if _, err := proc.StartTime(goneRef.PID); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("StartTime of a reaped process: %v, want not-exist", err)
	}
}

func TestAliveTreatsAZombieAsDead(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	pid := cmd.Process.Pid
	// Until we reap it, the exited child stays a zombie with its stat.
	ref := observed.ProcessRef{PID: pid, Start: mustStartTime(t, pid)}
	deadline := time.After(waitFor)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			t.Fatal(err)
		}
		if i := bytes.LastIndexByte(data, ')'); i > 0 && data[i+2] == 'Z' {
			break
		}
		select {
		case <-deadline:
			t.Fatal("child never became a zombie")
		case <-tick.C:
		}
	}
	if diff := cmp.Diff(map[observed.ProcessRef]bool{ref: false}, proc.Alive([]observed.ProcessRef{ref})); diff != "" {
		t.Fatalf("Alive of a zombie (-want +got):\n%s", diff)
	}
}

// TestStartTimeParsesHostileCommandNames runs sleep under names with
// spaces and parentheses, which appear verbatim in /proc/PID/stat.
func TestStartTimeParsesHostileCommandNames(t *testing.T) {
	sleepBin, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(sleepBin)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	before := sleeper(t, sleepBin)
	for _, name := range []string{"a) b", ") 1 2 3 4 5 6 7 8 9 (", "x) Z 1 (y"} {
		t.Run(name, func(t *testing.T) {
			bin := filepath.Join(dir, name)
			if err := os.WriteFile(bin, data, 0o755); err != nil {
				t.Fatal(err)
			}
			cmd := sleeper(t, bin)
			after := sleeper(t, sleepBin)
			comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", cmd.Process.Pid))
			if err != nil {
				t.Fatal(err)
			}
			if c := strings.TrimSuffix(string(comm), "\n"); !strings.HasPrefix(name, c) || !strings.Contains(c, ")") {
				t.Fatalf("the process is named %q, not a prefix of %q with a ')': the test does not exercise the parser", c, name)
			}
			st := mustStartTime(t, cmd.Process.Pid)
			// Start times are monotonic: the process started between the
			// two plain sleeps around it.
			if lo, hi := naiveStartTime(t, before.Process.Pid), naiveStartTime(t, after.Process.Pid); st < lo || st > hi {
				t.Fatalf("StartTime = %d, want between %d and %d", st, lo, hi)
			}
			ref := observed.ProcessRef{PID: cmd.Process.Pid, Start: st}
			if diff := cmp.Diff(map[observed.ProcessRef]bool{ref: true}, proc.Alive([]observed.ProcessRef{ref})); diff != "" {
				t.Fatalf("Alive (-want +got):\n%s", diff)
			}
		})
	}
}

// fakeStat renders a stat line with the given name, state and start time.
func fakeStat(pid int, name string, state byte, start uint64) string {
	f := []string{string(state), "1", "1", "1", "0", "-1", "4194560", "0", "0", "0", "0", "0", "0", "0", "0", "20", "0", "1", "0", strconv.FormatUint(start, 10), "1000", "100"}
	return fmt.Sprintf("%d (%s) %s\n", pid, name, strings.Join(f, " "))
}

// TestAliveWithAFakeProcfs covers what a live system rarely shows: stat
// files that cannot be read or parsed count as alive, because uncertainty
// must never release a lease.
func TestAliveWithAFakeProcfs(t *testing.T) {
	root := t.TempDir()
	old := proc.Root
	proc.Root = root
	t.Cleanup(func() { proc.Root = old })
	put := func(pid int, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(root, strconv.Itoa(pid)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, strconv.Itoa(pid), "stat"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	put(100, fakeStat(100, "sshd: alice [priv]", 'S', 5000))
	put(101, fakeStat(101, "x) Z (y", 'R', 6000))
	put(102, fakeStat(102, "podspawn", 'Z', 7000))
	put(103, "103 (trunc) S 1 2\n")
	put(104, "no parenthesis at all")
	if err := os.MkdirAll(filepath.Join(root, "106", "stat"), 0o755); err != nil { // unreadable as a file
		t.Fatal(err)
	}

	st, err := proc.StartTime(101)
	if err != nil || st != 6000 {
		t.Fatalf("StartTime(101) = %d, %v; want 6000", st, err)
	}
	for _, pid := range []int{103, 104} {
		if _, err := proc.StartTime(pid); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("unexpected format of /proc/%d/stat", pid)) {
			t.Errorf("StartTime(%d) error = %v, want an unexpected format error", pid, err)
		}
	}

	refs := []observed.ProcessRef{
		{PID: 100, Start: 5000}, // running, same start
		{PID: 100, Start: 4999}, // PID reused
		{PID: 101, Start: 6000}, // a ") Z (" in the name is not the state
		{PID: 102, Start: 7000}, // zombie
		{PID: 103, Start: 1},    // truncated stat: uncertain
		{PID: 104, Start: 1},    // garbage: uncertain
		{PID: 106, Start: 1},    // unreadable: uncertain
		{PID: 107, Start: 1},    // no such process
	}
	want := map[observed.ProcessRef]bool{
		refs[0]: true, refs[1]: false, refs[2]: true, refs[3]: false,
		refs[4]: true, refs[5]: true, refs[6]: true, refs[7]: false,
	}
	if diff := cmp.Diff(want, proc.Alive(refs)); diff != "" {
		t.Fatalf("Alive (-want +got):\n%s", diff)
	}
}
