package spawn

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/actions/agentrelay"
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
	served    chan struct{} // closed when serve has returned
}

// listenRelay makes the connection's directory and socket while both are
// still root's and 0700 (nothing the user does can redirect them), then
// hands them to the container user.
func listenRelay(sessPath, name string, uid, gid int) (*relay, error) {
	sess, err := hostdir.Open(sessPath)
	if err != nil {
		return nil, fmt.Errorf("agent directory: %w", err)
	}
	r := &relay{sess: sess, name: name, served: make(chan struct{})}
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
	defer close(r.served)
	agentrelay.Serve(r.ln, r.dialer.Dial, func(err error) { r.log.Info("Cannot reach the forwarded agent", "err", err.Error()) })
}

// close stops accepting, cuts the relayed connections, stops the dialer
// and removes the connection's directory.
func (r *relay) close() {
	r.ln.Close()
	<-r.served
	r.dialer.Close()
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
