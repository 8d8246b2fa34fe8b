package spawn

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/go-logr/logr"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/desired"
)

type netDialer string

func (d netDialer) Dial() (net.Conn, error) { return net.Dial("unix", string(d)) }
func (netDialer) Close() error              { return nil }

// echoAgent answers each connection by echoing what it reads.
func echoAgent(t *testing.T, path string) {
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
}

// TestAgentRelay: the relay socket is in the connection's own directory,
// both owned by the container user (0700, 0600), relays to the agent, and
// both are gone once stopped; no agent or no agent mount means no socket.
func TestAgentRelay(t *testing.T) {
	dir := t.TempDir()
	sessDir := filepath.Join(dir, "sess")
	if err := os.Mkdir(sessDir, 0o711); err != nil {
		t.Fatal(err)
	}
	agentSock := filepath.Join(dir, "agent")
	echoAgent(t, agentSock)
	// The container user: uid 1000 as in a container when the test may
	// chown (root), else the test's own (podspawn refuses uid 0).
	uid, gid := os.Getuid(), os.Getgid()
	if uid == 0 {
		uid, gid = 1000, 1000
	}
	ex := &fakeExecer{run: func(actions.ExecSpec) *fakeProc { return &fakeProc{stdout: fmt.Sprintf("%d\n%d\n", uid, gid)} }}
	ag := &Agent{Exec: ex, Dialer: func(user, sock string) (AgentDialer, error) { return netDialer(sock), nil }, Log: logr.Discard()}
	sess := &desired.Session{ID: "s1", Spec: desired.Spec{Mounts: []desired.Mount{{Source: sessDir, Target: desired.AgentMountTarget, Prepare: desired.PrepareAgentDir}}}}
	att := &Attachment{Key: desired.SessionKey{User: "alice"}, Session: sess, LeaseID: 42, ContainerID: "c1"}
	conn := Connection{Key: att.Key, AuthSock: agentSock}

	sock, stop, err := ag.Start(context.Background(), att, conn)
	if err != nil {
		t.Fatal(err)
	}
	if want := desired.AgentMountTarget + "/42/agent.sock"; sock != want {
		t.Fatalf("SSH_AUTH_SOCK = %q, want %q", sock, want)
	}
	host := filepath.Join(sessDir, "42", "agent.sock")
	for p, mode := range map[string]os.FileMode{filepath.Dir(host): os.ModeDir | 0o700, host: os.ModeSocket | 0o600} {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode() != mode || int(st.Uid) != uid || int(st.Gid) != gid {
			t.Errorf("%s: mode %v uid %d gid %d, want %v %d %d", p, fi.Mode(), st.Uid, st.Gid, mode, uid, gid)
		}
	}
	c, err := net.Dial("unix", host)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("relayed answer %q, %v", buf, err)
	}
	stop() // cuts the open relayed connection too
	if _, err := io.ReadAll(c); err != nil {
		t.Fatalf("relayed connection after stop: %v", err)
	}
	c.Close()
	if _, err := os.Lstat(filepath.Dir(host)); !os.IsNotExist(err) {
		t.Fatalf("connection directory after stop: %v", err)
	}

	for name, tc := range map[string]struct {
		conn Connection
		att  *Attachment
	}{
		"no agent":       {Connection{Key: att.Key}, att},
		"no agent mount": {conn, &Attachment{Key: att.Key, Session: &desired.Session{ID: "s2"}, LeaseID: 43}},
	} {
		sock, stop, err := ag.Start(context.Background(), tc.att, tc.conn)
		if err != nil || sock != "" {
			t.Errorf("%s: sock %q, err %v; want none", name, sock, err)
		}
		stop()
	}
}
