package hostsetup

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestEnsureDir(t *testing.T) {
	root := t.TempDir()
	nobody := Owner{Name: "nobody", UID: 65534, GID: 65534}
	dir := filepath.Join(root, "a", "keys")

	c, err := EnsureDir(dir, 0o700, nobody, true)
	if err != nil || c.Would != "create directory "+dir+" (0700 nobody)" {
		t.Fatalf("dry run: %+v %v", c, err)
	}
	if _, err := os.Stat(filepath.Join(root, "a")); err == nil {
		t.Fatal("dry run created a directory")
	}
	if c, err = EnsureDir(dir, 0o700, nobody, false); err != nil || c.Done != "created (0700 nobody)" {
		t.Fatalf("create: %+v %v", c, err)
	}
	if c, err = EnsureDir(dir, 0o700, nobody, false); err != nil || c.Done != "" {
		t.Fatalf("second run: %+v %v", c, err)
	}
	os.Chmod(dir, 0o777|os.ModeSticky)
	os.Chown(dir, 0, 0)
	c, err = EnsureDir(dir, 0o700, nobody, true)
	if err != nil || c.Would != "fix "+dir+" (owner 0:0 -> nobody, mode 1777 -> 0700)" {
		t.Fatalf("dry-run fix: %+v %v", c, err)
	}
	if c, err = EnsureDir(dir, 0o700, nobody, false); err != nil || c.Done != "fixed owner 0:0 -> nobody, mode 1777 -> 0700" {
		t.Fatalf("fix: %+v %v", c, err)
	}
	fi, _ := os.Stat(dir)
	uid, gid := statOwner(fi)
	if d := cmp.Diff([]any{65534, 65534, "0700"}, []any{uid, gid, modeString(fi.Mode())}); d != "" {
		t.Errorf("after fix (-want +got):\n%s", d)
	}
	if fi, _ := os.Stat(filepath.Join(root, "a")); fi.Mode().Perm() != 0o755 {
		t.Errorf("parent mode %o, want 755", fi.Mode().Perm())
	}
	file := filepath.Join(root, "file")
	os.WriteFile(file, nil, 0o600)
	if _, err := EnsureDir(file, 0o700, Root, false); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("file in the way: %v", err)
	}
}

func TestCheckSafePath(t *testing.T) {
	// t.TempDir sits under /tmp (sticky, world-writable).
	root := t.TempDir()
	bin := filepath.Join(root, "bin", "podspawn")
	os.MkdirAll(filepath.Dir(bin), 0o755)
	os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755)
	os.Chmod(root, 0o755)

	if err := CheckSafePath(bin, true); err != nil {
		t.Errorf("root-owned path under sticky /tmp, allowSticky: %v", err)
	}
	if err := CheckSafePath(bin, false); err == nil || !strings.Contains(err.Error(), "writable by group or others") {
		t.Errorf("sshd's rule refuses /tmp: got %v", err)
	}
	os.Chmod(filepath.Dir(bin), 0o775)
	if err := CheckSafePath(bin, true); err == nil || !strings.Contains(err.Error(), filepath.Dir(bin)+" is writable") {
		t.Errorf("group-writable dir: %v", err)
	}
	os.Chmod(filepath.Dir(bin), 0o755)
	os.Chown(bin, 65534, 0)
	if err := CheckSafePath(bin, true); err == nil || !strings.Contains(err.Error(), "owned by uid 65534") {
		t.Errorf("file not owned by root: %v", err)
	}
	os.Chown(bin, 0, 0)
	os.Chmod(bin, 0o757)
	if err := CheckSafePath(bin, true); err == nil || !strings.Contains(err.Error(), bin+" is writable") {
		t.Errorf("world-writable file: %v", err)
	}
}

func TestCheckReachable(t *testing.T) {
	root := t.TempDir()
	os.Chmod(root, 0o755)
	cfg := filepath.Join(root, "etc", "config.yaml")
	os.MkdirAll(filepath.Dir(cfg), 0o755)
	os.WriteFile(cfg, nil, 0o644)
	auth := Account{Name: "podspawn-auth", UID: 65534, GID: 65534}
	// t.TempDir's parent is 0700 root: not reachable.
	if err := CheckReachable(cfg, auth); err == nil || !strings.Contains(err.Error(), "is not searchable by podspawn-auth") {
		t.Errorf("behind a 0700 directory: %v", err)
	}
	os.Chmod(filepath.Dir(root), 0o711)
	defer os.Chmod(filepath.Dir(root), 0o700)
	if err := CheckReachable(cfg, auth); err != nil {
		t.Errorf("reachable: %v", err)
	}
	os.Chmod(cfg, 0o600)
	if err := CheckReachable(cfg, auth); err == nil || !strings.Contains(err.Error(), "is not readable by podspawn-auth") {
		t.Errorf("0600 root file: %v", err)
	}
	os.Chown(cfg, 65534, 65534)
	if err := CheckReachable(cfg, auth); err != nil {
		t.Errorf("owned by the account: %v", err)
	}
}
