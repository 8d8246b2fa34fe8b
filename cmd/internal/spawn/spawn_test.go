package spawn

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/config"
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

func TestDecide(t *testing.T) {
	now := time.Date(2026, 11, 29, 7, 0, 0, 0, time.UTC)
	running := ContainerState{Exists: true, Running: true, State: "running"}
	sess := func(mut func(*desired.Session)) *desired.Session {
		s := &desired.Session{ID: "g1", Mode: desired.ModeGracePeriod, Status: desired.StatusRunning,
			CreatedAt: now.Add(-time.Hour), MaxLifetimeAt: now.Add(time.Hour), GracePeriod: time.Minute}
		if mut != nil {
			mut(s)
		}
		return s
	}
	tests := map[string]struct {
		existing *desired.Session
		ctr      ContainerState
		want     verdict
	}{
		"no row":                {nil, ContainerState{}, verdict{replace: true, reason: "no session yet"}},
		"running, container up": {sess(nil), running, verdict{}},
		"grace, before expiry":  {sess(func(s *desired.Session) { s.Status, s.GraceExpiry = desired.StatusGrace, now.Add(time.Nanosecond) }), running, verdict{}},
		"grace, at expiry":      {sess(func(s *desired.Session) { s.Status, s.GraceExpiry = desired.StatusGrace, now }), running, verdict{replace: true, reason: "the session's grace period ended"}},
		"persistent, grace expired": {sess(func(s *desired.Session) {
			s.Mode, s.Status, s.GraceExpiry = desired.ModePersistent, desired.StatusGrace, now.Add(-time.Hour)
		}), running, verdict{}},
		"lifetime, 1ns before":     {sess(func(s *desired.Session) { s.MaxLifetimeAt = now.Add(time.Nanosecond) }), running, verdict{}},
		"lifetime, at deadline":    {sess(func(s *desired.Session) { s.MaxLifetimeAt = now }), running, verdict{replace: true, reason: "the session reached its max lifetime"}},
		"persistent past lifetime": {sess(func(s *desired.Session) { s.Mode, s.MaxLifetimeAt = desired.ModePersistent, now.Add(-time.Hour) }), running, verdict{}},
		"terminating":              {sess(func(s *desired.Session) { s.Status = desired.StatusTerminating }), running, verdict{replace: true, reason: "the session is being removed"}},
		"creating, no container":   {sess(func(s *desired.Session) { s.Status = desired.StatusCreating }), ContainerState{}, verdict{}},
		"container missing":        {sess(nil), ContainerState{}, verdict{replace: true, reason: "the session container is missing"}},
		"container stopped":        {sess(nil), ContainerState{Exists: true, State: "exited"}, verdict{}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := decide(tc.existing, tc.ctr, now)
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(verdict{})); diff != "" {
				t.Errorf("decide() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNewGeneration(t *testing.T) {
	cfg := config.Defaults()
	cfg.Session.Mode = desired.ModeDestroyOnDisconnect
	now := time.Date(2026, 11, 29, 7, 0, 0, 0, time.UTC)
	// Project sessions resolve from the registry: project_test.go.
	for _, key := range []desired.SessionKey{{User: "alice"}} {
		got, err := newGeneration(cfg, key, now)
		if err != nil {
			t.Fatal(err)
		}
		if len(got.ID) != 32 {
			t.Errorf("ID %q: want 32 hex chars", got.ID)
		}
		host := key.Project
		if host == "" {
			host = key.User
		}
		want := &desired.Session{
			Key: key, ID: got.ID, Mode: desired.ModeDestroyOnDisconnect, Status: desired.StatusCreating,
			CreatedAt: now, MaxLifetimeAt: now.Add(8 * time.Hour), GracePeriod: time.Minute,
			Spec: desired.Spec{
				Image: "ubuntu:24.04", Shell: "/bin/bash", CPUs: 2, MemoryBytes: 2 << 30, Hostname: host,
				ContainerName: desired.ContainerName(key), NetworkName: desired.NetworkName(key), Security: cfg.SecuritySpec(),
			},
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("newGeneration(%s) mismatch (-want +got):\n%s", key, diff)
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
