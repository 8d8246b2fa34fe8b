package spawn

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/actions/agentrelay"
	"github.com/podspawn/podspawn/desired"
)

// podExecer plays a Pod: the relay's copy lands in a map, and the relay
// runs in-process with its agent directory under root.
type podExecer struct {
	root string
	mu   sync.Mutex
	// installed maps a program's name in the relay directory to its bytes.
	installed map[string][]byte
	kinds     []string
}

func (p *podExecer) Exec(ctx context.Context, spec actions.ExecSpec, stdio actions.Stdio) (int, error) {
	p.mu.Lock()
	p.kinds = append(p.kinds, spec.Kind)
	p.mu.Unlock()
	switch spec.Kind {
	case "agent relay copy":
		data, err := io.ReadAll(stdio.Stdin)
		if err != nil {
			return -1, err
		}
		p.mu.Lock()
		p.installed[spec.Argv[5]] = data
		p.mu.Unlock()
		return 0, nil
	case "agent relay":
		p.mu.Lock()
		_, ok := p.installed[path.Base(spec.Argv[0])]
		p.mu.Unlock()
		if !ok || path.Dir(spec.Argv[0]) != desired.AgentRelayDir || spec.User != "alice" {
			return 127, nil
		}
		dir := filepath.Join(p.root, strings.TrimPrefix(spec.Argv[1], desired.AgentMountTarget+"/"))
		ln, err := agentrelay.Listen(dir)
		if err != nil {
			io.WriteString(stdio.Stderr, err.Error())
			return 1, nil
		}
		defer agentrelay.Cleanup(dir)
		io.WriteString(stdio.Stdout, agentrelay.Ready)
		agentrelay.ServePod(ln, agentrelay.Stdio{Reader: stdio.Stdin, Writer: stdio.Stdout, Closers: []io.Closer{stdio.Stdout.(io.Closer)}}, io.Discard)
		return 0, nil
	}
	return -1, errors.New("podExecer: unexpected exec " + spec.Kind)
}

func (p *podExecer) Run(context.Context, actions.ExecSpec, io.Writer) (int, error) {
	return -1, errors.New("podExecer: Run is not faked")
}

func (p *podExecer) PathExists(context.Context, string, string) (bool, error) { return false, nil }

// TestAgentRelayInPod: the first connection that needs the relay copies
// it into the Pod under a name of its content's hash and runs it as the
// user; a second connection reuses the copy; each connection's socket
// relays to the agent and is gone once stopped.
func TestAgentRelayInPod(t *testing.T) {
	dir := t.TempDir()
	agentSock := filepath.Join(dir, "agent")
	echoAgent(t, agentSock)
	prog := filepath.Join(dir, "podspawn-agentrelay")
	if err := os.WriteFile(prog, []byte("relay program"), 0o755); err != nil {
		t.Fatal(err)
	}
	pod := &podExecer{root: filepath.Join(dir, "pod"), installed: map[string][]byte{}}
	if err := os.Mkdir(pod.root, 0o755); err != nil {
		t.Fatal(err)
	}
	ag := &Agent{Exec: pod, Dialer: func(user, sock string) (AgentDialer, error) { return netDialer(sock), nil },
		Pod: &PodRelay{Path: prog}, Log: logr.Discard()}
	sess := &desired.Session{ID: "s1", Spec: desired.Spec{Mounts: []desired.Mount{{Target: desired.AgentMountTarget, Prepare: desired.PrepareAgentDir}}}}
	start := func(lease int64) (string, func()) {
		t.Helper()
		att := &Attachment{Key: desired.SessionKey{User: "alice"}, Session: sess, LeaseID: lease, ContainerID: "pod/session/uid"}
		sock, stop, err := ag.Start(context.Background(), att, Connection{Key: att.Key, AuthSock: agentSock})
		if err != nil {
			t.Fatal(err)
		}
		return sock, stop
	}

	sock, stop := start(42)
	if want := desired.AgentMountTarget + "/42/agent.sock"; sock != want {
		t.Fatalf("SSH_AUTH_SOCK = %q, want %q", sock, want)
	}
	if len(pod.installed) != 1 {
		t.Fatalf("copies in the pod: %d, want 1", len(pod.installed))
	}
	for name, data := range pod.installed {
		if !strings.HasPrefix(name, "agentrelay-") || len(name) != len("agentrelay-")+32 || string(data) != "relay program" {
			t.Fatalf("copied %q as %s", data, name)
		}
	}
	sock2, stop2 := start(43)
	if want := []string{"agent relay", "agent relay copy", "agent relay", "agent relay"}; strings.Join(pod.kinds, ",") != strings.Join(want, ",") {
		t.Fatalf("execs %q, want %q", pod.kinds, want)
	}
	for _, s := range []string{sock, sock2} {
		c, err := net.Dial("unix", filepath.Join(pod.root, strings.TrimPrefix(s, desired.AgentMountTarget+"/")))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("ping " + s)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len("ping "+s))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping "+s {
			t.Fatalf("relayed answer %q, %v", buf, err)
		}
		if s == sock {
			stop() // cuts the open relayed connection too
			if b, err := io.ReadAll(c); err != nil || len(b) != 0 {
				t.Fatalf("relayed connection after stop: %q, %v", b, err)
			}
		}
		c.Close()
	}
	stop2()
	if entries, err := os.ReadDir(pod.root); err != nil || len(entries) != 0 {
		t.Fatalf("agent directory after both connections: %v, %v", entries, err)
	}
}

// TestAgentRelayProgramMissing: without the relay program on the host the
// connection gets no agent and an error that says how to build it.
func TestAgentRelayProgramMissing(t *testing.T) {
	ag := &Agent{Exec: &podExecer{}, Dialer: func(string, string) (AgentDialer, error) { return netDialer(""), nil },
		Pod: &PodRelay{Path: "/nonexistent/podspawn-agentrelay"}, Log: logr.Discard()}
	sess := &desired.Session{Spec: desired.Spec{Mounts: []desired.Mount{{Target: desired.AgentMountTarget, Prepare: desired.PrepareAgentDir}}}}
	att := &Attachment{Key: desired.SessionKey{User: "alice"}, Session: sess, LeaseID: 1}
	_, _, err := ag.Start(context.Background(), att, Connection{Key: att.Key, AuthSock: "/x"})
	if err == nil || !strings.Contains(err.Error(), "go build -o /nonexistent/podspawn-agentrelay ./cmd/agentrelay") {
		t.Fatalf("err %v", err)
	}
}
