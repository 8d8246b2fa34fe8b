package main

import (
	"bytes"
	"crypto/ed25519"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/podspawn/podspawn/desired/config"
	"github.com/podspawn/podspawn/desired/keys"
)

func init() {
	if flag.Lookup("update") == nil {
		flag.Bool("update", false, "rewrite golden files under testdata/")
	}
}

func authKeysUpdate() bool {
	f := flag.Lookup("update")
	return f != nil && f.Value.String() == "true"
}

// testKey is a deterministic public key in authorized_keys form.
func testKey(t *testing.T, seed byte) string {
	t.Helper()
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
	pub, err := ssh.NewPublicKey(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
}

func keyBase64(line string) string { return strings.Fields(line)[1] }

func TestRenderAuthorizedKeysGolden(t *testing.T) {
	k1, k2, k3 := testKey(t, 1), testKey(t, 2), testKey(t, 3)
	file := strings.Join([]string{
		"# alice's keys",
		"",
		k1 + " alice@laptop",
		`from="10.0.0.0/8",no-pty,command="/bin/evil" ` + k2 + " alice@ci",
		"ssh-ed25519 not-base64 broken",
		"   " + k3,
	}, "\n") + "\n"
	ks, bad := keys.Parse([]byte(file))
	if len(ks) != 3 || len(bad) != 1 {
		t.Fatalf("Parse: %d keys, %d invalid; want 3 and 1", len(ks), len(bad))
	}
	sudo := config.Defaults()
	direct := config.Defaults()
	direct.SSH.UseSudo = false
	direct.SSH.AllowAgentForwarding = true
	direct.SSH.AllowTCPForwarding = true
	const bin, cfgPath = "/usr/local/bin/podspawn", "/etc/podspawn/config.yaml"

	tests := []struct {
		name            string
		cfg             config.Config
		keyType, keyDat string
	}{
		{name: "all_keys_sudo", cfg: sudo},
		{name: "all_keys_direct_forwarding", cfg: direct},
		{name: "match_key_with_options", cfg: sudo, keyType: "ssh-ed25519", keyDat: keyBase64(k2)},
		{name: "match_type_only", cfg: sudo, keyType: "ssh-ed25519"},
		{name: "no_match_type", cfg: sudo, keyType: "ssh-rsa", keyDat: keyBase64(k1)},
		{name: "no_match_data", cfg: sudo, keyType: "ssh-ed25519", keyDat: keyBase64(testKey(t, 9))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := renderAuthorizedKeys(tc.cfg, bin, cfgPath, "alice", ks, tc.keyType, tc.keyDat)
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", "authkeys", tc.name+".golden")
			if authKeysUpdate() {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("output differs from %s:\n got:\n%s\nwant:\n%s", golden, got, want)
			}
			// Every line must parse back as an authorized_keys line that
			// carries exactly podspawn's options (G21).
			for _, line := range strings.Split(strings.TrimSpace(string(got)), "\n") {
				if line == "" {
					continue
				}
				_, _, opts, rest, err := ssh.ParseAuthorizedKey([]byte(line))
				if err != nil || len(rest) != 0 {
					t.Fatalf("line does not parse as authorized_keys: %q: %v", line, err)
				}
				if !strings.HasPrefix(opts[0], `command="`) || opts[1] != "restrict" || opts[2] != "pty" {
					t.Fatalf("options of %q = %q", line, opts)
				}
			}
		})
	}
}

func TestForcedCommandRefusesUnsafePaths(t *testing.T) {
	cfg := config.Defaults()
	for _, p := range []string{"/opt/pod spawn/podspawn", `/opt/"x"/podspawn`, "/opt/$(id)/podspawn", "relative/podspawn", "/opt/x\\y"} {
		if _, err := forcedCommand(cfg, p, "/etc/podspawn/config.yaml", "alice"); err == nil {
			t.Errorf("forcedCommand accepted binary %q", p)
		}
		if _, err := forcedCommand(cfg, "/usr/bin/podspawn", p, "alice"); err == nil {
			t.Errorf("forcedCommand accepted config %q", p)
		}
	}
}

// TestAuthKeysCommand runs the command as sshd would, through run().
func TestAuthKeysCommand(t *testing.T) {
	root := t.TempDir()
	keyDir := filepath.Join(root, "keys")
	if err := os.MkdirAll(keyDir, 0o700); err != nil {
		t.Fatal(err)
	}
	k1, k2 := testKey(t, 1), testKey(t, 2)
	if err := os.WriteFile(filepath.Join(keyDir, "alice"), []byte(k1+" a@1\n"+k2+" a@2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "secret"), []byte(k2+" not-a-user\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(root, "config.yaml")
	if err := os.WriteFile(good, []byte("auth:\n  key_dir: "+keyDir+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	broken := filepath.Join(root, "broken.yaml")
	if err := os.WriteFile(broken, []byte("auth:\n  key_dir: "+keyDir+"\nsession:\n  grace_period: 60\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	prefix := `command="/usr/bin/sudo -n ` + exe + ` --config ` + good + ` spawn",restrict,pty `

	tests := []struct {
		name       string
		args       []string
		wantOut    string
		wantCode   int
		wantStderr string
	}{
		{name: "all keys", args: []string{"--config", good, "auth-keys", "alice"}, wantOut: prefix + k1 + " a@1\n" + prefix + k2 + " a@2\n"},
		{name: "sshd %u %t %k", args: []string{"--config", good, "auth-keys", "alice", "ssh-ed25519", keyBase64(k2)}, wantOut: prefix + k2 + " a@2\n"},
		{name: "unknown user", args: []string{"--config", good, "auth-keys", "bob"}},
		{name: "path traversal", args: []string{"--config", good, "auth-keys", "../secret"}},
		{name: "dot dot etc", args: []string{"--config", good, "auth-keys", "../etc"}},
		{name: "upper case", args: []string{"--config", good, "auth-keys", "Alice"}},
		{name: "broken config fails closed", args: []string{"--config", broken, "auth-keys", "alice"}, wantCode: 1,
			wantStderr: "auth-keys: denying alice: config " + broken + ": line 4 (session.grace_period)"},
		{name: "missing config is defaults", args: []string{"--config", filepath.Join(root, "none.yaml"), "auth-keys", "alice"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(tc.args, &out, &errb)
			if code != tc.wantCode || out.String() != tc.wantOut {
				t.Fatalf("run(%q) = %d, stdout:\n%s\nwant %d, stdout:\n%s\nstderr:\n%s", tc.args, code, out.String(), tc.wantCode, tc.wantOut, errb.String())
			}
			if !strings.Contains(errb.String(), tc.wantStderr) {
				t.Fatalf("stderr %q does not contain %q", errb.String(), tc.wantStderr)
			}
		})
	}
}
