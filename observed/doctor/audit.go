package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// checkAuditLog: the audit log is a regular file owned by root, mode
// 0600, that root can append to; a missing one needs a writable directory
// (the first event creates it). Doctor opens it for appending but writes
// nothing and creates nothing.
func checkAuditLog(_ context.Context, e *Env) Result {
	path := e.Config.Log.AuditLog
	if path == "" {
		return pass("disabled (log.audit_log is not set)")
	}
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		dir := filepath.Dir(path)
		r := checkWritableDir(dir)
		if r.Status == Fail {
			r.Detail = "audit log " + path + " cannot be created: " + r.Detail
			return r
		}
		return pass(path + " (created by the first event)")
	case err != nil:
		return fail(fmt.Sprintf("cannot stat audit log %s: %v", path, err), "check the permissions of the directories above "+path)
	case fi.Mode()&fs.ModeSymlink != 0:
		return fail("audit log "+path+" is a symbolic link, which podspawn does not follow", "point log.audit_log at the link's target, or replace the link with a file")
	case !fi.Mode().IsRegular():
		return fail("audit log "+path+" is not a regular file", "move "+path+" aside or point log.audit_log at a file")
	}
	if uid, _ := statOwner(fi); uid != 0 {
		return fail(fmt.Sprintf("audit log %s is owned by uid %d, not root; its owner can rewrite the record", path, uid), "sudo chown root:root "+path)
	}
	if m := modeBits(fi); m != 0o600 {
		return fail(fmt.Sprintf("audit log %s has mode %s, want 0600", path, modeString(m)), "sudo chmod 600 "+path)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return fail(fmt.Sprintf("audit log %s is not writable: %v", path, err),
			"run doctor as root, or fix the mount; with log.audit_required: true commands refuse to run until it is writable")
	}
	f.Close()
	return pass(path)
}
