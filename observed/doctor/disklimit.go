package doctor

import (
	"context"
	"fmt"

	"github.com/docker/docker/api/types/system"

	"github.com/podspawn/podspawn/desired/config"
)

// checkDiskLimit says whether defaults.disk can be applied: it is the
// storage driver's size option, which overlay2 supports only on xfs
// mounted with pquota, and devicemapper, btrfs and zfs support in their
// own ways. Where it cannot, defaults.disk_unsupported decides: refuse
// fails (no session starts), warn warns (sessions have no disk limit).
func checkDiskLimit(ctx context.Context, e *Env) Result {
	d := e.Config.Defaults
	if d.DiskBytes == 0 {
		return pass("no limit set (defaults.disk); one session can fill Docker's data root")
	}
	if e.Docker == nil {
		return warn("cannot tell whether the storage driver can apply defaults.disk: no Docker client", "fix the Docker daemon check above")
	}
	info, err := e.Docker.Info(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return Result{}
		}
		return warn(fmt.Sprintf("cannot tell whether the storage driver can apply defaults.disk: %v", err), "fix the Docker daemon check above")
	}
	ok, what := sizeLimitSupport(info)
	switch {
	case ok:
		return pass(fmt.Sprintf("%s per container through the %s", d.Disk, what))
	case d.DiskUnsupported == config.DiskWarn:
		return warn(fmt.Sprintf("%s cannot limit a container's size: sessions start without the %s limit (defaults.disk_unsupported: warn)", what, d.Disk),
			"put Docker's data root on xfs mounted with pquota (overlay2), or use btrfs or zfs; or unset defaults.disk")
	}
	return fail(fmt.Sprintf("%s cannot limit a container's size: every session is refused (defaults.disk %s, defaults.disk_unsupported: refuse)", what, d.Disk),
		"put Docker's data root on xfs mounted with pquota (overlay2), or use btrfs or zfs; or unset defaults.disk, or set defaults.disk_unsupported: warn")
}

// sizeLimitSupport reports whether Docker's storage driver takes the size
// storage option, and names the driver (and its backing filesystem).
func sizeLimitSupport(info system.Info) (bool, string) {
	backing := ""
	for _, kv := range info.DriverStatus {
		if kv[0] == "Backing Filesystem" {
			backing = kv[1]
		}
	}
	switch info.Driver {
	case "overlay2", "overlay":
		// pquota is not in Info: on xfs the create itself still tells.
		if backing == "xfs" {
			return true, fmt.Sprintf("storage driver %s on xfs (needs the pquota mount option)", info.Driver)
		}
		return false, fmt.Sprintf("storage driver %s on %s", info.Driver, orUnknown(backing))
	case "devicemapper", "btrfs", "zfs", "windowsfilter":
		return true, "storage driver " + info.Driver
	}
	return false, "storage driver " + orUnknown(info.Driver)
}

func orUnknown(s string) string {
	if s == "" {
		return "an unknown filesystem"
	}
	return s
}
