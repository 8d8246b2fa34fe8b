package controller

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/sqlstore"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/observed/proc"
)

// procWatcher notices when the process behind a lease exits, so a crashed
// or killed connection gets its grace period within moments instead of at
// the next resync. It waits on a pidfd per lease in Go's poller (a parked
// goroutine, no thread, no polling); where pidfds are unavailable it falls
// back to checking /proc on every database poll.
type procWatcher struct {
	log    logr.Logger
	notify func(desired.SessionKey)

	mu      sync.Mutex
	watched map[int64]*os.File
	polled  map[int64]sqlstore.LeaseRef
	dead    map[int64]bool
	closed  bool
	warned  bool
}

func newProcWatcher(log logr.Logger, notify func(desired.SessionKey)) *procWatcher {
	return &procWatcher{log: log, notify: notify, watched: map[int64]*os.File{}, polled: map[int64]sqlstore.LeaseRef{}, dead: map[int64]bool{}}
}

// sync makes the watched set equal to leases.
func (p *procWatcher) sync(leases []sqlstore.LeaseRef) {
	want := make(map[int64]sqlstore.LeaseRef, len(leases))
	for _, l := range leases {
		want[l.ID] = l
	}
	var exited []desired.SessionKey
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	for id, f := range p.watched {
		if _, ok := want[id]; !ok {
			f.Close() // wakes the waiter, which then exits quietly
			delete(p.watched, id)
		}
	}
	for id := range p.polled {
		if _, ok := want[id]; !ok {
			delete(p.polled, id)
		}
	}
	for id := range p.dead {
		if _, ok := want[id]; !ok {
			delete(p.dead, id)
		}
	}
	for id, l := range want {
		if p.watched[id] != nil || p.dead[id] {
			continue
		}
		if _, ok := p.polled[id]; ok {
			continue
		}
		f, err := openPidfd(l.PID)
		switch {
		case errors.Is(err, unix.ESRCH):
			p.dead[id] = true
			exited = append(exited, l.Key)
		case err != nil:
			if !p.warned {
				p.warned = true
				p.log.Info("Cannot watch connection processes with pidfds; checking /proc every poll instead", "err", err.Error())
			}
			p.polled[id] = l
		default:
			// The pidfd is for whoever has the pid now; it is the lease's
			// process only if the start time still matches.
			if alive := proc.Alive([]observed.ProcessRef{{PID: l.PID, Start: l.PIDStart}}); !alive[observed.ProcessRef{PID: l.PID, Start: l.PIDStart}] {
				f.Close()
				p.dead[id] = true
				exited = append(exited, l.Key)
				continue
			}
			p.watched[id] = f
			go p.wait(l, f)
		}
	}
	p.mu.Unlock()
	for _, k := range exited {
		p.notify(k)
	}
}

// check looks at the leases that have no pidfd.
func (p *procWatcher) check() {
	p.mu.Lock()
	var exited []desired.SessionKey
	for id, l := range p.polled {
		ref := observed.ProcessRef{PID: l.PID, Start: l.PIDStart}
		if !proc.Alive([]observed.ProcessRef{ref})[ref] {
			delete(p.polled, id)
			p.dead[id] = true
			exited = append(exited, l.Key)
		}
	}
	p.mu.Unlock()
	for _, k := range exited {
		p.notify(k)
	}
}

// wait blocks until the process exits or f is closed.
func (p *procWatcher) wait(l sqlstore.LeaseRef, f *os.File) {
	rc, err := f.SyscallConn()
	if err == nil {
		err = rc.Read(func(fd uintptr) bool { return pidfdReady(int(fd)) })
	}
	p.mu.Lock()
	if p.watched[l.ID] != f {
		// Closed by sync or close: the lease is gone, nothing to report.
		p.mu.Unlock()
		return
	}
	delete(p.watched, l.ID)
	f.Close()
	if err != nil {
		// Not pollable after all: fall back to checking /proc.
		p.polled[l.ID] = l
		p.mu.Unlock()
		return
	}
	p.dead[l.ID] = true
	p.mu.Unlock()
	p.notify(l.Key)
}

func (p *procWatcher) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for id, f := range p.watched {
		f.Close()
		delete(p.watched, id)
	}
}

// openPidfd returns a pollable pidfd for pid.
func openPidfd(pid int) (*os.File, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, err
	}
	// Non-blocking, so that os.NewFile registers it with the runtime poller.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), fmt.Sprintf("pidfd:%d", pid)), nil
}

// pidfdReady reports whether the process of a pidfd has exited (the fd
// polls readable). It must check for real: the runtime poller only reports
// edges that come after the wait started.
func pidfdReady(fd int) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 0)
		if err == unix.EINTR {
			continue
		}
		return err == nil && n > 0 && fds[0].Revents != 0
	}
}
