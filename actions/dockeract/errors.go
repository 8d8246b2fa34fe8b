package dockeract

import (
	"strings"

	"github.com/containerd/errdefs"
)

// Docker's errors are classified here, once. errdefs gives the class;
// where one class covers several situations that podspawn must tell
// apart (a missing image and a missing network are both "not found"),
// the daemon's message refines it, and nowhere else.

// missingImage: a create failed because the image is not local.
func missingImage(err error) bool {
	return errdefs.IsNotFound(err) && strings.Contains(strings.ToLower(err.Error()), "no such image")
}

// removalInProgress: another pass is removing the container already.
func removalInProgress(err error) bool {
	return err != nil && strings.Contains(err.Error(), "is already in progress")
}

// activeEndpoints: a network still has a container attached.
func activeEndpoints(err error) bool {
	return err != nil && strings.Contains(err.Error(), "has active endpoints")
}

// poolsExhausted: dockerd's address pools have no free range left for a
// new network.
func poolsExhausted(err error) bool {
	return err != nil && strings.Contains(err.Error(), "non-overlapping") && strings.Contains(err.Error(), "address pool")
}

// diskLimitUnsupported: the storage driver refused the size option
// (overlay2 says "--storage-opt is supported only for overlay over xfs
// with 'pquota' mount option", other drivers that they do not support it).
func diskLimitUnsupported(err error) bool {
	if err == nil {
		return false
	}
	m := strings.ToLower(err.Error())
	return strings.Contains(m, "storage-opt") || strings.Contains(m, "storage opt")
}

// notRunning: an exec into a container that is not running.
func notRunning(err error) bool {
	return errdefs.IsConflict(err) && strings.Contains(err.Error(), "is not running")
}
