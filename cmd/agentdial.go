package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	osuser "os/user"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/podspawn/podspawn/cmd/internal/spawn"
)

// agentDialFd is the helper's end of its control socket (ExtraFiles[0]).
const agentDialFd = 3

// AgentDialCmd is spawn's helper for agent forwarding, run as the SSH
// user: for every byte spawn sends on fd 3 it connects to sshd's agent
// socket with the user's own rights and sends the connection back (or a
// refusal). spawn (root) thus never opens the user's socket with root's
// rights, so forwarding reaches nothing the user could not reach.
type AgentDialCmd struct {
	Socket string `arg:"" help:"sshd's agent socket (SSH_AUTH_SOCK)."`
}

// Run serves spawn's requests until spawn closes its end.
func (c *AgentDialCmd) Run(a *App) error {
	buf := make([]byte, 1)
	for {
		n, err := unix.Read(agentDialFd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n == 0 {
			return nil
		}
		if err := sendAgentConn(c.Socket); err != nil {
			return err
		}
	}
}

func sendAgentConn(sock string) error {
	conn, err := net.Dial("unix", sock)
	if err != nil {
		return unix.Sendmsg(agentDialFd, []byte{'E'}, nil, nil, 0)
	}
	defer conn.Close()
	f, err := conn.(*net.UnixConn).File()
	if err != nil {
		return unix.Sendmsg(agentDialFd, []byte{'E'}, nil, nil, 0)
	}
	defer f.Close()
	return unix.Sendmsg(agentDialFd, []byte{'K'}, unix.UnixRights(int(f.Fd())), nil, 0)
}

// userAgentDialer runs the agent-dial helper as the host user.
type userAgentDialer struct {
	mu   sync.Mutex
	ctl  *os.File
	cmd  *exec.Cmd
	sock string
}

// newAgentDialer returns a dialer of sshd's agent socket sock with the
// rights of the host account user: through the helper when spawn runs
// as root, directly when it already runs as the user (ssh.use_sudo off).
func newAgentDialer(user, sock string) (spawn.AgentDialer, error) {
	if os.Geteuid() != 0 {
		return directAgentDialer(sock), nil
	}
	cred, err := credentialOf(user)
	if err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	ctl, child := os.NewFile(uintptr(pair[0]), "agent-ctl"), os.NewFile(uintptr(pair[1]), "agent-ctl-child")
	defer child.Close()
	cmd := exec.Command(exe, "agent-dial", sock)
	cmd.Env, cmd.Dir, cmd.ExtraFiles = []string{}, "/", []*os.File{child}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		ctl.Close()
		return nil, fmt.Errorf("starting the agent helper as %s: %w", user, err)
	}
	return &userAgentDialer{ctl: ctl, cmd: cmd, sock: sock}, nil
}

func credentialOf(name string) (*syscall.Credential, error) {
	u, err := osuser.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("looking up host account %s: %w", name, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil || uid == 0 {
		return nil, fmt.Errorf("host account %s has uid %s gid %s: refusing to dial its agent", name, u.Uid, u.Gid)
	}
	ids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("looking up the groups of %s: %w", name, err)
	}
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	for _, g := range ids {
		if n, err := strconv.ParseUint(g, 10, 32); err == nil {
			cred.Groups = append(cred.Groups, uint32(n))
		}
	}
	return cred, nil
}

// Dial asks the helper for one connection to the agent.
func (d *userAgentDialer) Dial() (net.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fd := int(d.ctl.Fd())
	if _, err := unix.Write(fd, []byte{1}); err != nil {
		return nil, fmt.Errorf("agent helper: %w", err)
	}
	buf, oob := make([]byte, 1), make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil || n == 0 {
		return nil, fmt.Errorf("agent helper gave no answer: %v", err)
	}
	if buf[0] != 'K' {
		return nil, fmt.Errorf("cannot connect to %s as the user", d.sock)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, fmt.Errorf("agent helper sent no connection")
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return nil, fmt.Errorf("agent helper sent no connection")
	}
	f := os.NewFile(uintptr(fds[0]), "agent")
	defer f.Close()
	return net.FileConn(f)
}

// Close stops the helper.
func (d *userAgentDialer) Close() error {
	err := d.ctl.Close() // the helper reads EOF and exits
	d.cmd.Wait()
	return err
}

type directAgentDialer string

func (d directAgentDialer) Dial() (net.Conn, error) { return net.Dial("unix", string(d)) }
func (directAgentDialer) Close() error              { return nil }
