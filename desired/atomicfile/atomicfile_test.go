package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
)

type result struct {
	Data     string
	Mode     fs.FileMode
	UID, GID int
	Entries  []string
}

func inspect(t *testing.T, path string) result {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	ents, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return result{string(data), fi.Mode(), int(st.Uid), int(st.Gid), names}
}

func TestWrite(t *testing.T) {
	me, mygid := os.Getuid(), os.Getgid()
	tests := []struct {
		name     string
		old      string // "" = no file yet
		mode     fs.FileMode
		uid, gid int
		root     bool
		want     result
	}{
		{name: "new file keeps the process owner", mode: 0o644, uid: KeepOwner, gid: KeepOwner,
			want: result{"new", 0o644, me, mygid, []string{"f"}}},
		{name: "replaces and sets mode exactly", old: "old", mode: 0o600, uid: KeepOwner, gid: KeepOwner,
			want: result{"new", 0o600, me, mygid, []string{"f"}}},
		{name: "sets the owner", old: "old", mode: 0o640, uid: 4242, gid: 4343, root: true,
			want: result{"new", 0o640, 4242, 4343, []string{"f"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.root && os.Geteuid() != 0 {
				t.Skip("chown needs root")
			}
			path := filepath.Join(t.TempDir(), "f")
			if tt.old != "" {
				if err := os.WriteFile(path, []byte(tt.old), 0o666); err != nil {
					t.Fatal(err)
				}
			}
			if err := Write(path, []byte("new"), tt.mode, tt.uid, tt.gid); err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.want, inspect(t, path)); d != "" {
				t.Errorf("after Write (-want +got):\n%s", d)
			}
		})
	}
}

func TestWriteCheckedFailureLeavesOldFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := errors.New("syntax error")
	var checked string
	err := WriteChecked(path, []byte("new"), 0o644, KeepOwner, KeepOwner, func(tmp string) error {
		b, _ := os.ReadFile(tmp)
		checked = string(b)
		return bad
	})
	if !errors.Is(err, bad) {
		t.Fatalf("WriteChecked = %v, want the check's error", err)
	}
	if checked != "new" {
		t.Errorf("check saw %q, want the complete new data", checked)
	}
	want := result{"old", 0o644, os.Getuid(), os.Getgid(), []string{"f"}}
	if d := cmp.Diff(want, inspect(t, path)); d != "" {
		t.Errorf("after a failed check (-want +got):\n%s", d)
	}
}

func TestWriteErrorNamesPathNotTemporary(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "f")
	err := Write(path, []byte("x"), 0o644, KeepOwner, KeepOwner)
	if err == nil {
		t.Fatal("Write into a missing directory succeeded")
	}
	if want := "writing " + path + ": no such file or directory"; err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("error %v does not wrap fs.ErrNotExist", err)
	}
	if strings.Contains(err.Error(), "podspawn-tmp") {
		t.Errorf("error names the temporary file: %v", err)
	}
}
