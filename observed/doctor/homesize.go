package doctor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/podspawn/podspawn/actions/homeimg"
	"github.com/podspawn/podspawn/desired/config"
)

// DefaultLoopControl is the loop devices' control file.
const DefaultLoopControl = "/dev/loop-control"

// checkHomeSize says whether state.home_size can be applied: each user's
// persistent homes are an ext4 image made with mkfs.ext4 and mounted on a
// loop device, so both must be there, or persistent sessions fail to start.
func checkHomeSize(_ context.Context, e *Env) Result {
	st := e.Config.State
	if e.Config.Runtime == config.RuntimeKubernetes {
		size := e.Config.Kubernetes.VolumeSize + " (kubernetes.volume_size)"
		if st.HomeSizeBytes > 0 {
			size = st.HomeSize + " (state.home_size)"
		}
		return pass("runtime: kubernetes: a user's persistent homes are one PersistentVolumeClaim of " + size + "; whether a write past it is refused depends on the storage class")
	}
	if st.HomeSizeBytes == 0 {
		return pass("no cap set (state.home_size); one user's persistent home can fill the filesystem of " + st.HomesDir)
	}
	mkfs, err := lookPath("mkfs.ext4", e.Path)
	if err != nil {
		return fail(fmt.Sprintf("state.home_size is %s but mkfs.ext4 is not in PATH: new persistent homes cannot be made", st.HomeSize),
			"sudo apt-get install e2fsprogs")
	}
	ctl := e.LoopControl
	if ctl == "" {
		ctl = DefaultLoopControl
	}
	loopFix := "sudo modprobe loop (and list loop in /etc/modules); in a container, give it the loop devices"
	fi, err := os.Stat(ctl)
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return fail(fmt.Sprintf("state.home_size is %s but %s is missing or no device: persistent homes cannot be mounted", st.HomeSize, ctl), loopFix)
	}
	if e.Euid == 0 {
		fd, err := unix.Open(ctl, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return fail(fmt.Sprintf("state.home_size is %s but %s cannot be opened: %v", st.HomeSize, ctl, err), loopFix)
		}
		unix.Close(fd)
	}
	if r, over := imagesOvercommit(st.HomesDir); over {
		return r
	}
	return pass(fmt.Sprintf("%s per user: ext4 images (%s) on loop devices (%s), below %s", st.HomeSize, mkfs, ctl, st.HomesDir))
}

// imagesOvercommit warns when the sparse home images may still grow by
// more than the free space of the filesystem they are on: a full host disk
// then fails writes inside the homes (the images remount read-only) before
// any user reaches their cap. Unreadable images (not root) are not counted.
func imagesOvercommit(homesDir string) (Result, bool) {
	dir := filepath.Join(homesDir, homeimg.ImagesDir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return Result{}, false
	}
	var growth int64
	for _, en := range entries {
		var st unix.Stat_t
		if !strings.HasSuffix(en.Name(), ".ext4") || unix.Lstat(filepath.Join(dir, en.Name()), &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
			continue
		}
		if left := st.Size - st.Blocks*512; left > 0 {
			growth += left
		}
	}
	var fs unix.Statfs_t
	if growth == 0 || unix.Statfs(dir, &fs) != nil {
		return Result{}, false
	}
	free := int64(fs.Bavail) * fs.Bsize
	if growth <= free {
		return Result{}, false
	}
	return warn(fmt.Sprintf("the home images in %s may still grow by %s, more than the %s free there: a full disk fails writes in every home (read-only) before users reach their cap",
		dir, sizeGiB(growth), sizeGiB(free)), "free space on that filesystem, move state.homes_dir to a larger one, or lower state.home_size for new homes"), true
}

func sizeGiB(n int64) string { return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30)) }
