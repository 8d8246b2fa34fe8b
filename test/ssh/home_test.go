package ssh

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/podspawn/podspawn/test/harness"
)

// TestPersistentHome: in persistent mode a file written in the home
// survives 'stop' and a new login; the home is the container user's,
// 0700; a link to /etc planted in it is followed by no podspawn operation
// (the next generation's ownership fix, list-users -o wide, remove-user
// --purge-home); a home that is itself a link is refused at login, and
// the log says why.
func TestPersistentHome(t *testing.T) {
	s := newServer(t, serverOptions{Users: []string{"ssa", "ssb"},
		Options: harness.Options{Session: "  grace_period: 60s\n  max_lifetime: 8h\n  mode: persistent\n"}})
	a, b := s.user("ssa"), s.user("ssb")
	homes := filepath.Join(s.Env.StateDir, "homes")
	etcBefore := statOf(t, "/etc")

	uid := strings.TrimSpace(s.mustSSH(a, `echo kept > ~/keep.txt && ln -s /etc ~/etc-link && id -u`))
	home := filepath.Join(homes, a.Name)
	st := statOf(t, home)
	if strconv.Itoa(int(st.Uid)) != uid || st.Mode&0o7777 != 0o700 {
		t.Fatalf("home %s: uid %d mode %o, want uid %s mode 0700", home, st.Uid, st.Mode&0o7777, uid)
	}

	s.Env.MustRun("stop", a.Name)
	if out := s.mustSSH(a, "cat ~/keep.txt"); out != "kept\n" {
		t.Fatalf("after stop and a new login: %q, want kept", out)
	}
	r := s.Env.MustRun("list-users", "-o", "wide")
	if !strings.Contains(r.Stdout, a.Name+"  (1 key)  home: ") || strings.Contains(r.Stdout, "MiB") {
		t.Fatalf("list-users -o wide:\n%s", r.Stdout)
	}

	// A home that is a link (planted by whoever could write homes_dir) is
	// refused; what it points to is left alone.
	outside := t.TempDir()
	outsideBefore := statOf(t, outside)
	if err := os.Symlink(outside, filepath.Join(homes, b.Name)); err != nil {
		t.Fatal(err)
	}
	// The user sees an incident id; the log names the link.
	if r := s.runSSH(b, nil, "", "true"); r.Code == 0 || !strings.Contains(r.Stderr, "incident") {
		t.Fatalf("login with a linked home: exit %d, stderr %q; want a refusal", r.Code, r.Stderr)
	}
	if log, _ := os.ReadFile(s.LogPath); !strings.Contains(string(log), filepath.Join(homes, b.Name)+" is a symbolic link") {
		t.Fatalf("spawn log does not name the linked home:\n%s", log)
	}
	if got := statOf(t, outside); got.Uid != outsideBefore.Uid || got.Mode != outsideBefore.Mode {
		t.Fatalf("the link's target was changed: %+v", got)
	}

	r = s.Env.MustRun("remove-user", a.Name, "--force", "--purge-home")
	if !strings.Contains(r.Stdout, "deleted persistent home "+home) {
		t.Fatalf("remove-user --purge-home: %s", r.Stdout)
	}
	if _, err := os.Lstat(home); !os.IsNotExist(err) {
		t.Fatalf("home still there: %v", err)
	}
	if got := statOf(t, "/etc"); got.Uid != etcBefore.Uid || got.Mode != etcBefore.Mode {
		t.Fatalf("/etc changed: uid %d mode %o", got.Uid, got.Mode)
	}
	if _, err := os.Stat("/etc/passwd"); err != nil {
		t.Fatalf("/etc/passwd: %v", err)
	}
}

func statOf(t *testing.T, path string) syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestPersistentHomeSizeCap: with state.home_size the home is a
// loop-mounted image of that size (nodev, nosuid). Writing past it fails
// in the session with "No space left on device" and the session goes on;
// the home survives 'stop' and a reboot (its mount gone) and is mounted
// again by the next login; remove-user --purge-home unmounts it and
// removes the image, leaving no mount or loop device.
func TestPersistentHomeSizeCap(t *testing.T) {
	s := newServer(t, serverOptions{Users: []string{"ssh"},
		Options: harness.Options{Session: "  grace_period: 60s\n  max_lifetime: 8h\n  mode: persistent\n", State: "  home_size: 32m\n"}})
	u := s.user("ssh")
	homes := filepath.Join(s.Env.StateDir, "homes")
	home := filepath.Join(homes, u.Name)
	t.Cleanup(func() {
		if mountOptions(t, home) != "" {
			t.Errorf("%s still mounted at the end; unmounting it", home)
			syscall.Unmount(home, 0)
		}
	})

	container := s.mustSSH(u, "hostname")
	r := s.runSSH(u, nil, "", `dd if=/dev/zero of=$HOME/big bs=1M count=64; echo "exit $?"`)
	if !strings.Contains(r.Stderr+r.Stdout, "No space left on device") || strings.Contains(r.Stdout, "exit 0") {
		t.Fatalf("writing 64 MiB into a 32 MiB home: stdout %q, stderr %q; want No space left on device", r.Stdout, r.Stderr)
	}
	uid := strings.TrimSpace(s.mustSSH(u, "rm ~/big && echo kept > ~/keep.txt && id -u"))
	if got := s.mustSSH(u, "hostname"); got != container {
		t.Fatalf("session container %q after the full disk, want the same %q", got, container)
	}
	opts := mountOptions(t, home)
	if !strings.Contains(opts, "nodev") || !strings.Contains(opts, "nosuid") {
		t.Fatalf("mount options of %s: %q, want nodev and nosuid", home, opts)
	}
	if st := statOf(t, home); strconv.Itoa(int(st.Uid)) != uid || st.Mode&0o7777 != 0o700 {
		t.Fatalf("home %s: uid %d mode %o, want uid %s mode 0700", home, st.Uid, st.Mode&0o7777, uid)
	}
	if r := s.Env.MustRun("list-users", "-o", "wide"); !strings.Contains(r.Stdout, " of 32.0 MiB") {
		t.Fatalf("list-users -o wide does not give the cap:\n%s", r.Stdout)
	}

	// A new container, then a reboot's loss of the mount: the next login
	// mounts the same image again.
	s.Env.MustRun("stop", u.Name)
	if err := syscall.Unmount(home, 0); err != nil {
		t.Fatalf("unmounting %s as a reboot would: %v", home, err)
	}
	if r := s.Env.MustRun("list-users", "-o", "wide"); !strings.Contains(r.Stdout, "image of 32.0 MiB, not mounted") {
		t.Fatalf("list-users -o wide of an unmounted home:\n%s", r.Stdout)
	}
	if out := s.mustSSH(u, "cat ~/keep.txt"); out != "kept\n" {
		t.Fatalf("after stop, unmount and a new login: %q, want kept", out)
	}

	r2 := s.Env.MustRun("remove-user", u.Name, "--force", "--purge-home")
	if !strings.Contains(r2.Stdout, "deleted persistent home "+home) {
		t.Fatalf("remove-user --purge-home: %s", r2.Stdout)
	}
	if opts := mountOptions(t, home); opts != "" {
		t.Fatalf("%s still mounted after --purge-home (%s)", home, opts)
	}
	for _, p := range []string{home, filepath.Join(homes, ".images", u.Name+".ext4")} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Fatalf("%s still there after --purge-home: %v", p, err)
		}
	}
	out, err := exec.Command("losetup", "-a").CombinedOutput()
	if err != nil || strings.Contains(string(out), homes) {
		t.Fatalf("losetup -a after --purge-home (%v):\n%s", err, out)
	}
}

// mountOptions returns the options of the mount at path, "" when none.
func mountOptions(t *testing.T, path string) string {
	t.Helper()
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(info), "\n") {
		if f := strings.Fields(line); len(f) > 5 && f[4] == path {
			return f[5]
		}
	}
	return ""
}
