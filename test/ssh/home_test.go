package ssh

import (
	"os"
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
