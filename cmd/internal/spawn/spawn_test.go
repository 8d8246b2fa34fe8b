package spawn

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/desired"
)

func TestResolveUser(t *testing.T) {
	member := func(u, g string) (bool, error) { return u == "alice" && g == "podspawn", nil }
	broken := func(string, string) (bool, error) { return false, errors.New("nss down") }
	tests := map[string]struct {
		in      IdentityInput
		want    string
		wantErr string
	}{
		"sudo caller in group":          {in: IdentityInput{SudoUser: "alice", SudoUID: "1001", Group: "podspawn", InGroup: member}, want: "alice"},
		"sudo caller with same --user":  {in: IdentityInput{SudoUser: "alice", SudoUID: "1001", FlagUser: "alice", Group: "podspawn", InGroup: member}, want: "alice"},
		"sudo caller naming another":    {in: IdentityInput{SudoUser: "alice", SudoUID: "1001", FlagUser: "bob", Group: "podspawn", InGroup: member}, wantErr: `--user "bob" does not match the sudo caller "alice"`},
		"sudo caller not in group":      {in: IdentityInput{SudoUser: "bob", SudoUID: "1002", Group: "podspawn", InGroup: member}, wantErr: `user bob is not a member of the podspawn group "podspawn"`},
		"sudo caller with invalid name": {in: IdentityInput{SudoUser: "../etc", SudoUID: "1002", Group: "podspawn", InGroup: member}, wantErr: `sudo caller: invalid username "../etc"`},
		"group lookup fails closed":     {in: IdentityInput{SudoUser: "alice", SudoUID: "1001", Group: "podspawn", InGroup: broken}, wantErr: "nss down"},
		"root without sudo uses --user": {in: IdentityInput{FlagUser: "carol", Group: "podspawn", InGroup: broken}, want: "carol"},
		"root via sudo from root":       {in: IdentityInput{SudoUser: "root", SudoUID: "0", FlagUser: "carol", InGroup: broken}, want: "carol"},
		"root without --user":           {in: IdentityInput{}, wantErr: "--user is required"},
		"root with invalid --user":      {in: IdentityInput{FlagUser: "Bad"}, wantErr: `invalid username "Bad"`},
		"not root":                      {in: IdentityInput{EUID: 1000, SudoUser: "alice", SudoUID: "1001", FlagUser: "alice", InGroup: member}, wantErr: "must run as root"},
		"direct mode: the login":        {in: IdentityInput{EUID: 1000, Direct: true, Login: "alice", FlagUser: "alice"}, want: "alice"},
		"direct mode: no --user":        {in: IdentityInput{EUID: 1000, Direct: true, Login: "alice"}, want: "alice"},
		"direct mode: naming another":   {in: IdentityInput{EUID: 1000, Direct: true, Login: "alice", FlagUser: "bob"}, wantErr: `--user "bob" does not match the login "alice"`},
		"direct mode: unknown login":    {in: IdentityInput{EUID: 1000, Direct: true}, wantErr: "login name"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := ResolveUser(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ResolveUser() error = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ResolveUser() = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestResolveProject(t *testing.T) {
	tests := []struct {
		flag, env string
		want      string
		wantErr   bool
	}{
		{"", "", "", false},
		{"", "backend", "backend", false},
		{"", "backend.pod", "backend", false},
		{"web", "backend.pod", "web", false},
		{"", ".pod", "", false},
		{"", "../x", "", true},
		{"", "../x.pod", "", true},
		{"", "Bad", "", true},
		{"", "a b", "", true},
		{"", "x.pod.pod", "", true},
		{"-x", "", "", true},
		{"", strings.Repeat("a", 65), "", true},
	}
	for _, tc := range tests {
		got, err := ResolveProject(tc.flag, tc.env)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("ResolveProject(%q, %q) = %q, %v; want %q, error %v", tc.flag, tc.env, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestRoute(t *testing.T) {
	tests := []struct {
		original string
		tty      bool
		want     Command
	}{
		{"", true, Command{Kind: RouteShell, Argv: []string{"/bin/bash", "-l"}, TTY: true}},
		{"  ", false, Command{Kind: RouteShell, Argv: []string{"/bin/bash", "-l"}}},
		{"/usr/lib/openssh/sftp-server", false, Command{Kind: RouteSFTP, Argv: []string{"/srv/sftp-server"}}},
		{"/usr/libexec/sftp-server -l INFO", false, Command{Kind: RouteSFTP, Argv: []string{"/srv/sftp-server", "-l", "INFO"}}},
		{"internal-sftp", true, Command{Kind: RouteSFTP, Argv: []string{"/srv/sftp-server"}}},
		{"sftp-server-evil; id", false, Command{Kind: RouteCommand, Argv: []string{"sh", "-c", "sftp-server-evil; id"}}},
		{"exit 42", false, Command{Kind: RouteCommand, Argv: []string{"sh", "-c", "exit 42"}}},
		{"top", true, Command{Kind: RouteCommand, Argv: []string{"sh", "-c", "top"}, TTY: true}},
	}
	for _, tc := range tests {
		got := Route(tc.original, "/bin/bash", "/srv/sftp-server", tc.tty)
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("Route(%q, tty=%v) mismatch (-want +got):\n%s", tc.original, tc.tty, diff)
		}
	}
}

func TestExecEnv(t *testing.T) {
	got := execEnv(Connection{Key: desired.SessionKey{User: "alice", Project: "web"}, Term: "xterm-256color"}, "/bin/zsh")
	want := []string{"HOME=/home/alice", "USER=alice", "LOGNAME=alice", "SHELL=/bin/zsh", "TERM=xterm-256color", "PODSPAWN_PROJECT=web"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("execEnv mismatch (-want +got):\n%s", diff)
	}
	got = execEnv(Connection{Key: desired.SessionKey{User: "bob"}}, "/bin/sh")
	want = []string{"HOME=/home/bob", "USER=bob", "LOGNAME=bob", "SHELL=/bin/sh"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("execEnv mismatch (-want +got):\n%s", diff)
	}
}

// TestConnectionEnvCarriesTheLease: the connection's process gets its
// lease's marker (how a dead connection's processes are found) on top of
// the login environment.
func TestConnectionEnvCarriesTheLease(t *testing.T) {
	c := Connection{Key: desired.SessionKey{User: "bob"}}
	got := connectionEnv(c, "/bin/sh", 17)
	want := []string{"HOME=/home/bob", "USER=bob", "LOGNAME=bob", "SHELL=/bin/sh", "PODSPAWN_LEASE=17"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("connectionEnv mismatch (-want +got):\n%s", diff)
	}
}
