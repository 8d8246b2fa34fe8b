package doctor_test

import (
	"context"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/podspawn/podspawn/test/harness"
)

// TestDoctorDiskLimitRealDocker: with defaults.disk set on a host whose
// storage driver cannot limit a container's size (overlay2 on ext4, as on
// this project's CI), doctor says so: a failure when sessions are
// refused, a warning when they start without the limit.
func TestDoctorDiskLimitRealDocker(t *testing.T) {
	info, err := harness.Docker(t).Info(context.Background())
	must(t, err)
	if info.Driver != "overlay2" || strings.Contains(strings.Join(flatten(info.DriverStatus), " "), "xfs") {
		t.Skipf("storage driver %s %v may support size limits; this test needs one that does not", info.Driver, info.DriverStatus)
	}
	for policy, want := range map[string]string{
		"refuse": `(?m)^  \[FAIL\] disk limit: storage driver overlay2 on \S+ cannot limit a container's size: every session is refused \(defaults.disk 1g, defaults.disk_unsupported: refuse\)\n        fix: .*defaults.disk_unsupported: warn\n`,
		"warn":   `(?m)^  \[warn\] disk limit: storage driver overlay2 on \S+ cannot limit a container's size: sessions start without the 1g limit \(defaults.disk_unsupported: warn\)\n`,
	} {
		t.Run(policy, func(t *testing.T) {
			r := newRoot(t, "")
			cfg, err := os.ReadFile(r.ConfigPath)
			must(t, err)
			must(t, os.WriteFile(r.ConfigPath, []byte(strings.Replace(string(cfg), "  memory: 256m\n", "  memory: 256m\n  disk: 1g\n  disk_unsupported: "+policy+"\n", 1)), 0o644))
			res := r.doctor("")
			if !regexp.MustCompile(want).MatchString(res.Stdout) {
				t.Fatalf("doctor output has no line matching %s:\n%s", want, res.Stdout)
			}
		})
	}
}

func flatten(kvs [][2]string) []string {
	var out []string
	for _, kv := range kvs {
		out = append(out, kv[0], kv[1])
	}
	return out
}
