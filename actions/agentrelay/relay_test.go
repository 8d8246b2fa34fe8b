package agentrelay

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"go.uber.org/goleak"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeAgent is a real ssh-agent keyring served on a unix socket.
type fakeAgent struct {
	sock string
	pub  ssh.PublicKey
	ln   net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	open []net.Conn
}

func startAgent(t *testing.T) *fakeAgent {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	kr := agent.NewKeyring()
	if err := kr.Add(agent.AddedKey{PrivateKey: priv, Comment: "relay-test"}); err != nil {
		t.Fatal(err)
	}
	a := &fakeAgent{sock: filepath.Join(t.TempDir(), "agent.sock")}
	if a.pub, err = ssh.NewPublicKey(pub); err != nil {
		t.Fatal(err)
	}
	if a.ln, err = net.Listen("unix", a.sock); err != nil {
		t.Fatal(err)
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		for {
			c, err := a.ln.Accept()
			if err != nil {
				return
			}
			a.mu.Lock()
			a.open = append(a.open, c)
			a.mu.Unlock()
			a.wg.Add(1)
			go func() {
				defer a.wg.Done()
				agent.ServeAgent(kr, c)
				c.Close()
			}()
		}
	}()
	t.Cleanup(a.stop)
	return a
}

// closeConns cuts the agent's open connections, as an agent going away.
func (a *fakeAgent) closeConns() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range a.open {
		c.Close()
	}
}

func (a *fakeAgent) stop() {
	a.ln.Close()
	a.closeConns()
	a.wg.Wait()
}

func (a *fakeAgent) dial() (net.Conn, error) { return net.Dial("unix", a.sock) }

// pair runs both ends in-process over a pipe: the Pod's relay on its own
// socket, spawn's end dialling dial. stopHost and stopPod close the
// multiplexed connection from either end; wait returns once both ended.
type pair struct {
	sock              string
	ln                *net.UnixListener
	hostConn, podConn net.Conn
	hostDone, podDone chan error
	mu                sync.Mutex
	dialErrs          []error
}

func startPair(t *testing.T, dial func() (net.Conn, error)) *pair {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "7")
	ln, err := Listen(dir)
	if err != nil {
		t.Fatal(err)
	}
	p := &pair{sock: filepath.Join(dir, SocketName), ln: ln, hostDone: make(chan error, 1), podDone: make(chan error, 1)}
	p.hostConn, p.podConn = net.Pipe()
	go func() {
		p.hostDone <- ServeHost(p.hostConn, dial, func(err error) {
			p.mu.Lock()
			p.dialErrs = append(p.dialErrs, err)
			p.mu.Unlock()
		})
	}()
	go func() { p.podDone <- ServePod(ln, p.podConn, io.Discard) }()
	t.Cleanup(func() {
		p.hostConn.Close()
		p.wait(t)
		if err := Cleanup(dir); err != nil {
			t.Error(err)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("connection directory left: %v", err)
		}
	})
	return p
}

func (p *pair) wait(t *testing.T) {
	t.Helper()
	for _, ch := range []chan error{p.hostDone, p.podDone} {
		if err, ok := <-ch; ok {
			if err != nil {
				t.Errorf("serve: %v", err)
			}
			close(ch)
		}
	}
}

// list asks the relayed agent for its keys through the Pod's socket.
func list(sock string) ([]*agent.Key, error) {
	c, err := net.Dial("unix", sock)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return agent.NewClient(c).List()
}

func TestSocketModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "3")
	ln, err := Listen(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer Cleanup(dir)
	defer ln.Close()
	for path, want := range map[string]os.FileMode{dir: os.ModeDir | 0o700, filepath.Join(dir, SocketName): os.ModeSocket | 0o600} {
		fi, err := os.Lstat(path)
		if err != nil || fi.Mode() != want {
			t.Fatalf("%s: mode %v (%v), want %v", path, fi.Mode(), err, want)
		}
	}
	// A connection's directory is its own: an existing one is refused.
	if _, err := Listen(dir); !errors.Is(err, os.ErrExist) {
		t.Fatalf("Listen on an existing directory: %v, want ErrExist", err)
	}
}

// TestConcurrentConnections: several clients of the socket at once each
// reach the agent (list and sign) over their own stream.
func TestConcurrentConnections(t *testing.T) {
	a := startAgent(t)
	p := startPair(t, a.dial)
	const n = 16
	errs := make(chan error, n)
	for i := range n {
		go func() {
			c, err := net.Dial("unix", p.sock)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			ac := agent.NewClient(c)
			keys, err := ac.List()
			if err != nil || len(keys) != 1 || keys[0].Comment != "relay-test" {
				errs <- fmt.Errorf("client %d: list %v, %v", i, keys, err)
				return
			}
			data := []byte(fmt.Sprintf("payload %d", i))
			sig, err := ac.Sign(a.pub, data)
			if err == nil {
				err = a.pub.Verify(data, sig)
			}
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// TestAgentSideCloses: an agent that hangs up ends only its client's
// connection (EOF), and a dial that fails ends only its stream; the relay
// keeps serving new clients.
func TestAgentSideCloses(t *testing.T) {
	a := startAgent(t)
	var mu sync.Mutex
	failNext := false
	p := startPair(t, func() (net.Conn, error) {
		mu.Lock()
		defer mu.Unlock()
		if failNext {
			failNext = false
			return nil, errors.New("agent unreachable")
		}
		return a.dial()
	})
	c := listedClient(t, p.sock)
	a.closeConns()
	if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("read after the agent hung up: %d, %v; want EOF", n, err)
	}

	mu.Lock()
	failNext = true
	mu.Unlock()
	if _, err := list(p.sock); err == nil {
		t.Fatal("list through a failed dial succeeded")
	}
	p.mu.Lock()
	if len(p.dialErrs) != 1 {
		t.Errorf("dial errors reported: %v, want one", p.dialErrs)
	}
	p.mu.Unlock()
	if keys, err := list(p.sock); err != nil || len(keys) != 1 {
		t.Fatalf("list after a failed dial: %v, %v", keys, err)
	}
}

// TestPodSideCloses: the relay stopping (its listener closed, as on a
// signal) cuts open clients, stops accepting, and ends spawn's end too.
func TestPodSideCloses(t *testing.T) {
	a := startAgent(t)
	p := startPair(t, a.dial)
	c := listedClient(t, p.sock)
	p.ln.Close()
	if err := <-p.podDone; err != nil {
		t.Fatal(err)
	}
	close(p.podDone)
	// The Pod's end closed the multiplexed connection: spawn's end ends.
	if err := <-p.hostDone; err != nil {
		t.Fatal(err)
	}
	close(p.hostDone)
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("client read after the relay stopped: %d, %v", n, err)
	}
	if _, err := net.Dial("unix", p.sock); err == nil {
		t.Fatal("the socket still accepts after the relay stopped")
	}
}

// TestHostSideCloses: spawn closing its end (the connection ended) stops
// the relay in the Pod and cuts its clients.
func TestHostSideCloses(t *testing.T) {
	a := startAgent(t)
	p := startPair(t, a.dial)
	c := listedClient(t, p.sock)
	p.hostConn.Close()
	p.wait(t)
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("client read after spawn's end closed: %d, %v", n, err)
	}
}

// listedClient connects to the relay's socket and lists the agent's keys
// through it once, so the stream is up end to end; the test closes it.
func listedClient(t *testing.T, sock string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := agent.NewClient(c).List(); err != nil {
		t.Fatal(err)
	}
	return c
}
