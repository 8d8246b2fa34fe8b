package spawn

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/actions/agentrelay"
	"github.com/podspawn/podspawn/desired"
)

// PodRelay forwards agents into session containers on another machine (a
// Kubernetes Pod), which cannot mount a host socket: the relay program
// (cmd/agentrelay), copied into the Pod on a connection's first need,
// listens on the connection's socket there and carries its clients over
// the stdin and stdout of one exec that spawn keeps open for the
// connection; spawn dials the agent for each, with the user's rights.
type PodRelay struct {
	// Path is the relay program on this host.
	Path string

	once sync.Once
	prog []byte
	name string
	err  error
}

// program reads the relay program once; its name in the Pod carries its
// content's hash, so a Pod never runs the relay of an older podspawn.
func (p *PodRelay) program() ([]byte, string, error) {
	p.once.Do(func() {
		p.prog, p.err = os.ReadFile(p.Path)
		if p.err != nil {
			p.err = fmt.Errorf("reading the agent relay program (build it with CGO_ENABLED=0 go build -o %s ./cmd/agentrelay, or set kubernetes.agent_relay): %w",
				p.Path, p.err)
			return
		}
		sum := sha256.Sum256(p.prog)
		p.name = "agentrelay-" + hex.EncodeToString(sum[:16])
	})
	return p.prog, p.name, p.err
}

// Bounds of the relay's exec: its start (the Ready line), its copy into
// the Pod, and its end once spawn closed its stdin.
const (
	relayStartTimeout   = 30 * time.Second
	relayInstallTimeout = 60 * time.Second
	relayStopTimeout    = 5 * time.Second
)

// errRelayMissing: the Pod has no copy of this relay program yet.
var errRelayMissing = errors.New("the agent relay is not in the pod")

// startInPod runs the connection's relay in its Pod, copying the program
// there first if it is missing, and returns SSH_AUTH_SOCK's value there
// and what stops the relay (the relay then removes its socket and
// directory).
func (a *Agent) startInPod(ctx context.Context, att *Attachment, c Connection) (string, func(), error) {
	prog, name, err := a.Pod.program()
	if err != nil {
		return "", nil, err
	}
	dialer, err := a.Dialer(c.Key.User, c.AuthSock)
	if err != nil {
		return "", nil, err
	}
	dir := path.Join(desired.AgentMountTarget, strconv.FormatInt(att.LeaseID, 10))
	// The lease's marker: what finds the connection's processes (SIGHUP
	// at a hangup, a dead lease's kill) finds the relay too.
	spec := actions.ExecSpec{Container: att.ContainerID, User: c.Key.User, Kind: "agent relay",
		Env: []string{desired.LeaseMarker(att.LeaseID)}, Argv: []string{path.Join(desired.AgentRelayDir, name), dir}}
	started := time.Now()
	r, err := startRelayExec(ctx, a.Exec, spec)
	copied := errors.Is(err, errRelayMissing)
	if copied {
		if err = installRelay(ctx, a.Exec, att.ContainerID, name, prog); err == nil {
			r, err = startRelayExec(ctx, a.Exec, spec)
		}
	}
	if err != nil {
		dialer.Close()
		return "", nil, err
	}
	a.Log.V(1).Info("Agent relay started in the pod", "copied", copied, "duration", time.Since(started))
	served := make(chan struct{})
	go func() {
		defer close(served)
		agentrelay.ServeHost(r.conn, dialer.Dial, func(err error) { a.Log.Info("Cannot reach the forwarded agent", "err", err.Error()) })
	}()
	stop := func() {
		stopping := time.Now()
		if err := r.stop(); err != nil {
			a.Log.Error(err, "Stopping the agent relay in the pod failed")
		}
		<-served
		dialer.Close()
		a.Log.V(1).Info("Agent relay stopped", "duration", time.Since(stopping))
	}
	return path.Join(dir, agentrelay.SocketName), stop, nil
}

// relayExec is the relay's exec in the Pod, its streams the multiplexed
// connection.
type relayExec struct {
	conn   agentrelay.Stdio
	stdin  io.Closer
	cancel context.CancelFunc
	done   chan struct{}
	code   int
	err    error
	stderr syncBuffer
}

// startRelayExec starts spec and waits for the relay's Ready line. The
// exec outlives a hangup of the connection: the connection's own exec
// then sends SIGHUP to the lease's processes, the relay among them, and
// stop ends it otherwise, so no second hangup exec is needed.
func startRelayExec(ctx context.Context, ex actions.Execer, spec actions.ExecSpec) (*relayExec, error) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	r := &relayExec{stdin: inW, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.code, r.err = ex.Exec(ctx, spec, actions.Stdio{Stdin: inR, Stdout: outW, Stderr: &r.stderr})
		outW.Close()
		inR.Close()
	}()
	timer := time.AfterFunc(relayStartTimeout, cancel)
	out := bufio.NewReader(outR)
	first, _ := out.ReadSlice('\n') // at most the reader's buffer
	line := string(first)
	timer.Stop()
	if line == agentrelay.Ready {
		r.conn = agentrelay.Stdio{Reader: out, Writer: inW, Closers: []io.Closer{inW, outR}}
		return r, nil
	}
	outR.Close()
	r.end()
	switch {
	case r.err != nil:
		return nil, fmt.Errorf("starting the agent relay: %w", r.err)
	case r.code == 127: // the shell found no such program
		return nil, errRelayMissing
	}
	return nil, fmt.Errorf("the agent relay did not start (exit code %d): %s", r.code, strings.TrimSpace(r.stderr.String()+" "+line))
}

// stop closes the relay's stdin: it removes its socket and directory and
// exits. One that does not is cut off with the exec's stream (and gets
// SIGHUP through the lease's marker).
func (r *relayExec) stop() error {
	r.end()
	r.conn.Close()
	if r.err != nil {
		return r.err
	}
	if r.code != 0 {
		return fmt.Errorf("the agent relay exited %d: %s", r.code, strings.TrimSpace(r.stderr.String()))
	}
	return nil
}

// end closes the relay's stdin and waits for its exec, cutting the
// exec's stream after relayStopTimeout.
func (r *relayExec) end() {
	r.stdin.Close()
	select {
	case <-r.done:
	case <-time.After(relayStopTimeout):
		r.cancel()
		<-r.done
	}
	r.cancel()
}

// installScript copies the relay program from stdin into the Pod as root:
// $1 the directory, $2 the name, $3 the size. head -c stops at the size
// without waiting for the stream's end; the temporary name and the rename
// keep a concurrent connection from running a partial copy.
const installScript = `set -e
d=$1; f=$2; n=$3; t="$d/.$f.$$"
trap 'rm -f "$t"' EXIT
head -c "$n" >"$t"
got=$(wc -c <"$t")
[ "$got" -eq "$n" ] || { echo "copied $got of $n bytes" >&2; exit 1; }
chmod 0755 "$t"
mv -f "$t" "$d/$f"`

// installRelay copies the relay program into the Pod's relay directory.
func installRelay(ctx context.Context, ex actions.Execer, container, name string, prog []byte) error {
	ctx, cancel := context.WithTimeout(ctx, relayInstallTimeout)
	defer cancel()
	var out syncBuffer
	code, err := ex.Exec(ctx, actions.ExecSpec{Container: container, User: "root", Kind: "agent relay copy",
		Argv: []string{"sh", "-c", installScript, "podspawn-relay-copy", desired.AgentRelayDir, name, strconv.Itoa(len(prog))}},
		actions.Stdio{Stdin: bytes.NewReader(prog), Stdout: &out, Stderr: &out})
	if err == nil && code != 0 {
		err = fmt.Errorf("exit code %d: %s", code, strings.TrimSpace(out.String()))
	}
	if err != nil {
		return fmt.Errorf("copying the agent relay into the pod: %w", err)
	}
	return nil
}

// syncBuffer is a buffer the exec's stream copies may write concurrently;
// it keeps the first 4 KiB (error messages, not data).
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := 4096 - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
