// Command podspawn-agentrelay is the in-container end of agent forwarding
// on Kubernetes (see package agentrelay): spawn copies it into the session
// Pod and runs it as the session's user, one per SSH connection with an
// agent, with the connection's directory as its argument. It listens on
// <dir>/agent.sock, writes agentrelay.Ready, and relays each client of the
// socket over its stdin and stdout until spawn closes them or a signal
// arrives; then it removes the socket and the directory.
//
// Build it static (CGO_ENABLED=0): it runs in images of any libc.
package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/podspawn/podspawn/actions/agentrelay"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: podspawn-agentrelay DIR")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "podspawn-agentrelay:", err)
		os.Exit(1)
	}
}

func run(dir string) error {
	ln, err := agentrelay.Listen(dir)
	if err != nil {
		return err
	}
	defer agentrelay.Cleanup(dir)
	// A non-blocking stdin goes through Go's poller, so closing it ends a
	// pending read and the relay can stop on a signal as well as at EOF.
	stdin := os.Stdin
	if syscall.SetNonblock(0, true) == nil {
		stdin = os.NewFile(0, "stdin")
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT, syscall.SIGPIPE)
	go func() {
		<-sig
		ln.Close()
	}()
	if _, err := io.WriteString(os.Stdout, agentrelay.Ready); err != nil {
		ln.Close()
		return err
	}
	return agentrelay.ServePod(ln, agentrelay.Stdio{Reader: stdin, Writer: os.Stdout, Closers: []io.Closer{stdin, os.Stdout}}, os.Stderr)
}
