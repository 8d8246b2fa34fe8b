package spawn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/actions/hostdir"
	"github.com/podspawn/podspawn/desired"
)

// AgentDialer opens connections to the client's forwarded agent (sshd's
// socket) with the SSH user's own rights, never root's.
type AgentDialer interface {
	Dial() (net.Conn, error)
	Close() error
}

// Agent forwards connections' agents into their session containers.
type Agent struct {
	Exec actions.Execer
	// Dialer returns a dialer of sshd's agent socket sock for the host
	// user (see cmd's agent-dial helper).
	Dialer func(user, sock string) (AgentDialer, error)
	// Pod, when set, relays through a program in the session container
	// (Kubernetes) instead of a host socket mounted into it (Docker).
	Pod *PodRelay
	Log logr.Logger
}

// agentSocketName is the relay socket's name in the connection's directory.
const agentSocketName = "agent.sock"

// Start gives the connection a relay socket in its session container, in
// its own directory <agent mount>/<lease id>, owned by the container user
// (directory 0700, socket 0600): a host socket in the generation's mount,
// or with Pod a relay in the container itself. It returns SSH_AUTH_SOCK's value there
// and the function that stops the relay and removes the directory. It
// returns "" when the connection forwards no agent or the generation was
// created without forwarding.
func (a *Agent) Start(ctx context.Context, att *Attachment, c Connection) (string, func(), error) {
	if a == nil || c.AuthSock == "" {
		return "", func() {}, nil
	}
	m, ok := att.Session.Spec.AgentMount()
	if !ok {
		return "", func() {}, nil
	}
	if a.Pod != nil {
		return a.startInPod(ctx, att, c)
	}
	uid, gid, err := containerIDs(ctx, a.Exec, att.ContainerID, c.Key.User)
	if err != nil {
		return "", nil, err
	}
	dialer, err := a.Dialer(c.Key.User, c.AuthSock)
	if err != nil {
		return "", nil, err
	}
	name := strconv.FormatInt(att.LeaseID, 10)
	r, err := listenRelay(m.Source, name, uid, gid)
	if err != nil {
		dialer.Close()
		return "", nil, err
	}
	r.dialer, r.log = dialer, a.Log
	go r.serve()
	return filepath.Join(desired.AgentMountTarget, name, agentSocketName), r.close, nil
}

// containerIDs asks the container for the user's uid and gid (the first
// free ids from 1000 when the account was made, not always 1000).
func containerIDs(ctx context.Context, ex actions.Execer, container, user string) (int, int, error) {
	var out strings.Builder
	code, err := ex.Run(ctx, actions.ExecSpec{Container: container, User: user, Kind: "agent", Argv: []string{"sh", "-c", "id -u; id -g"}}, &out)
	if err == nil && code != 0 {
		err = fmt.Errorf("id exited %d: %s", code, strings.TrimSpace(out.String()))
	}
	if err != nil {
		return 0, 0, fmt.Errorf("reading the uid of %s in the container: %w", user, err)
	}
	f := strings.Fields(out.String())
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("reading the uid of %s in the container: unexpected output %q", user, out.String())
	}
	uid, err1 := strconv.Atoi(f[0])
	gid, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || uid <= 0 || gid < 0 {
		return 0, 0, fmt.Errorf("reading the uid of %s in the container: unexpected output %q", user, out.String())
	}
	return uid, gid, nil
}

type relay struct {
	sess, dir *hostdir.Dir
	name      string
	ln        *net.UnixListener
	dialer    AgentDialer
	log       logr.Logger
	mu        sync.Mutex
	conns     map[net.Conn]struct{}
	closed    bool
	wg        sync.WaitGroup
}

// listenRelay makes the connection's directory and socket while both are
// still root's and 0700 (nothing the user does can redirect them), then
// hands them to the container user.
func listenRelay(sessPath, name string, uid, gid int) (*relay, error) {
	sess, err := hostdir.Open(sessPath)
	if err != nil {
		return nil, fmt.Errorf("agent directory: %w", err)
	}
	r := &relay{sess: sess, name: name, conns: map[net.Conn]struct{}{}}
	fail := func(err error) (*relay, error) {
		r.cleanup()
		return nil, fmt.Errorf("agent socket: %w", err)
	}
	// A directory left by a crashed process of an earlier lease with this
	// id cannot exist (lease ids are never reused), so an existing one is
	// refused by created below.
	d, created, err := sess.Sub(name, 0o700)
	if err != nil {
		return fail(err)
	}
	r.dir = d
	if !created {
		return fail(fmt.Errorf("%s already exists", d.Path()))
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: d.ProcPath(agentSocketName), Net: "unix"})
	if err != nil {
		return fail(err)
	}
	ln.SetUnlinkOnClose(false)
	r.ln = ln
	if err := unix.Fchmodat(d.Fd(), agentSocketName, 0o600, 0); err != nil {
		return fail(err)
	}
	if err := d.ChownEntry(agentSocketName, uid, gid); err != nil {
		return fail(err)
	}
	if err := d.Chown(uid, gid, 0o700); err != nil {
		return fail(err)
	}
	return r, nil
}

func (r *relay) serve() {
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return // closed
		}
		if !r.track(c) {
			c.Close()
			return
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer r.untrack(c)
			r.pipe(c)
		}()
	}
}

// pipe relays one client of the socket to a new connection to the agent.
func (r *relay) pipe(c net.Conn) {
	up, err := r.dialer.Dial()
	if err != nil {
		r.log.Info("Cannot reach the forwarded agent", "err", err.Error())
		return
	}
	if !r.track(up) {
		up.Close()
		return
	}
	defer r.untrack(up)
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		done <- struct{}{}
	}
	go cp(up, c)
	go cp(c, up)
	<-done
	<-done
}

func (r *relay) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.conns[c] = struct{}{}
	return true
}

func (r *relay) untrack(c net.Conn) {
	r.mu.Lock()
	delete(r.conns, c)
	r.mu.Unlock()
	c.Close()
}

// close stops accepting, cuts the relayed connections, stops the dialer
// and removes the connection's directory.
func (r *relay) close() {
	r.mu.Lock()
	r.closed = true
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	if r.ln != nil {
		r.ln.Close()
	}
	r.wg.Wait()
	if r.dialer != nil {
		r.dialer.Close()
	}
	if err := r.cleanup(); err != nil {
		r.log.Error(err, "Removing the agent socket failed")
	}
}

func (r *relay) cleanup() error {
	var errs []error
	if r.dir != nil {
		errs = append(errs, r.dir.Close())
		errs = append(errs, r.sess.RemoveAll(r.name))
	}
	errs = append(errs, r.sess.Close())
	return errors.Join(errs...)
}
