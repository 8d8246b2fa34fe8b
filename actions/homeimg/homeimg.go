// Package homeimg caps the size of persistent homes on any filesystem: a
// user's home <homes_dir>/<user> (which holds their project homes too) is
// the mount of a sparse ext4 image, <homes_dir>/.images/<user>.ext4, on a
// loop device, so the kernel refuses writes past the image's size with
// "No space left on device" whatever filesystem homes_dir is on, quotas
// or not. The image and the mount point are root's, below a root-only
// homes_dir; the user's content is reached only inside the mounted
// filesystem, through the handles of package hostdir.
package homeimg

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/podspawn/podspawn/actions/hostdir"
	"github.com/podspawn/podspawn/desired/config"
)

// ImagesDir is the directory below homes_dir that holds the images; it
// cannot be a user's home (user names start with a letter).
const ImagesDir = ".images"

// MinSize is the smallest image (state.home_size is validated against it).
const MinSize = config.MinHomeSize

// loopMajor is the block major number of loop devices.
const loopMajor = 7

func imageName(user string) string { return user + ".ext4" }

// ImagePath is the path of user's image below homesDir (for messages).
func ImagePath(homesDir, user string) string {
	return filepath.Join(homesDir, ImagesDir, imageName(user))
}

// Mount makes <homes>/<user> the mount of the user's image: an image
// that exists is always mounted (its content is the home, whatever the
// config says now); with size > 0 a missing one is made, of size bytes.
// A home that is already the mount of its image is left as it is. A
// home that is a plain directory with files in it while size > 0 (made
// before the cap) is reported, never wrapped or deleted.
func Mount(homes *hostdir.Dir, user string, size int64) error {
	images, err := openImages(homes, size > 0)
	if err != nil || images == nil {
		return err
	}
	defer images.Close()
	img, err := openImage(images, user)
	if err != nil {
		return err
	}
	if img == nil && size <= 0 {
		return nil // no image and no cap: a plain home, as without images
	}
	if img != nil {
		defer img.Close()
	}
	mp, _, err := homes.Sub(user, 0o700)
	if err != nil {
		return err
	}
	defer mp.Close()
	if mounted, err := isMountPoint(homes, mp); err != nil || mounted {
		if err == nil && img == nil {
			err = fmt.Errorf("%s has a filesystem mounted on it and no image %s; unmount it", mp.Path(), ImagePath(homes.Path(), user))
		} else if err == nil {
			err = checkMountedImage(mp, img)
		}
		if err == nil && untidy(mp) {
			// A mount whose first tidy-up failed is tidied now.
			err = tidyNewRoot(homes, user)
		}
		return err
	}
	if err := checkEmptyMountPoint(mp, user, img != nil); err != nil {
		return err
	}
	created := img == nil
	if created {
		if img, err = makeImage(images, imageName(user), size); err != nil {
			return err
		}
		defer img.Close()
	}
	if err := mountImage(img, mp); err != nil {
		return err
	}
	if created {
		return tidyNewRoot(homes, user)
	}
	return nil
}

// checkEmptyMountPoint refuses to mount over files: they would be hidden,
// and they are the user's.
func checkEmptyMountPoint(mp *hostdir.Dir, user string, hasImage bool) error {
	empty, err := isEmpty(mp)
	switch {
	case err != nil || empty:
		return err
	case hasImage:
		return fmt.Errorf("persistent home %s has files in it while its image is not mounted on it; podspawn does not hide them under the image: move them out, then log in again", mp.Path())
	}
	return fmt.Errorf("persistent home %s is a plain directory with files in it, from before state.home_size was set; podspawn neither moves nor wraps it: "+
		"move its files out and remove it (the next login makes a capped home), delete it with 'podspawn remove-user %s --force --purge-home', or unset state.home_size",
		mp.Path(), user)
}

// openImages opens (with create, making) <homes>/.images; nil when it
// does not exist and create is false.
func openImages(homes *hostdir.Dir, create bool) (*hostdir.Dir, error) {
	if !create {
		if _, err := homes.Lstat(ImagesDir); errors.Is(err, unix.ENOENT) {
			return nil, nil
		}
	}
	d, _, err := homes.Sub(ImagesDir, 0o700)
	if err != nil {
		return nil, err
	}
	st, err := d.Stat()
	if err == nil && (st.Uid != 0 || st.Mode&0o077 != 0) {
		err = fmt.Errorf("%s must be root's with mode 0700 (it is uid %d, mode %04o); fix it with: chown root:root %[1]s && chmod 700 %[1]s", d.Path(), st.Uid, st.Mode&0o7777)
	}
	if err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// openImage opens user's image read-write; nil, without error, when
// there is none.
func openImage(images *hostdir.Dir, user string) (*os.File, error) {
	name := imageName(user)
	fd, err := unix.Openat(images.Fd(), name, unix.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", filepath.Join(images.Path(), name), err)
	}
	f := os.NewFile(uintptr(fd), filepath.Join(images.Path(), name))
	if err := checkRegular(f); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func checkRegular(f *os.File) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return fmt.Errorf("%s: %w", f.Name(), err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Uid != 0 {
		return fmt.Errorf("%s is not a regular file of root's; remove it", f.Name())
	}
	return nil
}

// makeImage writes a new sparse image under a temporary name, makes an
// ext4 filesystem in it through its descriptor, and renames it into
// place, so a crash never leaves a half-made image under the real name.
func makeImage(images *hostdir.Dir, name string, size int64) (*os.File, error) {
	tmp := name + ".new"
	if err := unix.Unlinkat(images.Fd(), tmp, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return nil, fmt.Errorf("removing %s: %w", filepath.Join(images.Path(), tmp), err)
	}
	fd, err := unix.Openat(images.Fd(), tmp, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating %s: %w", filepath.Join(images.Path(), tmp), err)
	}
	f := os.NewFile(uintptr(fd), filepath.Join(images.Path(), name))
	err = unix.Ftruncate(fd, size)
	if err == nil {
		err = mkfs(f)
	}
	if err == nil {
		err = unix.Fsync(fd)
	}
	if err == nil {
		err = unix.Renameat(images.Fd(), tmp, images.Fd(), name)
	}
	if err != nil {
		f.Close()
		unix.Unlinkat(images.Fd(), tmp, 0)
		return nil, fmt.Errorf("making the home image %s: %w", f.Name(), err)
	}
	return f, nil
}

// mkfs makes the ext4 filesystem: there is no maintained Go library for
// it, and mkfs.ext4 (e2fsprogs) is on every host that has ext4. It is
// handed the open image as its fd 3, never a path. -m 0: the whole cap is
// the user's (no blocks reserved for root).
func mkfs(img *os.File) error {
	bin, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		return fmt.Errorf("mkfs.ext4 not found (apt-get install e2fsprogs): %w", err)
	}
	cmd := exec.Command(bin, "-q", "-F", "-m", "0", "-L", "podspawn-home", "-E", "nodiscard", "/dev/fd/3")
	cmd.ExtraFiles = []*os.File{img}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("mkfs.ext4: %w: %s", err, strings.TrimSpace(out.String()))
	}
	return nil
}

// tidyNewRoot gives a new filesystem's root the mode of a new home
// (root's, 0700, until the container user is known) and removes the
// empty lost+found, which would otherwise be a root-owned entry in the
// user's home (e2fsck makes it again if ever needed).
func tidyNewRoot(homes *hostdir.Dir, user string) error {
	root, _, err := homes.Sub(user, 0o700)
	if err != nil {
		return err
	}
	defer root.Close()
	if err := unix.Unlinkat(root.Fd(), "lost+found", unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("removing %s/lost+found: %w", root.Path(), err)
	}
	return root.Chown(0, 0, 0o700)
}

// untidy reports whether root is a new filesystem's root that was never
// tidied: root's, with mkfs's lost+found still in it. Once the home has
// been handed to the container user, lost+found is left to e2fsck.
func untidy(root *hostdir.Dir) bool {
	st, err := root.Stat()
	if err != nil || st.Uid != 0 {
		return false
	}
	var lf unix.Stat_t
	return unix.Fstatat(root.Fd(), "lost+found", &lf, unix.AT_SYMLINK_NOFOLLOW) == nil && lf.Mode&unix.S_IFMT == unix.S_IFDIR
}

// isMountPoint reports whether dir (an entry of parent) is the root of
// another filesystem than parent's.
func isMountPoint(parent, dir *hostdir.Dir) (bool, error) {
	p, err := parent.Stat()
	if err != nil {
		return false, err
	}
	d, err := dir.Stat()
	if err != nil {
		return false, err
	}
	return p.Dev != d.Dev, nil
}

func isEmpty(d *hostdir.Dir) (bool, error) {
	dup, err := unix.Dup(d.Fd())
	if err != nil {
		return false, err
	}
	f := os.NewFile(uintptr(dup), d.Path())
	defer f.Close()
	names, err := f.Readdirnames(1)
	if errors.Is(err, io.EOF) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading %s: %w", d.Path(), err)
	}
	return len(names) == 0, nil
}
