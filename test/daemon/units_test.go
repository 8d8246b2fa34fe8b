package daemon_test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/test/harness"
)

// unit is a parsed systemd unit file: section -> key -> values in order.
type unit map[string]map[string][]string

func parseUnit(t *testing.T, path string) unit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = strings.Trim(line, "[]")
			if u[section] != nil {
				t.Errorf("%s:%d: section [%s] repeated", path, n, section)
			}
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" || strings.HasSuffix(line, `\`) {
				t.Errorf("%s:%d: not a key=value line in a section: %q", path, n, line)
				continue
			}
			u[section][strings.TrimSpace(k)] = append(u[section][strings.TrimSpace(k)], strings.TrimSpace(v))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

// get returns the single value of key, failing if it is absent or repeated.
func (u unit) get(t *testing.T, name, section, key string) string {
	t.Helper()
	v := u[section][key]
	if len(v) != 1 {
		t.Errorf("%s: [%s] %s has %d values %q, want exactly one", name, section, key, len(v), v)
		return ""
	}
	return v[0]
}

func unitsDir() string { return filepath.Join(harness.RepoRoot(), "hack", "systemd") }

func TestSystemdUnitsDeclareWhatOperatorsRelyOn(t *testing.T) {
	daemon := parseUnit(t, filepath.Join(unitsDir(), "podspawn-cleanup.service"))
	once := parseUnit(t, filepath.Join(unitsDir(), "podspawn-cleanup-once.service"))
	timer := parseUnit(t, filepath.Join(unitsDir(), "podspawn-cleanup.timer"))

	want := map[string]string{
		"Service/Type":           "simple",
		"Service/ExecStart":      "/usr/local/bin/podspawn cleanup --daemon --interval 60s",
		"Service/Restart":        "on-failure",
		"Service/ReadWritePaths": "/var/lib/podspawn -/var/log/podspawn",
		"Install/WantedBy":       "multi-user.target",
	}
	hardening := map[string]string{
		"Service/NoNewPrivileges": "yes", "Service/ProtectSystem": "strict", "Service/ProtectHome": "yes",
		"Service/PrivateTmp": "yes", "Service/PrivateDevices": "yes",
	}
	check := func(name string, u unit, want map[string]string) {
		for sk, v := range want {
			section, key, _ := strings.Cut(sk, "/")
			if got := u.get(t, name, section, key); got != v {
				t.Errorf("%s: [%s] %s = %q, want %q", name, section, key, got, v)
			}
		}
	}
	check("podspawn-cleanup.service", daemon, want)
	check("podspawn-cleanup.service", daemon, hardening)
	check("podspawn-cleanup-once.service", once, map[string]string{"Service/Type": "oneshot", "Service/ExecStart": "/usr/local/bin/podspawn cleanup"})
	check("podspawn-cleanup-once.service", once, hardening)
	check("podspawn-cleanup.timer", timer, map[string]string{
		"Timer/OnBootSec": "30s", "Timer/OnUnitActiveSec": "60s", "Timer/Unit": "podspawn-cleanup-once.service", "Install/WantedBy": "timers.target",
	})
	for name, u := range map[string]unit{"podspawn-cleanup.service": daemon, "podspawn-cleanup-once.service": once} {
		for _, key := range []string{"After", "Wants"} {
			if !strings.Contains(strings.Join(u["Unit"][key], " "), "docker.service") {
				t.Errorf("%s: [Unit] %s does not name docker.service", name, key)
			}
		}
		// Hiding other users' processes would make live connections look dead.
		for _, key := range []string{"ProtectProc", "PrivatePIDs", "Requires", "BindsTo"} {
			if v := append(u["Service"][key], u["Unit"][key]...); len(v) > 0 {
				t.Errorf("%s: %s=%q must not be set", name, key, v)
			}
		}
	}
	if once["Install"] != nil {
		t.Errorf("podspawn-cleanup-once.service has an [Install] section; the timer starts it")
	}
	if diff := cmp.Diff([]string{"podspawn-cleanup-once.service", "podspawn-cleanup.service", "podspawn-cleanup.timer"}, listDir(t, unitsDir())); diff != "" {
		t.Errorf("files in hack/systemd (-want +got):\n%s", diff)
	}

	// The daemon's command line must be one the binary accepts.
	bin := harness.Binary(t)
	args := append(strings.Fields(want["Service/ExecStart"])[1:], "--help")
	if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
		t.Errorf("podspawn %v: %v\n%s", args, err, out)
	}
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// systemd's own checker, on copies whose ExecStart points at the built
// binary (verify insists the command exists). It needs no running systemd.
func TestSystemdUnitsPassSystemdAnalyzeVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatalf("systemd-analyze is missing: run hack/ci-setup.sh (package systemd)")
	}
	bin := harness.Binary(t)
	dir := t.TempDir()
	var paths []string
	for _, name := range listDir(t, unitsDir()) {
		data, err := os.ReadFile(filepath.Join(unitsDir(), name))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(strings.ReplaceAll(string(data), "/usr/local/bin/podspawn", bin)), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	out, err := exec.Command(analyze, append([]string{"verify"}, paths...)...).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
