package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cpuUse is CPU time (user + system) spent so far: this process's and
// the servers' (zero for a server whose pid was not given). Wall time on
// a shared machine measures the neighbours too; CPU time much less so.
type cpuUse struct{ self, apiserver, etcd time.Duration }

func (a cpuUse) sub(b cpuUse) cpuUse {
	return cpuUse{a.self - b.self, a.apiserver - b.apiserver, a.etcd - b.etcd}
}

func readCPU(o options) (cpuUse, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return cpuUse{}, fmt.Errorf("getrusage: %w", err)
	}
	u := cpuUse{self: time.Duration(ru.Utime.Nano() + ru.Stime.Nano())}
	var err error
	if u.apiserver, err = procCPU(o.apiserverPID); err != nil {
		return cpuUse{}, err
	}
	u.etcd, err = procCPU(o.etcdPID)
	return u, err
}

// userHZ is the unit of /proc/PID/stat's times: USER_HZ, 100 on Linux.
const userHZ = 100

// procCPU is the user + system time of process pid (0: none).
func procCPU(pid int) (time.Duration, error) {
	if pid == 0 {
		return 0, nil
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("reading the CPU time of process %d: %w", pid, err)
	}
	// Fields after the command name, which may hold spaces: state is
	// field 3, utime 14 and stime 15.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat has %d fields after the command, want at least 13", pid, len(f))
	}
	var ticks int64
	for _, v := range f[11:13] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}
