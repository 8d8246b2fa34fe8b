// Package proc tells whether a process is still the one that took a lease,
// by PID and start time (field 22 of /proc/PID/stat), so that a PID reused
// by another process is not mistaken for the original.
package proc

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"

	"github.com/podspawn/podspawn/observed"
)

// Root is the procfs mount; tests may point it elsewhere.
var Root = "/proc"

// StartTime returns the start time of pid in clock ticks since boot.
func StartTime(pid int) (uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("%s/%d/stat", Root, pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may contain spaces
	// and parentheses, so parse from the last ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected format of /proc/%d/stat", pid)
	}
	fields := bytes.Fields(data[i+1:])
	// fields[0] is field 3 (state); starttime is field 22.
	if len(fields) < 20 {
		return 0, fmt.Errorf("unexpected format of /proc/%d/stat", pid)
	}
	return strconv.ParseUint(string(fields[19]), 10, 64)
}

// Self returns this process's reference.
func Self() (observed.ProcessRef, error) {
	pid := os.Getpid()
	st, err := StartTime(pid)
	if err != nil {
		return observed.ProcessRef{}, fmt.Errorf("reading own start time: %w", err)
	}
	return observed.ProcessRef{PID: pid, Start: st}, nil
}

// Alive checks refs. A process whose stat cannot be read for a reason
// other than "does not exist" is reported alive: uncertainty never
// releases a lease. Zombies count as dead.
func Alive(refs []observed.ProcessRef) map[observed.ProcessRef]bool {
	out := make(map[observed.ProcessRef]bool, len(refs))
	for _, r := range refs {
		st, err := StartTime(r.PID)
		switch {
		case err == nil:
			out[r] = st == r.Start && !zombie(r.PID)
		case errors.Is(err, fs.ErrNotExist):
			out[r] = false
		default:
			out[r] = true
		}
	}
	return out
}

// Exited returns the refs whose process is known to be gone, as Alive
// decides.
func Exited(refs []observed.ProcessRef) map[observed.ProcessRef]struct{} {
	out := map[observed.ProcessRef]struct{}{}
	for r, alive := range Alive(refs) {
		if !alive {
			out[r] = struct{}{}
		}
	}
	return out
}

func zombie(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("%s/%d/stat", Root, pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(data, ')')
	return i >= 0 && i+2 < len(data) && data[i+2] == 'Z'
}
