package homeimg_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/podspawn/podspawn/actions/homeimg"
	"github.com/podspawn/podspawn/actions/hostdir"
)

// needLoop skips a run without root (`go test` as a developer); as root,
// as in CI, missing loop devices are a missing dependency of state.home_size
// and fail the test rather than hide behind a skip.
func needLoop(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting home images needs root")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Fatalf("no loop devices (%v): load the loop module (modprobe loop) to test capped homes", err)
	}
}

func openHomes(t *testing.T) (*hostdir.Dir, string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	homes, err := hostdir.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { homes.Close() })
	return homes, dir
}

func mounted(t *testing.T, path string) bool {
	t.Helper()
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(info), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == path {
			return true
		}
	}
	return false
}

// superOptions returns the filesystem options of the mount at path.
func superOptions(t *testing.T, path string) string {
	t.Helper()
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(info), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || f[4] != path {
			continue
		}
		for i, x := range f {
			if x == "-" && i+3 < len(f) {
				return f[i+3]
			}
		}
	}
	t.Fatalf("%s is not in mountinfo", path)
	return ""
}

// TestMountMakesACappedHomeOnceAndPurgeRemovesIt: the first Mount makes
// the image and mounts it (root's 0700 root, no lost+found, nodev,
// nosuid); writing past the cap fails with ENOSPC; a second Mount reuses
// the mount; Purge unmounts it and removes the image.
func TestMountMakesACappedHomeOnceAndPurgeRemovesIt(t *testing.T) {
	needLoop(t)
	homes, dir := openHomes(t)
	home := filepath.Join(dir, "alice")
	t.Cleanup(func() {
		if mounted(t, home) {
			unix.Unmount(home, 0)
		}
	})
	if err := homeimg.Mount(homes, "alice", homeimg.MinSize); err != nil {
		t.Fatal(err)
	}
	if !mounted(t, home) {
		t.Fatalf("%s is not mounted", home)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(home, &st); err != nil || st.Uid != 0 || st.Mode&0o7777 != 0o700 {
		t.Fatalf("home root: uid %d mode %o (%v), want root's 0700", st.Uid, st.Mode&0o7777, err)
	}
	if _, err := os.Lstat(filepath.Join(home, "lost+found")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("lost+found in the new home: %v", err)
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(home, &sfs); err != nil || sfs.Flags&unix.ST_NODEV == 0 || sfs.Flags&unix.ST_NOSUID == 0 {
		t.Fatalf("mount flags %#x (%v), want nodev and nosuid", sfs.Flags, err)
	}
	if opts := superOptions(t, home); !strings.Contains(","+opts+",", ",errors=remount-ro,") {
		t.Fatalf("filesystem options %q, want errors=remount-ro", opts)
	}
	big := make([]byte, 2*homeimg.MinSize)
	if err := os.WriteFile(filepath.Join(home, "big"), big, 0o600); !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("writing past the cap: %v, want ENOSPC", err)
	}
	// A first tidy-up that failed midway is finished by the next Mount.
	if err := os.Mkdir(filepath.Join(home, "lost+found"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := homeimg.Mount(homes, "alice", homeimg.MinSize); err != nil {
		t.Fatalf("second Mount: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(home, "lost+found")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("lost+found left after the second Mount: %v", err)
	}
	if u, err := homeimg.Describe(homes, "alice"); err != nil || !u.Image || !u.Mounted || u.Size != homeimg.MinSize {
		t.Fatalf("Describe = %+v, %v", u, err)
	}

	if err := homeimg.Purge(homes, "alice"); err != nil {
		t.Fatal(err)
	}
	if mounted(t, home) {
		t.Fatalf("%s still mounted after Purge", home)
	}
	if _, err := os.Lstat(homeimg.ImagePath(dir, "alice")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("image after Purge: %v", err)
	}
}

// TestMountRefusesAPlainHomeWithFiles: a home made before the cap is
// reported and left as it was; without a cap nothing is made.
func TestMountRefusesAPlainHomeWithFiles(t *testing.T) {
	needLoop(t)
	homes, dir := openHomes(t)
	if err := homeimg.Mount(homes, "bob", 0); err != nil {
		t.Fatalf("Mount without a cap: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, homeimg.ImagesDir)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Mount without a cap made %s: %v", homeimg.ImagesDir, err)
	}
	home := filepath.Join(dir, "bob")
	if err := os.MkdirAll(home, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, "notes"), []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := homeimg.Mount(homes, "bob", homeimg.MinSize)
	if err == nil || !strings.Contains(err.Error(), home+" is a plain directory with files in it, from before state.home_size was set") {
		t.Fatalf("Mount over a plain home = %v, want it reported", err)
	}
	if mounted(t, home) {
		unix.Unmount(home, 0)
		t.Fatalf("%s was mounted over", home)
	}
	if b, err := os.ReadFile(filepath.Join(home, "notes")); err != nil || string(b) != "mine" {
		t.Fatalf("the plain home's file: %q, %v", b, err)
	}
	if _, err := os.Lstat(homeimg.ImagePath(dir, "bob")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("an image was made for a refused home: %v", err)
	}
}

// TestMountRefusesAnotherFilesystemOnTheHome: something else mounted on
// a home that has an image is reported, not used.
func TestMountRefusesAnotherFilesystemOnTheHome(t *testing.T) {
	needLoop(t)
	homes, dir := openHomes(t)
	home := filepath.Join(dir, "carol")
	if err := homeimg.Mount(homes, "carol", homeimg.MinSize); err != nil {
		t.Fatal(err)
	}
	if err := unix.Unmount(home, 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", home, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if mounted(t, home) {
			unix.Unmount(home, 0)
		}
	})
	err := homeimg.Mount(homes, "carol", homeimg.MinSize)
	if err == nil || !strings.Contains(err.Error(), home+" has a filesystem mounted on it that is not its image") {
		t.Fatalf("Mount over a tmpfs = %v, want it reported", err)
	}
}
