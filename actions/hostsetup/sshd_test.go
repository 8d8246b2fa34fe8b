package hostsetup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var params = SSHDParams{
	Binary: "/usr/local/bin/podspawn", Config: "/etc/podspawn/config.yaml",
	AuthKeysUser: "podspawn-auth", Group: "podspawn",
}

func TestRenderBlock(t *testing.T) {
	head := "# BEGIN podspawn\n# Managed by 'podspawn server-setup': this block is rewritten on every run; keep it last in the file.\n"
	global := "AuthorizedKeysCommand /usr/local/bin/podspawn --config /etc/podspawn/config.yaml auth-keys %u %t %k\n" +
		"AuthorizedKeysCommandUser podspawn-auth\n" +
		"Match Group podspawn\n" +
		"    AuthorizedKeysFile none\n" +
		"    PasswordAuthentication no\n" +
		"    KbdInteractiveAuthentication no\n" +
		"    AuthenticationMethods publickey\n"
	tail := "    PermitTunnel no\n" +
		"    X11Forwarding no\n" +
		"    PermitUserRC no\n" +
		"    AcceptEnv PODSPAWN_PROJECT\n" +
		"# END podspawn\n"
	tcp := params
	tcp.AllowTCPForwarding = true
	agent := params
	agent.AllowAgentForwarding = true
	cases := map[string]struct {
		p        SSHDParams
		matchAll bool
		want     string
	}{
		"default: no forwarding at all": {p: params, want: head + global + "    DisableForwarding yes\n" + tail},
		"after other Match blocks":      {p: params, matchAll: true, want: head + "Match all\n" + global + "    DisableForwarding yes\n" + tail},
		"tcp forwarding allowed": {p: tcp, want: head + global +
			"    AllowTcpForwarding local\n    AllowStreamLocalForwarding no\n    AllowAgentForwarding no\n    GatewayPorts no\n    PermitListen none\n" + tail},
		"agent forwarding allowed": {p: agent, want: head + global +
			"    AllowTcpForwarding no\n    AllowStreamLocalForwarding no\n    AllowAgentForwarding yes\n    GatewayPorts no\n    PermitListen none\n" + tail},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if d := cmp.Diff(tc.want, RenderBlock(tc.p, tc.matchAll)); d != "" {
				t.Errorf("block (-want +got):\n%s", d)
			}
		})
	}
}

func TestSplice(t *testing.T) {
	block := RenderBlock(params, false)
	blockAll := RenderBlock(params, true)
	old := params
	old.Binary = "/opt/old/podspawn"
	oldBlock := RenderBlock(old, false)
	base := "Include /etc/ssh/sshd_config.d/*.conf\nUsePAM yes\n"
	cases := map[string]struct {
		in, want string
		wantErr  string
	}{
		"empty file":                         {in: "", want: block},
		"appended":                           {in: base, want: base + block},
		"no final newline":                   {in: "UsePAM yes", want: "UsePAM yes\n" + block},
		"unchanged when already there":       {in: base + block, want: base + block},
		"new binary path replaces the block": {in: base + oldBlock, want: base + block},
		"block moved to the end": {
			in:   base + oldBlock + "PrintMotd no\n",
			want: base + "PrintMotd no\n" + block,
		},
		"Match all when the file has a Match block": {
			in:   base + "Match User backup\n    ForceCommand /usr/bin/rsync\n",
			want: base + "Match User backup\n    ForceCommand /usr/bin/rsync\n" + blockAll,
		},
		"commented Match does not count":     {in: base + "#Match User anoncvs\n", want: base + "#Match User anoncvs\n" + block},
		"AuthorizedKeysCommand none is fine": {in: "AuthorizedKeysCommand none\n", want: "AuthorizedKeysCommand none\n" + block},
		"same AuthorizedKeysCommandUser is fine": {
			in:   "AuthorizedKeysCommandUser podspawn-auth\n",
			want: "AuthorizedKeysCommandUser podspawn-auth\n" + block,
		},
		"legacy podspawn block is replaced": {
			in: base + "# Added by podspawn server-setup\nAuthorizedKeysCommand /usr/local/bin/podspawn auth-keys %u %t %k\n" +
				"AuthorizedKeysCommandUser nobody\nAcceptEnv PODSPAWN_PROJECT\nPrintMotd no\n",
			want: base + "PrintMotd no\n" + block,
		},
		"foreign AuthorizedKeysCommand": {
			in:      base + "AuthorizedKeysCommand /usr/bin/sss_ssh_authorizedkeys\n",
			wantErr: "line 3 sets its own AuthorizedKeysCommand (/usr/bin/sss_ssh_authorizedkeys)",
		},
		"foreign AuthorizedKeysCommand with =": {
			in:      "authorizedkeyscommand=/usr/bin/x\n",
			wantErr: "line 1 sets its own AuthorizedKeysCommand (/usr/bin/x)",
		},
		"foreign AuthorizedKeysCommandUser": {
			in:      "AuthorizedKeysCommandUser nobody\n",
			wantErr: "line 1 sets AuthorizedKeysCommandUser nobody",
		},
		"BEGIN without END": {
			in:      base + "# BEGIN podspawn\nAuthorizedKeysCommandUser x\n",
			wantErr: `line 3: "# BEGIN podspawn" has no "# END podspawn" after it`,
		},
		"END without BEGIN": {
			in:      base + "# END podspawn\n",
			wantErr: `line 3: "# END podspawn" without a "# BEGIN podspawn" before it`,
		},
		"two blocks": {
			in:      block + block,
			wantErr: `a second "# BEGIN podspawn" (the first is at line 1)`,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := Splice([]byte(tc.in), params)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want error containing %q, got %v", tc.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, string(got)); d != "" {
				t.Errorf("content (-want +got):\n%s", d)
			}
			again, err := Splice(got, params)
			if err != nil || string(again) != string(got) {
				t.Errorf("second Splice is not a no-op (err %v):\n%s", err, cmp.Diff(string(got), string(again)))
			}
		})
	}
}

// fakeSSHD answers "sshd -t -f P" (fails when P holds a line "Bogus") and
// "sshd -T -f P" (prints the first AuthorizedKeysCommand(User) in P, or
// the ones of override, which plays an Include'd file that comes first).
// A key "reject" in override makes "sshd -t" reject any file holding the
// podspawn block (a newer block sshd does not understand).
func fakeSSHD(override map[string]string) func(args []string) ([]byte, error) {
	return func(args []string) ([]byte, error) {
		data, err := os.ReadFile(args[2])
		if err != nil {
			return nil, exit("sshd", args, 255, err.Error())
		}
		got := map[string]string{}
		for k, v := range override {
			got[k] = v
		}
		for i, l := range strings.Split(string(data), "\n") {
			k, v := keyword(l)
			if k == "bogus" {
				return nil, exit("sshd", args, 255, fmt.Sprintf("%s: line %d: Bad configuration option: Bogus", args[2], i+1))
			}
			if (k == "authorizedkeyscommand" || k == "authorizedkeyscommanduser") && got[k] == "" {
				got[k] = v
			}
		}
		if args[0] == "-t" {
			if override["reject"] != "" && strings.Contains(string(data), BeginMarker) {
				return nil, exit("sshd", args, 255, override["reject"])
			}
			return nil, nil
		}
		out := ""
		for _, k := range []string{"authorizedkeyscommand", "authorizedkeyscommanduser"} {
			if got[k] == "" {
				got[k] = "none"
			}
			out += k + " " + got[k] + "\n"
		}
		return []byte("port 22\n" + out), nil
	}
}

func TestSSHDApply(t *testing.T) {
	ctx := context.Background()
	orig := "Include /etc/ssh/sshd_config.d/*.conf\nUsePAM yes\n"
	cases := map[string]struct {
		orig       string
		override   map[string]string
		dryRun     bool
		wantErr    string
		wantFile   string // "" means orig
		wantBackup bool
		wantChange bool
	}{
		"writes the block and a backup": {orig: orig, wantFile: orig + RenderBlock(params, false), wantBackup: true, wantChange: true},
		"invalid before: nothing touched": {
			orig:    orig + "Bogus yes\n",
			wantErr: "the current sshd config",
		},
		"an Include'd AuthorizedKeysCommand wins: restored": {
			orig:       orig,
			override:   map[string]string{"authorizedkeyscommand": "/usr/bin/other %u"},
			wantErr:    "restored from",
			wantBackup: true,
		},
		"an Include'd AuthorizedKeysCommandUser wins: restored": {
			orig:       orig,
			override:   map[string]string{"authorizedkeyscommanduser": "nobody"},
			wantErr:    `sshd would run auth-keys as "nobody"`,
			wantBackup: true,
		},
		"sshd -t rejects the new file: restored": {
			orig:       orig,
			override:   map[string]string{"reject": "line 7: Directive 'AuthorizedKeysCommand' is not allowed within a Match block"},
			wantErr:    "(byte for byte): sshd -t -f ",
			wantBackup: true,
		},
		"dry run changes nothing": {orig: orig, dryRun: true},
		"foreign command refused before any change": {
			orig:    orig + "AuthorizedKeysCommand /usr/bin/x\n",
			wantErr: "sets its own AuthorizedKeysCommand",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "sshd_config")
			if err := os.WriteFile(path, []byte(tc.orig), 0o640); err != nil {
				t.Fatal(err)
			}
			f := newFakeHost()
			f.hooks["sshd"] = fakeSSHD(tc.override)
			c, changed, err := SSHD{Runner: f, Path: path, Params: params, DryRun: tc.dryRun}.Apply(ctx)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want error containing %q, got %v", tc.wantErr, err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if changed != tc.wantChange {
				t.Errorf("changed = %v, want %v", changed, tc.wantChange)
			}
			want := tc.wantFile
			if want == "" {
				want = tc.orig
			}
			got, _ := os.ReadFile(path)
			if d := cmp.Diff(want, string(got)); d != "" {
				t.Errorf("sshd_config (-want +got):\n%s", d)
			}
			if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
				t.Errorf("mode %o, want the original 640", fi.Mode().Perm())
			}
			backup, err := os.ReadFile(path + BackupSuffix)
			if tc.wantBackup {
				if string(backup) != tc.orig {
					t.Errorf("backup differs from the original: %v\n%s", err, cmp.Diff(tc.orig, string(backup)))
				}
			} else if err == nil {
				t.Errorf("a backup was written")
			}
			if tc.dryRun && (c.Would == "" || len(c.Notes) == 0 || c.Notes[0] != "  # BEGIN podspawn") {
				t.Errorf("dry run should describe the block, got %+v", c)
			}
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				if strings.Contains(e.Name(), "tmp") {
					t.Errorf("temporary file %s left behind", e.Name())
				}
			}
		})
	}
}

func TestSSHDApplyTwiceIsANoOp(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sshd_config")
	if err := os.WriteFile(path, []byte("UsePAM yes\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f := newFakeHost()
	f.hooks["sshd"] = fakeSSHD(nil)
	s := SSHD{Runner: f, Path: path, Params: params}
	if _, changed, err := s.Apply(ctx); err != nil || !changed {
		t.Fatalf("first Apply: changed=%v err=%v", changed, err)
	}
	first, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("after first Apply: %v", err)
	}
	if string(first) == "UsePAM yes\n" {
		t.Fatalf("first Apply reported a change but left the file as it was")
	}
	if err := os.Remove(path + BackupSuffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	c, changed, err := s.Apply(ctx)
	if err != nil || changed || c.Done != "" {
		t.Fatalf("second Apply: %+v changed=%v err=%v", c, changed, err)
	}
	second, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("after second Apply: %v", err)
	}
	if string(first) != string(second) {
		t.Errorf("second run changed the file")
	}
	if _, err := os.Stat(path + BackupSuffix); err == nil {
		t.Errorf("second run wrote a backup")
	}
}

func TestValidateConfigPath(t *testing.T) {
	for p, ok := range map[string]bool{
		"/usr/local/bin/podspawn": true, "/opt/podspawn-1.2/bin/podspawn_x+y": true,
		"relative/podspawn": false, "/opt/my tools/podspawn": false, "/opt/a,b": false, "/opt/a:b": false,
		"/opt/%u": false, `/opt/a"b`: false, "/opt/a=b": false,
	} {
		if err := ValidateConfigPath("path", p); (err == nil) != ok {
			t.Errorf("ValidateConfigPath(%q) = %v, want ok=%v", p, err, ok)
		}
	}
}
