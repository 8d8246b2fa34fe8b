// Package agentrelay carries a connection's forwarded ssh-agent into a
// session container that runs on another machine (a Kubernetes Pod), where
// no host socket can be bind-mounted: a relay program in the container
// (cmd/agentrelay) listens on the connection's socket and carries each
// client of it as one stream of a multiplexed connection (yamux) over the
// stdin and stdout of a single exec that spawn keeps open; spawn accepts
// each stream and dials the client's agent for it.
//
// The relay program is copied into every Pod that needs it, so this
// package imports only the standard library and yamux.
package agentrelay

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

// Ready is the line the relay writes on its stdout once its socket
// listens; the multiplexed connection follows it on the same stream.
const Ready = "podspawn-agentrelay ready\n"

// SocketName is the relay socket's name in the connection's directory.
const SocketName = "agent.sock"

// config is yamux's configuration for both ends. Keep-alives are off: the
// exec's stream ends when either side goes away, and pings would only add
// traffic through the API server.
func config(logs io.Writer) *yamux.Config {
	c := yamux.DefaultConfig()
	c.EnableKeepAlive = false
	c.LogOutput = logs
	c.ConnectionWriteTimeout = 30 * time.Second
	return c
}

// Listen makes the connection's directory dir (0700; it must not exist:
// each connection has its own) and listens on its socket (0600).
func Listen(dir string) (*net.UnixListener, error) {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o700); err != nil { // past the umask
		os.Remove(dir)
		return nil, err
	}
	sock := filepath.Join(dir, SocketName)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err == nil {
		err = os.Chmod(sock, 0o600)
		if err != nil {
			ln.Close()
		}
	}
	if err != nil {
		os.Remove(dir)
		return nil, err
	}
	return ln, nil
}

// ServePod is the container's end: it relays each client accepted on ln
// as a new stream of the multiplexed conn until conn ends (spawn closed
// it) or ln is closed, then closes ln, conn and every relayed connection
// and returns once they are done.
func ServePod(ln net.Listener, conn io.ReadWriteCloser, logs io.Writer) error {
	sess, err := yamux.Client(conn, config(logs))
	if err != nil {
		return err
	}
	stopped := make(chan struct{})
	go func() {
		select {
		case <-sess.CloseChan():
		case <-stopped:
		}
		ln.Close()
	}()
	var r relays
	for {
		c, err := ln.Accept()
		if err != nil {
			break
		}
		st, err := sess.OpenStream()
		if err != nil {
			c.Close()
			break
		}
		r.start(c, st)
	}
	close(stopped)
	sess.Close()
	r.stop()
	return nil
}

// ServeHost is spawn's end: it accepts the container's streams on conn
// and relays each to a new connection from dial (Serve) until conn ends.
func ServeHost(conn io.ReadWriteCloser, dial func() (net.Conn, error), failed func(error)) error {
	sess, err := yamux.Server(conn, config(io.Discard))
	if err != nil {
		return err
	}
	Serve(sess, dial, failed)
	sess.Close()
	return nil
}

// Serve relays each connection accepted on ln to a new connection from
// dial until ln is closed or fails; then it closes every relayed
// connection and returns once they are done. A failed dial ends only its
// own connection, and is passed to failed. Docker's relay serves a host
// socket with it, ServeHost the streams of a Pod's relay.
func Serve(ln net.Listener, dial func() (net.Conn, error), failed func(error)) {
	var r relays
	for {
		c, err := ln.Accept()
		if err != nil {
			break
		}
		if !r.track(c) {
			c.Close()
			break
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			up, err := dial()
			if err != nil {
				failed(err)
				r.untrack(c)
				return
			}
			r.pipe(c, up)
		}()
	}
	r.stop()
}

// relays are the connections being relayed, closed together at the end.
type relays struct {
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

func (r *relays) start(a, b net.Conn) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		if !r.track(a) {
			a.Close()
			b.Close()
			return
		}
		r.pipe(a, b)
	}()
}

// pipe copies both ways, passing each end's EOF on as a half-close, until
// both directions are done; a is tracked by the caller.
func (r *relays) pipe(a, b net.Conn) {
	defer r.untrack(a)
	if !r.track(b) {
		b.Close()
		return
	}
	defer r.untrack(b)
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		io.Copy(dst, src)
		closeWrite(dst)
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	<-done
}

// closeWrite ends what is written to c while its reads go on: a unix
// socket's shutdown, or a stream's FIN (yamux's Close is a half-close).
func closeWrite(c net.Conn) {
	switch c := c.(type) {
	case interface{ CloseWrite() error }:
		c.CloseWrite()
	case *yamux.Stream:
		c.Close()
	default:
		c.Close()
	}
}

func (r *relays) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	if r.conns == nil {
		r.conns = map[net.Conn]struct{}{}
	}
	r.conns[c] = struct{}{}
	return true
}

func (r *relays) untrack(c net.Conn) {
	r.mu.Lock()
	delete(r.conns, c)
	r.mu.Unlock()
	c.Close()
}

// stop closes every relayed connection and waits for their copies.
func (r *relays) stop() {
	r.mu.Lock()
	r.closed = true
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// Stdio is a multiplexed connection over a reader and a writer (the
// relay's stdin and stdout, or spawn's ends of the exec's streams).
type Stdio struct {
	io.Reader
	io.Writer
	// Closers are closed by Close, in order; their errors are joined.
	Closers []io.Closer
}

// Close closes the closers.
func (s Stdio) Close() error {
	var errs []error
	for _, c := range s.Closers {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// Cleanup removes the connection's socket and directory.
func Cleanup(dir string) error {
	err := os.Remove(filepath.Join(dir, SocketName))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing the agent socket: %w", err)
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing the agent directory: %w", err)
	}
	return nil
}
