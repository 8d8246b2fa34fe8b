package hostsetup

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestEnsureUserAccount(t *testing.T) {
	const grp = "podspawn"
	type want struct {
		Created, AddedToGroup, Unlocked bool
		Notes                           []string // substrings, one per note
	}
	cases := map[string]struct {
		setup     func(f *fakeHost)
		name      string
		want      want
		wantErr   string
		wantCalls []string // calls that change the host
		check     func(t *testing.T, w world)
	}{
		"new account": {
			name: "alice",
			want: want{Created: true},
			wantCalls: []string{"useradd --no-user-group --gid podspawn --groups podspawn --no-create-home --home-dir / " +
				"--shell /bin/sh --comment podspawn user --password * alice"},
			check: func(t *testing.T, w world) {
				if d := cmp.Diff(Account{Name: "alice", UID: 1000, GID: 990, GECOS: UserGECOS, Home: "/", Shell: "/bin/sh"}, w.Users["alice"]); d != "" {
					t.Errorf("account (-want +got):\n%s", d)
				}
				if w.Shadow["alice"] != "*" {
					t.Errorf("password field %q, want *", w.Shadow["alice"])
				}
			},
		},
		"existing account locked with ! and no password": {
			setup: func(f *fakeHost) {
				f.addUser(Account{Name: "bob", UID: 1500, GID: 1500, GECOS: "Bob", Home: "/home/bob", Shell: "/bin/bash"}, "!")
			},
			name:      "bob",
			want:      want{AddedToGroup: true, Unlocked: true, Notes: []string{"bob is an existing host account"}},
			wantCalls: []string{"usermod --append --groups podspawn bob", "usermod --password * bob"},
			check: func(t *testing.T, w world) {
				if w.Shadow["bob"] != "*" {
					t.Errorf("password field %q, want *", w.Shadow["bob"])
				}
			},
		},
		"existing account locked with !! (useradd default on some distros)": {
			setup: func(f *fakeHost) {
				f.addUser(Account{Name: "bob", UID: 1500, GID: 990, GECOS: UserGECOS, Home: "/", Shell: "/bin/sh"}, "!!")
			},
			name:      "bob",
			want:      want{Unlocked: true},
			wantCalls: []string{"usermod --password * bob"},
		},
		"locked real password is left alone": {
			setup: func(f *fakeHost) {
				f.addUser(Account{Name: "carol", UID: 1501, GID: 1501, GECOS: "Carol", Home: "/home/carol", Shell: "/bin/bash"}, "!$6$salt$hash", grp)
			},
			name: "carol",
			want: want{Notes: []string{"carol has a locked password", "carol is an existing host account"}},
			check: func(t *testing.T, w world) {
				if w.Shadow["carol"] != "!$6$salt$hash" {
					t.Errorf("password changed to %q", w.Shadow["carol"])
				}
			},
		},
		"real password is left alone": {
			setup: func(f *fakeHost) {
				f.addUser(Account{Name: "dave", UID: 1502, GID: 1502, GECOS: "Dave", Home: "/home/dave", Shell: "/bin/bash"}, "$6$salt$hash")
			},
			name:      "dave",
			want:      want{AddedToGroup: true, Notes: []string{"dave is an existing host account"}},
			wantCalls: []string{"usermod --append --groups podspawn dave"},
		},
		"already set up": {
			setup: func(f *fakeHost) {
				f.addUser(Account{Name: "erin", UID: 1503, GID: 990, GECOS: UserGECOS, Home: "/", Shell: "/bin/sh"}, "*")
			},
			name: "erin",
		},
		"nologin shell is reported": {
			setup: func(f *fakeHost) {
				f.addUser(Account{Name: "fay", UID: 1504, GID: 990, GECOS: UserGECOS, Home: "/", Shell: "/usr/sbin/nologin"}, "*")
			},
			name: "fay",
			want: want{Notes: []string{"login shell /usr/sbin/nologin"}},
		},
		"root is refused": {
			name:    "root",
			wantErr: "refusing to make root a podspawn user",
		},
		"uid 0 under another name is refused": {
			setup: func(f *fakeHost) {
				f.addUser(Account{Name: "toor", UID: 0, GID: 0, Shell: "/bin/sh"}, "*")
			},
			name:    "toor",
			wantErr: "it is a root account",
		},
		"system account is refused": {
			setup: func(f *fakeHost) {
				f.addUser(Account{Name: "www-data", UID: 33, GID: 33, GECOS: "www-data", Home: "/var/www", Shell: "/usr/sbin/nologin"}, "*")
			},
			name:    "www-data",
			wantErr: "system account (uid 33 < 1000)",
		},
		"system uid created by podspawn is adopted": {
			setup: func(f *fakeHost) {
				f.addUser(Account{Name: "gus", UID: 900, GID: 990, GECOS: UserGECOS, Home: "/", Shell: "/bin/sh"}, "*", grp)
			},
			name: "gus",
		},
		"missing group": {
			setup:   func(f *fakeHost) { delete(f.groups, grp) },
			name:    "alice",
			wantErr: "group podspawn (ssh.group) does not exist: run 'podspawn server-setup' first",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			f := newFakeHost()
			f.addGroup(grp, 990)
			if tc.setup != nil {
				tc.setup(f)
			}
			before := f.world()
			res, err := EnsureUserAccount(context.Background(), f, tc.name, grp)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want error containing %q, got %v", tc.wantErr, err)
				}
				if d := cmp.Diff(before, f.world()); d != "" {
					t.Errorf("a refused call changed the host (-before +after):\n%s", d)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := want{Created: res.Created, AddedToGroup: res.AddedToGroup, Unlocked: res.Unlocked}
			for i, n := range res.Notes {
				if i < len(tc.want.Notes) && strings.Contains(n, tc.want.Notes[i]) {
					got.Notes = append(got.Notes, tc.want.Notes[i])
				} else {
					got.Notes = append(got.Notes, n)
				}
			}
			if d := cmp.Diff(tc.want, got, cmpopts.EquateEmpty()); d != "" {
				t.Errorf("result (-want +got):\n%s", d)
			}
			var changes []string
			for _, c := range f.calls {
				if !strings.HasPrefix(c, "getent ") {
					changes = append(changes, c)
				}
			}
			if d := cmp.Diff(tc.wantCalls, changes, cmpopts.EquateEmpty()); d != "" {
				t.Errorf("changing calls (-want +got):\n%s", d)
			}
			w := f.world()
			g := w.Groups[grp]
			if a := w.Users[tc.name]; a.GID != g.GID && !contains(g.Members, tc.name) {
				t.Errorf("%s is not in group %s afterwards", tc.name, grp)
			}
			if tc.check != nil {
				tc.check(t, w)
			}
			// Idempotent: a second run changes nothing.
			f.calls = nil
			if _, err := EnsureUserAccount(context.Background(), f, tc.name, grp); err != nil {
				t.Fatal(err)
			}
			for _, c := range f.calls {
				if !strings.HasPrefix(c, "getent ") {
					t.Errorf("second run changed the host: %s", c)
				}
			}
		})
	}
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func TestEnsureGroupAndAuthAccount(t *testing.T) {
	ctx := context.Background()
	f := newFakeHost()
	c, err := EnsureGroup(ctx, f, "podspawn", true)
	if err != nil || c.Would != "create group podspawn" {
		t.Fatalf("dry run: %+v %v", c, err)
	}
	if _, ok := f.groups["podspawn"]; ok {
		t.Fatal("dry run created the group")
	}
	if c, err = EnsureGroup(ctx, f, "podspawn", false); err != nil || c.Done != "created" {
		t.Fatalf("EnsureGroup: %+v %v", c, err)
	}
	if c, err = EnsureGroup(ctx, f, "podspawn", false); err != nil || c.Done != "" {
		t.Fatalf("second EnsureGroup: %+v %v", c, err)
	}

	c, acct, err := EnsureAuthAccount(ctx, f, "podspawn-auth", false)
	if err != nil || c.Done == "" {
		t.Fatalf("EnsureAuthAccount: %+v %v", c, err)
	}
	want := Account{Name: "podspawn-auth", UID: 998, GID: 998, GECOS: AuthGECOS, Home: "/nonexistent", Shell: "/usr/sbin/nologin"}
	if d := cmp.Diff(want, acct); d != "" {
		t.Errorf("account (-want +got):\n%s", d)
	}
	if c, _, err = EnsureAuthAccount(ctx, f, "podspawn-auth", false); err != nil || c.Done != "" {
		t.Fatalf("second EnsureAuthAccount: %+v %v", c, err)
	}

	// A group left over from a removed account: useradd must reuse it.
	f.addGroup("leftover-auth", 500)
	if _, acct, err = EnsureAuthAccount(ctx, f, "leftover-auth", false); err != nil || acct.GID != 500 {
		t.Fatalf("EnsureAuthAccount with a leftover group: %+v %v", acct, err)
	}

	if _, _, err := EnsureAuthAccount(ctx, f, "root", false); err == nil || !strings.Contains(err.Error(), "not root") {
		t.Errorf("root as auth-keys account: %v", err)
	}
	f.addUser(Account{Name: "toor", UID: 0, GID: 0}, "*")
	if _, _, err := EnsureAuthAccount(ctx, f, "toor", false); err == nil || !strings.Contains(err.Error(), "uid 0") {
		t.Errorf("uid 0 as auth-keys account: %v", err)
	}
}
