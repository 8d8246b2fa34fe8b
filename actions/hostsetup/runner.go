// Package setup prepares a host for podspawn: the podspawn group and the
// auth-keys account, podspawn users' host accounts, the directories with
// their owners and modes, the sudoers drop-in and the sshd_config block.
// Every external program goes through a Runner so that the decisions can
// be tested with a fake; file edits are atomic and validated before they
// take effect.
package hostsetup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Runner runs a program and returns its standard output. A program that
// ran and failed gives a *CmdError.
type Runner interface {
	Run(ctx context.Context, name string, args ...string) ([]byte, error)
}

// CmdError is a program that exited non-zero.
type CmdError struct {
	Name   string
	Args   []string
	Code   int
	Stderr string
}

func (e *CmdError) Error() string {
	msg := strings.TrimSpace(e.Stderr)
	if msg == "" {
		return fmt.Sprintf("%s %s: exit status %d", e.Name, strings.Join(e.Args, " "), e.Code)
	}
	return fmt.Sprintf("%s %s: exit status %d: %s", e.Name, strings.Join(e.Args, " "), e.Code, msg)
}

// ExitCode is err's exit code, or -1 when err is not a CmdError.
func ExitCode(err error) int {
	var ce *CmdError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return -1
}

// ExecRunner runs real programs. The sbin directories are searched too:
// sudo and cron often run us with a PATH that lacks them.
type ExecRunner struct{}

// Run implements Runner.
func (ExecRunner) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	path, err := LookPath(name)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, path, args...)
	// A fixed locale keeps the output of getent, passwd and sshd parsable.
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return stdout.Bytes(), &CmdError{Name: name, Args: args, Code: ee.ExitCode(), Stderr: stderr.String()}
	}
	if err != nil {
		return nil, fmt.Errorf("running %s: %w", name, err)
	}
	return stdout.Bytes(), nil
}

// LookPath finds a program in PATH or in the sbin directories.
func LookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	if !strings.Contains(name, "/") {
		for _, d := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
			p := filepath.Join(d, name)
			if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
				return p, nil
			}
		}
	}
	return "", fmt.Errorf("%s is not installed (or not in PATH); install it (Debian: apt-get install %s)", name, packageOf(name))
}

func packageOf(name string) string {
	switch name {
	case "sshd":
		return "openssh-server"
	case "visudo", "sudo":
		return "sudo"
	case "useradd", "usermod", "groupadd", "passwd":
		return "passwd"
	case "getent":
		return "libc-bin"
	case "systemctl":
		return "systemd"
	}
	return name
}
