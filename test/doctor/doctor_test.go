// Package doctor_test runs the real podspawn binary's doctor and update
// commands against temporary roots, a fake and the real Docker daemon, and
// a local release server.
package doctor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/system"
	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/desired/lock"
	"github.com/podspawn/podspawn/desired/sqlstore"
	"github.com/podspawn/podspawn/test/doctor/fakedocker"
	"github.com/podspawn/podspawn/test/harness"
)

const imageID = "sha256:feedfacecafe0123456789abcdef0123456789abcdef0123456789abcdef0123"

const poolsFix = `add larger "default-address-pools" to /etc/docker/daemon.json, e.g. {"base":"10.200.0.0/16","size":24}, and restart Docker`

// healthyDocker is a fake daemon with the test image and room for 255 more
// session networks: one /16 pool of /24s, the first taken by the bridge.
func healthyDocker() fakedocker.FakeDocker {
	return fakedocker.FakeDocker{ServerVersion: "28.5.2", Images: map[string]string{harness.Image: imageID},
		AddressPools: []system.NetworkAddressPool{{Base: "10.200.0.0/16", Size: 24}},
		Networks:     []fakedocker.Network{{Name: "bridge", Subnets: []string{"10.200.0.0/24"}}, {Name: "host"}, {Name: "none"}}}
}

// root is a harness env completed into a healthy doctor root: fake sshd
// and ssh on PATH, an sshd_config wired to podspawn, the lock directory,
// a state database and a running "cleanup daemon".
type root struct {
	*harness.Env
	binDir string
	sshd   string
}

func newRoot(t *testing.T, extra string) *root {
	t.Helper()
	sshdConfig := filepath.Join(t.TempDir(), "sshd_config")
	env := harness.NewEnv(t, harness.Options{Extra: "ssh:\n  sshd_config: " + sshdConfig + "\n  auth_keys_user: root\n" + extra})
	r := &root{Env: env, binDir: filepath.Join(env.Root, "bin"), sshd: sshdConfig}
	must(t, os.MkdirAll(r.binDir, 0o755))
	must(t, os.MkdirAll(filepath.Join(env.StateDir, "locks"), 0o700))
	must(t, os.Chmod(env.KeyDir, 0o750)) // root's, readable by the auth-keys group (root here)
	must(t, os.WriteFile(filepath.Join(r.binDir, "sshd"), []byte(`#!/bin/sh
case "$1" in
-V) echo "OpenSSH_9.2p1 Debian-2+deb12u3, OpenSSL 3.0.15 3 Sep 2024" >&2 ;;
-t) [ -r "$3" ] || { echo "$3: No such file or directory" >&2; exit 255; } ;;
esac
`), 0o755))
	must(t, os.WriteFile(sshdConfig, []byte(fmt.Sprintf("AuthorizedKeysCommand %s --config %s auth-keys %%u %%t %%k\nAuthorizedKeysCommandUser root\n", env.Bin, env.ConfigPath)), 0o644))
	st, err := sqlstore.Open(context.Background(), env.DBPath)
	must(t, err)
	st.Close()
	// This test process plays the cleanup daemon, with the daemon's lock.
	lock, err := lock.AcquireDaemon(lock.DaemonPath(env.StateDir))
	must(t, err)
	t.Cleanup(lock.Release)
	return r
}

// doctor runs "podspawn doctor" with DOCKER_HOST at host (empty: the
// environment's) and PATH holding only the fake OpenSSH tools.
func (r *root) doctor(host string, args ...string) harness.Result {
	r.T.Helper()
	env := []string{"PATH=" + r.binDir}
	if host != "" {
		env = append(env, "DOCKER_HOST="+host)
	}
	return r.RunEnv(env, "", append([]string{"doctor"}, args...)...)
}

func fakeDocker(t *testing.T, f fakedocker.FakeDocker) string {
	sock := fakedocker.Start(t, f)
	must(t, os.Chmod(sock, 0o660))
	return "unix://" + sock
}

var diskLine = regexp.MustCompile(`(?m)^  \[(pass|warn|FAIL)\] disk space.*\n(        fix: .*\n)?`)

// withoutDisk removes the disk space line, whose verdict depends on the
// machine; it returns the status it had.
func withoutDisk(t *testing.T, out string) (string, string) {
	t.Helper()
	m := diskLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no disk space line in:\n%s", out)
	}
	return diskLine.ReplaceAllString(out, "  [?] disk space\n"), m[1]
}

// summary rewrites the summary for the disk check's actual verdict.
func summary(passed, warned, failed int, disk string) string {
	switch disk {
	case "pass":
		passed++
	case "warn":
		warned++
	default:
		failed++
	}
	return fmt.Sprintf("%d passed, %d warned, %d failed\n", passed, warned, failed)
}

func TestDoctorHealthyThenBroken(t *testing.T) {
	r := newRoot(t, "")
	host := fakeDocker(t, healthyDocker())

	res := r.doctor(host)
	out, disk := withoutDisk(t, res.Stdout)
	want := `  [pass] Docker daemon
  [pass] Docker socket
  [pass] OpenSSH version
  [pass] sshd config valid
  [pass] AuthorizedKeysCommand
  [pass] podspawn config dir
  [pass] key directory
  [pass] state directory
  [pass] lock directory
  [?] disk space
  [pass] disk limit
  [pass] home size
  [pass] default image
  [pass] session networks
  [pass] host access rules
  [pass] config file
  [pass] state database
  [pass] cleanup daemon
  [pass] removal guard
  [pass] audit log

` + summary(19, 0, 0, disk)
	if diff := cmp.Diff(want, out); diff != "" {
		t.Errorf("stdout (-want +got):\n%s\nstderr:\n%s", diff, res.Stderr)
	}
	if disk != "FAIL" && (res.Code != 0 || res.Stderr != "") {
		t.Errorf("exit %d, stderr %q; want 0 and nothing", res.Code, res.Stderr)
	}

	// Break two things: a warning with its fix, and a failure.
	must(t, os.Chmod(r.KeyDir, 0o755))
	must(t, os.Remove(filepath.Join(r.StateDir, "locks")))
	res = r.doctor(host)
	out, disk = withoutDisk(t, res.Stdout)
	locks := filepath.Join(r.StateDir, "locks")
	want = `  [pass] Docker daemon
  [pass] Docker socket
  [pass] OpenSSH version
  [pass] sshd config valid
  [pass] AuthorizedKeysCommand
  [pass] podspawn config dir
  [warn] key directory: ` + r.KeyDir + ` has mode 0755, should be 0750
        fix: sudo podspawn server-setup (it gives the key directory and its files to root, readable by the auth-keys account's group, without following links)
  [pass] state directory
  [FAIL] lock directory: ` + locks + ` does not exist; run 'podspawn server-setup'
        fix: sudo mkdir -p -m 700 ` + locks + ` && sudo chown root:root ` + locks + `
  [?] disk space
  [pass] disk limit
  [pass] home size
  [pass] default image
  [pass] session networks
  [pass] host access rules
  [pass] config file
  [pass] state database
  [pass] cleanup daemon
  [pass] removal guard
  [pass] audit log

` + summary(17, 1, 1, disk)
	if diff := cmp.Diff(want, out); diff != "" {
		t.Errorf("stdout (-want +got):\n%s", diff)
	}
	failed := 1
	if disk == "FAIL" {
		failed++
	}
	// Exit 1 with one error line and no usage block.
	if diff := cmp.Diff(harness.Result{Stdout: res.Stdout, Stderr: fmt.Sprintf("Error: %d check(s) failed\n", failed), Code: 1}, res); diff != "" {
		t.Errorf("result (-want +got):\n%s", diff)
	}
}

func TestDoctorMissingSocketAndNoOpenSSH(t *testing.T) {
	r := newRoot(t, "")
	must(t, os.Remove(filepath.Join(r.binDir, "sshd")))
	missing := filepath.Join(r.Root, "missing.sock")
	res := r.doctor("unix://" + missing)
	for _, line := range []string{
		"  [FAIL] Docker daemon: Docker is not reachable at unix://" + missing + ": ",
		"  [FAIL] Docker socket: " + missing + " not found\n        fix: start Docker (sudo systemctl start docker), or point DOCKER_HOST at its socket\n",
		"  [FAIL] OpenSSH version: sshd not found in PATH; install openssh-server\n",
		"  [FAIL] sshd config valid: sshd not found in PATH; cannot validate " + r.sshd + "\n",
		"  [FAIL] default image: cannot check podspawn-test:busybox: ",
		"  [FAIL] session networks: cannot check Docker's address pools: ",
	} {
		if !strings.Contains(res.Stdout, line) {
			t.Errorf("stdout lacks %q:\n%s", line, res.Stdout)
		}
	}
	if res.Code != 1 {
		t.Errorf("exit %d, want 1", res.Code)
	}
}

// A daemon that accepts connections and never answers costs doctor one
// check timeout, not a hang.
func TestDoctorHangingDocker(t *testing.T) {
	r := newRoot(t, "")
	host := fakeDocker(t, fakedocker.FakeDocker{Hang: true})
	res := r.doctor(host)
	fix := "        fix: Docker accepted the connection but did not answer; check it with: sudo systemctl status docker\n"
	for _, line := range []string{
		"  [FAIL] Docker daemon: no answer within 5s\n" + fix,
		"  [FAIL] default image: no answer within 5s\n" + fix,
		"  [FAIL] session networks: no answer within 5s\n" + fix,
		"  [pass] Docker socket\n",
	} {
		if !strings.Contains(res.Stdout, line) {
			t.Errorf("stdout lacks %q:\n%s", line, res.Stdout)
		}
	}
	if res.Code != 1 {
		t.Errorf("exit %d, want 1", res.Code)
	}
}

// A broken config is reported, and nothing is checked against defaults.
func TestDoctorBrokenConfig(t *testing.T) {
	r := newRoot(t, "")
	must(t, os.WriteFile(r.ConfigPath, []byte("session:\n  grace_period: 60\n"), 0o644))
	host := fakeDocker(t, healthyDocker())
	res := r.doctor(host)
	if !regexp.MustCompile(`(?m)^  \[FAIL\] config file: config ` + regexp.QuoteMeta(r.ConfigPath) + `: .*grace_period.*60`).MatchString(res.Stdout) {
		t.Errorf("no config file failure naming the key:\n%s", res.Stdout)
	}
	if !strings.Contains(res.Stdout, "  [FAIL] key directory: not checked: the config file does not load (see the config file check)\n") {
		t.Errorf("key directory was checked against defaults:\n%s", res.Stdout)
	}
	if !strings.Contains(res.Stdout, "  [pass] session networks\n") {
		t.Errorf("session networks does not need the config, but was not checked:\n%s", res.Stdout)
	}
	if !strings.Contains(res.Stdout, "\n5 passed, 0 warned, 15 failed\n") {
		t.Errorf("summary:\n%s", res.Stdout)
	}
	if res.Code != 1 || res.Stderr != "Error: 15 check(s) failed\n" {
		t.Errorf("exit %d, stderr %q", res.Code, res.Stderr)
	}
}

// A server on Docker's built-in address pools with 20 session networks
// is warned before it runs out, with the daemon.json fix.
func TestDoctorSessionNetworksNearlyFull(t *testing.T) {
	r := newRoot(t, "")
	f := healthyDocker()
	f.AddressPools = nil
	f.Networks = []fakedocker.Network{{Name: "host"}, {Name: "none"}}
	for i := 17; i <= 31; i++ {
		f.Networks = append(f.Networks, fakedocker.Network{Name: fmt.Sprintf("net%d", i), Subnets: []string{fmt.Sprintf("172.%d.0.0/16", i)}})
	}
	for i := range 5 {
		f.Networks = append(f.Networks, fakedocker.Network{Name: fmt.Sprintf("lan%d", i), Subnets: []string{fmt.Sprintf("192.168.%d.0/20", 16*i)}})
	}
	res := r.doctor(fakeDocker(t, f))
	line := "  [warn] session networks: room for only 11 more session networks (20 of 31 address ranges in use); every session needs one\n" +
		"        fix: " + poolsFix + "\n"
	if !strings.Contains(res.Stdout, line) {
		t.Errorf("stdout lacks %q:\n%s", line, res.Stdout)
	}
}

var sessionNetworksDetail = regexp.MustCompile(`^(?:room for (?:only )?(\d+) more session networks \((\d+) of (\d+) address ranges in use\)(; every session needs one)?|no address range left for a session network \((\d+) of (\d+) in use\); new sessions cannot start)$`)

// checkRealSessionNetworks accepts whatever verdict the machine's Docker
// earns, as long as its numbers add up and the status fits them.
func checkRealSessionNetworks(t *testing.T, status, detail string, info system.Info) {
	t.Helper()
	m := sessionNetworksDetail.FindStringSubmatch(detail)
	if m == nil {
		t.Errorf("session networks: %s: %q does not match %s", status, detail, sessionNetworksDetail)
		return
	}
	num := func(s string) int {
		n, _ := strconv.Atoi(s)
		return n
	}
	free, used, capacity := num(m[1]), num(m[2]), num(m[3])
	if m[5] != "" {
		free, used, capacity = 0, num(m[5]), num(m[6])
	}
	wantStatus := "pass"
	switch {
	case free == 0:
		wantStatus = "fail"
	case free < 50:
		wantStatus = "warn"
	}
	if free != capacity-used || status != wantStatus || (m[4] != "") != (wantStatus == "warn") {
		t.Errorf("session networks: %s: %q: numbers or status do not add up", status, detail)
	}
	if len(info.DefaultAddressPools) == 0 && capacity != 31 {
		t.Errorf("session networks: %q: Docker runs on its built-in pools, which hold 31 networks", detail)
	}
}

// Against the real local Docker daemon and the busybox test image.
func TestDoctorRealDocker(t *testing.T) {
	dc := harness.Docker(t)
	r := newRoot(t, "")
	img, err := dc.ImageInspect(context.Background(), harness.Image)
	must(t, err)
	info, err := dc.Info(context.Background())
	must(t, err)

	res := r.RunEnv([]string{"PATH=" + r.binDir}, "", "doctor", "-o", "json")
	var rep struct {
		FormatVersion string `json:"format_version"`
		Checks        []struct {
			Name, Status, Detail string
		} `json:"checks"`
	}
	if err := json.Unmarshal([]byte(res.Stdout), &rep); err != nil {
		t.Fatalf("doctor -o json: %v\n%s\nstderr: %s", err, res.Stdout, res.Stderr)
	}
	got := map[string]string{}
	for _, c := range rep.Checks {
		got[c.Name] = c.Status + ": " + c.Detail
		if c.Name == "session networks" {
			checkRealSessionNetworks(t, c.Status, c.Detail, info)
		}
	}
	if _, ok := got["session networks"]; !ok {
		t.Error("no session networks check")
	}
	want := map[string]string{
		"Docker daemon": "pass: server version " + info.ServerVersion,
		"default image": "pass: " + harness.Image + " cached (" + strings.TrimPrefix(img.ID, "sha256:")[:12] + ")",
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s = %q, want %q", name, got[name], w)
		}
	}
	if rep.FormatVersion != "1" || len(rep.Checks) != 20 {
		t.Errorf("format_version %q, %d checks", rep.FormatVersion, len(rep.Checks))
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
