package ssh

import (
	"bufio"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// openShell logs u in with a terminal of rows x cols and starts a shell,
// returning once its first prompt arrived.
func openShell(t *testing.T, s *server, u *testUser, rows, cols int, echo uint32) (*gossh.Session, io.Writer, *bufio.Reader) {
	t.Helper()
	sess, err := s.dial(u).NewSession()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close() })
	if err := sess.RequestPty("xterm", rows, cols, gossh.TerminalModes{gossh.ECHO: echo}); err != nil {
		t.Fatal(err)
	}
	stdin, err := sess.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdoutPipe, err := sess.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	out := bufio.NewReader(stdoutPipe)
	if err := sess.Shell(); err != nil {
		t.Fatal(err)
	}
	if got, err := readUntil(out, "$ ", 60*time.Second); err != nil {
		t.Fatalf("no prompt: %v (got %q)", err, got)
	}
	return sess, stdin, out
}

// checkTerminal runs a command in a 40x80 shell from openShell, resizes
// the window to 50x132 and checks that the resize reached the terminal
// (where names it), then exits with status 7 and checks that code.
func checkTerminal(t *testing.T, sess *gossh.Session, stdin io.Writer, out *bufio.Reader, where string) {
	t.Helper()
	fmt.Fprintf(stdin, "echo marker-$((6*7)) $TERM; stty size\n")
	if got, err := readUntil(out, "marker-42 xterm", 20*time.Second); err != nil {
		t.Fatalf("command output: %v (got %q)", err, got)
	}
	if got, err := readUntil(out, "40 80", 20*time.Second); err != nil {
		t.Fatalf("initial window size: %v (got %q)", err, got)
	}
	if err := sess.WindowChange(50, 132); err != nil {
		t.Fatal(err)
	}
	resized := waitUntil(20*time.Second, func() bool {
		fmt.Fprintf(stdin, "stty size\n")
		got, err := readUntil(out, "\n", 5*time.Second)
		for err == nil && !strings.Contains(got, "$ ") {
			var more string
			more, err = readUntil(out, "$ ", 5*time.Second)
			got += more
		}
		return strings.Contains(got, "50 132")
	})
	if !resized {
		t.Fatalf("window change to 50x132 never reached %s", where)
	}
	fmt.Fprintf(stdin, "exit 7\n")
	err := sess.Wait()
	if ee, ok := err.(*gossh.ExitError); !ok || ee.ExitStatus() != 7 {
		t.Fatalf("shell exit = %v, want status 7", err)
	}
}
