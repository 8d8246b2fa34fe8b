package actions

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/observed/proc"
	"github.com/podspawn/podspawn/reconcile"
)

// warn writes a's warning on the terminal of each of its connections, then
// records it on the row. A connection without a terminal (a command, sftp)
// or gone meanwhile is skipped. A warning is best effort: one that cannot
// be written is logged (through ctx's logger), never an error that would
// fail the pass or a login's reconcile, and it is recorded all the same so
// that it is never repeated.
func warn(ctx context.Context, st Store, a reconcile.Action, now time.Time) (bool, error) {
	msg := WarningText(a.At, a.At.Sub(now))
	for _, l := range a.Leases {
		if err := writeLeaseTerminal(l, msg); err != nil {
			logr.FromContextOrDiscard(ctx).Error(err, "Cannot warn a connection of the end of its session", "lease", l.ID, "pid", l.PID)
		}
	}
	return st.RecordWarning(ctx, a.SessionID, a.Before, now)
}

// WarningText is the message a connection gets at left before end.
func WarningText(end time.Time, left time.Duration) string {
	left = left.Round(time.Second)
	if left < 0 {
		left = 0
	}
	return fmt.Sprintf("\r\n\a*** podspawn: this session reaches its maximum lifetime in %s (at %s) and will then be removed. "+
		"Files outside a persistent home will be lost: save your work. ***\r\n", left, end.UTC().Format("15:04:05 MST"))
}

// writeLeaseTerminal writes msg on the terminal of the lease's spawn
// process (its stdout, like wall). The process is checked by pid and start
// time after the terminal is open, so a reused pid is never written to.
func writeLeaseTerminal(l desired.Lease, msg string) error {
	fd, err := unix.Open(fmt.Sprintf("/proc/%d/fd/1", l.PID), unix.O_WRONLY|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil // the connection ended
		}
		return err
	}
	defer unix.Close(fd)
	if start, err := proc.StartTime(l.PID); err != nil || start != l.PIDStart {
		return nil // another process now
	}
	if _, err := unix.IoctlGetTermios(fd, unix.TCGETS); err != nil {
		return nil // no terminal
	}
	_, err = unix.Write(fd, []byte(msg))
	return err
}
