package hostsetup

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/podspawn/podspawn/desired/config"
)

func TestRenderSudoers(t *testing.T) {
	want := `Cmnd_Alias PODSPAWN_SPAWN = /usr/local/bin/podspawn --config /etc/podspawn/config.yaml spawn
Defaults!PODSPAWN_SPAWN env_keep += "SSH_ORIGINAL_COMMAND PODSPAWN_PROJECT SSH_AUTH_SOCK SSH_CONNECTION SSH_CLIENT TERM"
Defaults!PODSPAWN_SPAWN !requiretty
%podspawn ALL=(root) NOPASSWD: PODSPAWN_SPAWN
`
	if d := cmp.Diff(want, RenderSudoers("/usr/local/bin/podspawn", "/etc/podspawn/config.yaml", "podspawn")); d != "" {
		t.Errorf("sudoers (-want +got):\n%s", d)
	}
	want = `Cmnd_Alias PODSPAWN_SPAWN_DEV_OPS_2 = /p --config /c spawn
Defaults!PODSPAWN_SPAWN_DEV_OPS_2 env_keep += "SSH_ORIGINAL_COMMAND PODSPAWN_PROJECT SSH_AUTH_SOCK SSH_CONNECTION SSH_CLIENT TERM"
Defaults!PODSPAWN_SPAWN_DEV_OPS_2 !requiretty
%dev-ops_2 ALL=(root) NOPASSWD: PODSPAWN_SPAWN_DEV_OPS_2
`
	if d := cmp.Diff(want, RenderSudoers("/p", "/c", "dev-ops_2")); d != "" {
		t.Errorf("sudoers of another group (-want +got):\n%s", d)
	}
}

func TestSudoersApply(t *testing.T) {
	ctx := context.Background()
	content := RenderSudoers("/usr/local/bin/podspawn", "/etc/podspawn/config.yaml", "podspawn")
	cases := map[string]struct {
		existing   *string
		visudoFile error // answer of visudo -c -q -f TMP
		visudoAll  error // answer of visudo -c -q
		included   bool
		name       string
		dryRun     bool
		wantErr    string
		wantFile   *string
		wantCalls  []string
	}{
		"installed": {
			wantFile:  &content,
			wantCalls: []string{"visudo -c -q -f TMP"},
		},
		"installed in the include dir: whole config checked too": {
			included:  true,
			wantFile:  &content,
			wantCalls: []string{"visudo -c -q -f TMP", "visudo -c -q"},
		},
		"unchanged: no visudo, no write": {
			existing: &content,
			wantFile: &content,
		},
		"visudo rejects the rules: nothing installed": {
			visudoFile: exit("visudo", nil, 1, "syntax error near line 1"),
			wantErr:    "visudo rejected the sudoers rules",
			wantCalls:  []string{"visudo -c -q -f TMP"},
		},
		"rules clash with another file: old content put back": {
			existing:  ptr("# old rules\n"),
			included:  true,
			visudoAll: exit("visudo", nil, 1, "Duplicate Cmnd_Alias PODSPAWN_SPAWN"),
			wantErr:   "the previous state was put back",
			wantFile:  ptr("# old rules\n"),
			wantCalls: []string{"visudo -c -q -f TMP", "visudo -c -q"},
		},
		"rules clash with another file: new file removed": {
			included:  true,
			visudoAll: exit("visudo", nil, 1, "Duplicate Cmnd_Alias PODSPAWN_SPAWN"),
			wantErr:   "the previous state was put back",
			wantCalls: []string{"visudo -c -q -f TMP", "visudo -c -q"},
		},
		"name sudo would ignore": {
			included: true,
			name:     "podspawn.conf",
			wantErr:  "sudo ignores files",
		},
		"dry run": {
			dryRun: true,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			fname := tc.name
			if fname == "" {
				fname = "podspawn"
			}
			path := filepath.Join(dir, fname)
			if tc.existing != nil {
				os.WriteFile(path, []byte(*tc.existing), SudoersMode)
			}
			f := newFakeHost()
			var sawTmp []string
			f.hooks["visudo"] = func(args []string) ([]byte, error) {
				if len(args) == 4 {
					data, err := os.ReadFile(args[3])
					if err != nil || string(data) != content {
						t.Errorf("visudo checked %s with content %q (%v)", args[3], data, err)
					}
					fi, _ := os.Stat(args[3])
					if fi.Mode().Perm() != SudoersMode || filepath.Dir(args[3]) != dir || !strings.HasPrefix(filepath.Base(args[3]), ".") {
						t.Errorf("temporary file %s: mode %o, want 0440, a dot-file in %s", args[3], fi.Mode().Perm(), dir)
					}
					sawTmp = append(sawTmp, args[3])
					return nil, tc.visudoFile
				}
				return nil, tc.visudoAll
			}
			s := Sudoers{Runner: f, Path: path, Content: content, DryRun: tc.dryRun}
			if tc.included {
				s.IncludeDir = dir
			}
			_, err := s.Apply(ctx)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want error containing %q, got %v", tc.wantErr, err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			var calls []string
			for _, c := range f.calls {
				for _, tmp := range sawTmp {
					c = strings.ReplaceAll(c, tmp, "TMP")
				}
				calls = append(calls, c)
			}
			if d := cmp.Diff(tc.wantCalls, calls, cmpopts.EquateEmpty()); d != "" {
				t.Errorf("calls (-want +got):\n%s", d)
			}
			data, err := os.ReadFile(path)
			if tc.wantFile == nil {
				if err == nil {
					t.Errorf("want no sudoers file, got %q", data)
				}
			} else {
				if d := cmp.Diff(*tc.wantFile, string(data)); d != "" {
					t.Errorf("sudoers (-want +got):\n%s", d)
				}
				fi, _ := os.Stat(path)
				if fi.Mode().Perm() != SudoersMode {
					t.Errorf("mode %o, want 0440", fi.Mode().Perm())
				}
			}
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				if strings.HasPrefix(e.Name(), ".") {
					t.Errorf("temporary file %s left behind", e.Name())
				}
			}
		})
	}
}

func ptr(s string) *string { return &s }

func TestDefaultConfigRoundTrip(t *testing.T) {
	custom := config.Defaults()
	custom.Auth.KeyDir = "/srv/ps/keys"
	custom.State.DBPath = "/srv/ps/state/state.db"
	custom.Session.GracePeriod = config.Duration{Duration: 90 * time.Second}
	custom.Session.MaxLifetime = config.Duration{Duration: 36 * time.Hour}
	custom.Cleanup.PendingTimeout = config.Duration{Duration: 5 * time.Minute}
	custom.Defaults.CPUs = 0.5
	custom.SSH.AllowTCPForwarding = true
	custom.SSH.Group = "devs"
	custom.Security.Tmpfs = map[string]string{"/tmp": "rw,size=64m"}
	custom.Security.Runtime = "runsc"
	custom.Security.AllowedHostPorts = []string{"8080", "53/udp"}
	custom.Security.HostPorts = []config.HostPort{{Protocol: "udp", Port: 53}, {Protocol: "tcp", Port: 8080}, {Protocol: "udp", Port: 8080}}
	for name, cfg := range map[string]config.Config{"defaults": config.Defaults(), "custom": custom} {
		t.Run(name, func(t *testing.T) {
			data := DefaultConfig(cfg)
			got, err := config.Parse(data)
			if err != nil {
				t.Fatalf("the rendered config does not parse: %v\n%s", err, data)
			}
			if d := cmp.Diff(cfg, got, cmpopts.IgnoreFields(config.Config{}, "Path", "Exists")); d != "" {
				t.Errorf("round trip (-want +got):\n%s", d)
			}
		})
	}
	data := string(DefaultConfig(config.Defaults()))
	for _, want := range []string{"grace_period: 60s", "max_lifetime: 8h", "allow_tcp_forwarding: false", "RISK:", "block_host_access: true", "allowed_host_ports: []"} {
		if !strings.Contains(data, want) {
			t.Errorf("default config lacks %q", want)
		}
	}
}

func TestReload(t *testing.T) {
	ctx := context.Background()
	type sig struct {
		PID int
		Sig syscall.Signal
	}
	cases := map[string]struct {
		systemd   bool
		active    string // unit systemctl is-active accepts
		pidFile   string
		comm      string
		wantDone  string
		wantCalls []string
		wantSigs  []sig
	}{
		"systemd": {
			systemd: true, active: "ssh",
			wantDone:  "reloaded (systemctl reload ssh)",
			wantCalls: []string{"systemctl is-active --quiet ssh", "systemctl reload ssh"},
		},
		"systemd with an sshd unit": {
			systemd: true, active: "sshd",
			wantDone:  "reloaded (systemctl reload sshd)",
			wantCalls: []string{"systemctl is-active --quiet ssh", "systemctl is-active --quiet sshd", "systemctl reload sshd"},
		},
		"pid file": {
			pidFile: "4242\n", comm: "sshd\n",
			wantDone: "reloaded (SIGHUP to pid 4242 from PIDFILE)",
			wantSigs: []sig{{4242, syscall.SIGHUP}},
		},
		"stale pid file naming another program": {
			pidFile: "4242\n", comm: "bash\n",
			wantDone: "NOT reloaded",
		},
		"no sshd at all": {wantDone: "NOT reloaded"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			rl := Reloader{SystemdDir: filepath.Join(root, "systemd"), PIDFile: filepath.Join(root, "sshd.pid"), ProcDir: filepath.Join(root, "proc")}
			if tc.systemd {
				os.Mkdir(rl.SystemdDir, 0o755)
			}
			if tc.pidFile != "" {
				os.WriteFile(rl.PIDFile, []byte(tc.pidFile), 0o644)
				os.MkdirAll(filepath.Join(rl.ProcDir, "4242"), 0o755)
				os.WriteFile(filepath.Join(rl.ProcDir, "4242", "comm"), []byte(tc.comm), 0o644)
			}
			f := newFakeHost()
			f.hooks["systemctl"] = func(args []string) ([]byte, error) {
				if args[0] == "is-active" && args[2] != tc.active {
					return nil, exit("systemctl", args, 3, "")
				}
				return nil, nil
			}
			rl.Runner = f
			var sigs []sig
			rl.Signal = func(pid int, s syscall.Signal) error { sigs = append(sigs, sig{pid, s}); return nil }
			c, err := rl.Reload(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if done := strings.ReplaceAll(c.Done, rl.PIDFile, "PIDFILE"); !strings.HasPrefix(done, tc.wantDone) {
				t.Errorf("Done = %q, want prefix %q", done, tc.wantDone)
			}
			if d := cmp.Diff(tc.wantCalls, f.calls, cmpopts.EquateEmpty()); d != "" {
				t.Errorf("calls (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.wantSigs, sigs, cmpopts.EquateEmpty()); d != "" {
				t.Errorf("signals (-want +got):\n%s", d)
			}
		})
	}
}
