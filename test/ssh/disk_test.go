package ssh

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/podspawn/podspawn/test/harness"
)

// TestDiskLimitUnsupported runs spawn as root (as sshd's forced command
// would) with defaults.disk set on a host whose storage driver cannot
// limit a container's size (overlay2 on anything but xfs with pquota):
// with disk_unsupported: refuse the session does not start, the user sees
// an incident id and the log says why; with warn it starts and the log
// says it has no disk limit.
func TestDiskLimitUnsupported(t *testing.T) {
	info, err := harness.Docker(t).Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	backing := ""
	for _, kv := range info.DriverStatus {
		if kv[0] == "Backing Filesystem" {
			backing = kv[1]
		}
	}
	if info.Driver != "overlay2" || backing == "xfs" {
		t.Skipf("storage driver %s on %q may support size limits; this test needs one that does not (overlay2 on ext4)", info.Driver, backing)
	}
	for _, tc := range []struct {
		policy string
		code   int
		logged string
	}{
		{"refuse", 255, "the storage driver cannot limit the container's disk to 1073741824 bytes"},
		{"warn", 0, "Creating the container without its disk limit"},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			logPath := filepath.Join(t.TempDir(), "spawn.log")
			e := harness.NewEnv(t, harness.Options{Extra: "log:\n  file: " + logPath + "\n"})
			cfg, err := os.ReadFile(e.ConfigPath)
			if err != nil {
				t.Fatal(err)
			}
			limited := strings.Replace(string(cfg), "  memory: 256m\n", "  memory: 256m\n  disk: 1g\n  disk_unsupported: "+tc.policy+"\n", 1)
			if limited == string(cfg) {
				t.Fatalf("config has no memory line to extend:\n%s", cfg)
			}
			if err := os.WriteFile(e.ConfigPath, []byte(limited), 0o644); err != nil {
				t.Fatal(err)
			}
			user := harness.Uniq("sdk")
			e.AddUser(user)

			r := e.RunEnv([]string{"SSH_ORIGINAL_COMMAND=echo ran"}, "", "spawn", "--user", user)
			log, _ := os.ReadFile(logPath)
			if r.Code != tc.code || !strings.Contains(string(log), tc.logged) {
				t.Fatalf("spawn: exit %d (want %d)\nstdout:\n%s\nstderr:\n%s\nlog (want %q):\n%s", r.Code, tc.code, r.Stdout, r.Stderr, tc.logged, log)
			}
			if tc.code == 0 {
				if r.Stdout != "ran\n" {
					t.Fatalf("stdout = %q, want the command's output", r.Stdout)
				}
				return
			}
			m := incidentRE.FindStringSubmatch(r.Stderr)
			if m == nil || strings.Contains(r.Stdout, "ran") || strings.Contains(r.Stderr, "storage") {
				t.Fatalf("refused spawn: stdout %q, stderr %q; want an incident id and no details", r.Stdout, r.Stderr)
			}
			if !regexp.MustCompile(fmt.Sprintf(`%s.*storage driver cannot limit`, m[1])).Match(log) {
				t.Fatalf("the log has no line with incident %s and the reason:\n%s", m[1], log)
			}
		})
	}
}
