package hostsetup

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// fakeHost is an in-memory passwd/group/shadow database that answers the
// getent, useradd, usermod and groupadd calls setup makes, plus hooks for
// other programs. It records every call.
type fakeHost struct {
	users   map[string]Account
	shadow  map[string]string
	groups  map[string]*Group
	nextUID int
	nextSys int
	calls   []string
	// hooks answer other programs (sshd, visudo, systemctl) by name.
	hooks map[string]func(args []string) ([]byte, error)
}

func newFakeHost() *fakeHost {
	return &fakeHost{
		users:   map[string]Account{"root": {Name: "root", UID: 0, GID: 0, GECOS: "root", Home: "/root", Shell: "/bin/bash"}},
		shadow:  map[string]string{"root": "*"},
		groups:  map[string]*Group{"root": {Name: "root", GID: 0}},
		nextUID: 1000, nextSys: 999,
		hooks: map[string]func([]string) ([]byte, error){},
	}
}

func (f *fakeHost) addUser(a Account, pw string, groups ...string) {
	f.users[a.Name] = a
	f.shadow[a.Name] = pw
	for _, g := range groups {
		f.groups[g].Members = append(f.groups[g].Members, a.Name)
	}
}

func (f *fakeHost) addGroup(name string, gid int) { f.groups[name] = &Group{Name: name, GID: gid} }

func exit(name string, args []string, code int, msg string) error {
	return &CmdError{Name: name, Args: args, Code: code, Stderr: msg}
}

func (f *fakeHost) Run(_ context.Context, name string, args ...string) ([]byte, error) {
	f.calls = append(f.calls, strings.TrimSpace(name+" "+strings.Join(args, " ")))
	if h, ok := f.hooks[name]; ok {
		return h(args)
	}
	switch name {
	case "getent":
		return f.getent(args)
	case "groupadd":
		g := args[len(args)-1]
		if _, ok := f.groups[g]; ok {
			return nil, exit(name, args, 9, "group exists")
		}
		f.addGroup(g, f.nextSys)
		f.nextSys--
		return nil, nil
	case "useradd":
		return f.useradd(args)
	case "usermod":
		return f.usermod(args)
	}
	return nil, fmt.Errorf("fakeHost: unexpected program %s %v", name, args)
}

func (f *fakeHost) getent(args []string) ([]byte, error) {
	db, key := args[0], args[1]
	switch db {
	case "passwd":
		if a, ok := f.users[key]; ok {
			return fmt.Appendf(nil, "%s:x:%d:%d:%s:%s:%s\n", a.Name, a.UID, a.GID, a.GECOS, a.Home, a.Shell), nil
		}
	case "group":
		if g, ok := f.groups[key]; ok {
			return fmt.Appendf(nil, "%s:x:%d:%s\n", g.Name, g.GID, strings.Join(g.Members, ",")), nil
		}
	case "shadow":
		if pw, ok := f.shadow[key]; ok {
			return fmt.Appendf(nil, "%s:%s:20000:0:99999:7:::\n", key, pw), nil
		}
	}
	return nil, exit("getent", args, 2, "")
}

func flagValue(args []string, flag string) (string, bool) {
	i := slices.Index(args, flag)
	if i < 0 || i+1 >= len(args) {
		return "", false
	}
	return args[i+1], true
}

func (f *fakeHost) useradd(args []string) ([]byte, error) {
	name := args[len(args)-1]
	if _, ok := f.users[name]; ok {
		return nil, exit("useradd", args, 9, "user exists")
	}
	a := Account{Name: name, Home: "/home/" + name, Shell: "/bin/sh"}
	if slices.Contains(args, "--system") {
		a.UID = f.nextSys
		f.nextSys--
	} else {
		a.UID = f.nextUID
		f.nextUID++
	}
	if v, ok := flagValue(args, "--home-dir"); ok {
		a.Home = v
	}
	if v, ok := flagValue(args, "--shell"); ok {
		a.Shell = v
	}
	if v, ok := flagValue(args, "--comment"); ok {
		a.GECOS = v
	}
	switch {
	case slices.Contains(args, "--user-group"):
		if _, ok := f.groups[name]; ok {
			return nil, exit("useradd", args, 9, "group "+name+" exists")
		}
		f.addGroup(name, a.UID)
		a.GID = a.UID
	default:
		g, ok := flagValue(args, "--gid")
		if !ok || f.groups[g] == nil {
			return nil, exit("useradd", args, 6, "group does not exist")
		}
		a.GID = f.groups[g].GID
	}
	pw := "!"
	if v, ok := flagValue(args, "--password"); ok {
		pw = v
	}
	f.users[name], f.shadow[name] = a, pw
	if v, ok := flagValue(args, "--groups"); ok {
		f.groups[v].Members = append(f.groups[v].Members, name)
	}
	return nil, nil
}

func (f *fakeHost) usermod(args []string) ([]byte, error) {
	name := args[len(args)-1]
	if _, ok := f.users[name]; !ok {
		return nil, exit("usermod", args, 6, "no such user")
	}
	if v, ok := flagValue(args, "--password"); ok {
		f.shadow[name] = v
	}
	if v, ok := flagValue(args, "--groups"); ok && slices.Contains(args, "--append") {
		f.groups[v].Members = append(f.groups[v].Members, name)
	}
	return nil, nil
}

// world is the part of the fake host tests compare.
type world struct {
	Users  map[string]Account
	Shadow map[string]string
	Groups map[string]Group
}

func (f *fakeHost) world() world {
	w := world{Users: map[string]Account{}, Shadow: map[string]string{}, Groups: map[string]Group{}}
	for k, v := range f.users {
		w.Users[k] = v
	}
	for k, v := range f.shadow {
		w.Shadow[k] = v
	}
	for k, v := range f.groups {
		w.Groups[k] = Group{Name: v.Name, GID: v.GID, Members: slices.Clone(v.Members)}
	}
	return w
}
