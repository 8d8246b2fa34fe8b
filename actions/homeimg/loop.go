package homeimg

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/podspawn/podspawn/actions/hostdir"
)

// mountImage attaches img to a free loop device and mounts it on mp
// (nodev, nosuid), through mp's handle: the mount never follows a path.
// The device is set to clear itself when its last user goes, so
// unmounting the home (or a reboot) leaves no loop device behind.
func mountImage(img *os.File, mp *hostdir.Dir) error {
	loop, err := attachLoop(img)
	if err != nil {
		return err
	}
	// Closed after the mount holds the device: closing an unmounted
	// autoclear device detaches it, so a failed mount leaves nothing.
	defer loop.Close()
	target := fmt.Sprintf("/proc/self/fd/%d", mp.Fd())
	// errors=remount-ro: a sparse image whose host disk filled up stops
	// taking writes instead of going on with a damaged filesystem.
	if err := unix.Mount(loop.Name(), target, "ext4", unix.MS_NODEV|unix.MS_NOSUID, "errors=remount-ro"); err != nil {
		return fmt.Errorf("mounting %s (%s) on %s: %w", img.Name(), loop.Name(), mp.Path(), err)
	}
	return nil
}

// attachLoop binds img to a free loop device and returns the device,
// open. Another process may take the device the kernel offered between
// the two calls; then another is asked for.
func attachLoop(img *os.File) (*os.File, error) {
	ctl, err := unix.Open("/dev/loop-control", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		// The sandboxed cleanup daemon has no devices: it reuses mounted
		// homes, and leaves unmounted ones to the next login.
		return nil, fmt.Errorf("the home image %s is not mounted and cannot be: opening /dev/loop-control: %w (load the loop module: modprobe loop; the next login mounts it)", img.Name(), err)
	}
	defer unix.Close(ctl)
	for attempt := 0; ; attempt++ {
		n, err := unix.IoctlRetInt(ctl, unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("asking /dev/loop-control for a free loop device: %w", err)
		}
		name := fmt.Sprintf("/dev/loop%d", n)
		fd, err := unix.Open(name, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("opening %s: %w", name, err)
		}
		err = configureLoop(fd, int(img.Fd()))
		if err == nil {
			return os.NewFile(uintptr(fd), name), nil
		}
		unix.Close(fd)
		if !errors.Is(err, unix.EBUSY) || attempt == 20 {
			return nil, fmt.Errorf("attaching %s to %s: %w", img.Name(), name, err)
		}
	}
}

// configureLoop sets the backing file and the autoclear flag in one call
// (LOOP_CONFIGURE, Linux 5.8), or in two on older kernels.
func configureLoop(loop, img int) error {
	info := unix.LoopInfo64{Flags: unix.LO_FLAGS_AUTOCLEAR}
	err := unix.IoctlLoopConfigure(loop, &unix.LoopConfig{Fd: uint32(img), Info: info})
	if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOTTY) {
		return err
	}
	if err := unix.IoctlSetInt(loop, unix.LOOP_SET_FD, img); err != nil {
		return err
	}
	if err := unix.IoctlLoopSetStatus64(loop, &info); err != nil {
		unix.IoctlSetInt(loop, unix.LOOP_CLR_FD, 0)
		return err
	}
	return nil
}

// checkMountedImage checks that what is mounted on mp is img on a loop
// device. It reads the device's backing file from sysfs, so it needs no
// device node (the sandboxed cleanup daemon has none), and compares it
// with the path the kernel gives img's open descriptor: the same file, as
// named by the same kernel function.
func checkMountedImage(mp *hostdir.Dir, img *os.File) error {
	backing, err := mountedBackingFile(mp)
	if err == nil {
		var want string
		want, err = os.Readlink(fmt.Sprintf("/proc/self/fd/%d", img.Fd()))
		if err == nil && backing != want {
			err = fmt.Errorf("its loop device holds %s", backing)
		}
	}
	if err != nil {
		return fmt.Errorf("%s has a filesystem mounted on it that is not its image %s: %w; unmount it", mp.Path(), img.Name(), err)
	}
	return nil
}

// mountedBackingFile is the backing file of the loop device whose
// filesystem has its root at d.
func mountedBackingFile(d *hostdir.Dir) (string, error) {
	st, err := d.Stat()
	if err != nil {
		return "", err
	}
	major, minor := unix.Major(st.Dev), unix.Minor(st.Dev)
	if major != loopMajor {
		return "", fmt.Errorf("device %d:%d is no loop device", major, minor)
	}
	b, err := os.ReadFile(fmt.Sprintf("/sys/dev/block/%d:%d/loop/backing_file", major, minor))
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(string(b), "\n"), nil
}

// Purge unmounts user's home if it is the mount of its image and removes
// the image; the caller then removes the (empty) mount point. A home
// without an image is left to the caller.
func Purge(homes *hostdir.Dir, user string) error {
	images, err := openImages(homes, false)
	if err != nil || images == nil {
		return err
	}
	defer images.Close()
	if _, err := homes.Lstat(user); err == nil {
		if err := unmount(homes, user); err != nil {
			return err
		}
	}
	if err := unix.Unlinkat(images.Fd(), imageName(user), 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("removing %s: %w", ImagePath(homes.Path(), user), err)
	}
	return nil
}

// unmount unmounts <homes>/<user> if something is mounted there.
func unmount(homes *hostdir.Dir, user string) error {
	mp, _, err := homes.Sub(user, 0o700)
	if err != nil {
		return err
	}
	mounted, err := isMountPoint(homes, mp)
	mp.Close()
	if err != nil || !mounted {
		return err
	}
	err = unix.Unmount(homes.ProcPath(user), unix.UMOUNT_NOFOLLOW)
	if errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("unmounting the home image at %s/%s: a process still uses it (find it with: fuser -vm %[1]s/%[2]s): %w", homes.Path(), user, err)
	}
	if err != nil {
		return fmt.Errorf("unmounting the home image at %s/%s: %w", homes.Path(), user, err)
	}
	return nil
}

// Usage describes user's image for list-users: whether it exists, its
// size (the cap), and whether it is mounted.
type Usage struct {
	Image   bool
	Size    int64
	Mounted bool
}

// Describe reports on user's image without changing anything.
func Describe(homes *hostdir.Dir, user string) (Usage, error) {
	var u Usage
	images, err := openImages(homes, false)
	if err != nil || images == nil {
		return u, err
	}
	defer images.Close()
	st, err := images.Lstat(imageName(user))
	if errors.Is(err, unix.ENOENT) {
		return u, nil
	}
	if err != nil {
		return u, err
	}
	u.Image, u.Size = true, st.Size
	if _, err := homes.Lstat(user); err == nil {
		mp, _, err := homes.Sub(user, 0o700)
		if err != nil {
			return u, err
		}
		defer mp.Close()
		u.Mounted, err = isMountPoint(homes, mp)
		return u, err
	}
	return u, nil
}
