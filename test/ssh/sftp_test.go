package ssh

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/podspawn/podspawn/desired"
)

// The test image carries the host's sftp-server at the default path
// (hack/build-test-image.sh), so these tests run the real one.
const sftpServerPath = "/usr/lib/openssh/sftp-server"

var sftpServerLine = regexp.MustCompile(`(?m)^  sftp_server: .*$`)

// setSFTPServer points ssh.sftp_server at path. spawn reads the config
// on every connection, so the running sshd needs no restart.
func (s *server) setSFTPServer(path string) {
	s.t.Helper()
	data, err := os.ReadFile(s.Env.ConfigPath)
	if err != nil {
		s.t.Fatal(err)
	}
	if !sftpServerLine.Match(data) {
		s.t.Fatalf("config has no sftp_server line to replace:\n%s", data)
	}
	data = sftpServerLine.ReplaceAll(data, []byte("  sftp_server: "+path))
	if err := os.WriteFile(s.Env.ConfigPath, data, 0o644); err != nil {
		s.t.Fatal(err)
	}
}

// sftp returns an sftp client command for u reading its batch from
// stdin, with the ssh options the other tests use (sftp spells the port
// option -P).
func (s *server) sftp(u *testUser) *exec.Cmd {
	args := s.sshArgs(u, "-b", "-")
	for i, a := range args {
		if a == "-p" {
			args[i] = "-P"
			break
		}
	}
	return exec.Command("sftp", args...)
}

// readLineMatching reads r line by line until a line matches re and
// returns that line, or everything read so far with the error.
func readLineMatching(r *bufio.Reader, re *regexp.Regexp, timeout time.Duration) (string, error) {
	type result struct {
		line string
		err  error
	}
	done := make(chan result, 1)
	var seen strings.Builder
	go func() {
		for {
			line, err := r.ReadString('\n')
			seen.WriteString(line)
			if re.MatchString(strings.TrimRight(line, "\n")) {
				done <- result{line: line}
				return
			}
			if err != nil {
				done <- result{line: seen.String(), err: err}
				return
			}
		}
	}()
	select {
	case res := <-done:
		return res.line, res.err
	case <-time.After(timeout):
		return "", fmt.Errorf("timed out waiting for a line matching %s", re)
	}
}

// TestSFTP: the real sftp client uploads binary content to the user's
// home, lists it and downloads it back byte for byte; the file lands in
// the session container, owned by the user, not on the host; the sftp
// connection holds a lease while it is open and releases it on exit.
func TestSFTP(t *testing.T) {
	s := newServer(t, serverOptions{Users: []string{"sssft"}})
	u := s.user("sssft")
	s.setSFTPServer(sftpServerPath)
	ctr := desired.ContainerName(desired.SessionKey{User: u.Name})

	// Every byte value (NUL and everything above 0x7f included), then
	// enough random bytes to take several SFTP read and write requests.
	data := make([]byte, 256+200<<10)
	for i := 0; i < 256; i++ {
		data[i] = byte(i)
	}
	if _, err := rand.Read(data[256:]); err != nil {
		t.Fatal(err)
	}
	local := t.TempDir()
	src, back := filepath.Join(local, "upload.bin"), filepath.Join(local, "download.bin")
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	name := "sftp-" + u.Name + ".bin"

	// Where the file would land if the subsystem ran on the host: the
	// account's host home (/), or a conventional /home/<user>.
	acct, err := user.Lookup(u.Name)
	if err != nil {
		t.Fatal(err)
	}
	hostPaths := []string{filepath.Join(acct.HomeDir, name), filepath.Join("/home", u.Name, name)}
	for _, p := range hostPaths {
		if _, err := os.Lstat(p); err == nil {
			t.Fatalf("%s exists on the host before the test", p)
		}
	}

	cmd := s.sftp(u)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdoutPipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := false
	defer func() {
		if !exited {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	out := bufio.NewReader(stdoutPipe)

	// Upload, then list: the listing line is the sign that the upload
	// finished while the connection stays open.
	fmt.Fprintf(stdin, "put %s %s\nls -l %s\n", src, name, name)
	listing := regexp.MustCompile(`^-\S+\s+.*\s` + strconv.Itoa(len(data)) + `\s.*\s` + regexp.QuoteMeta(name) + `$`)
	line, err := readLineMatching(out, listing, 2*time.Minute)
	if err != nil {
		t.Fatalf("sftp put and ls: %v\nstdout:\n%s\nstderr:\n%s", err, line, stderr.String())
	}

	// While sftp is connected, it counts like a shell: one lease on a
	// running session.
	r := s.session(u, "")
	if r == nil || r.Connections != 1 || r.Status != string(desired.StatusRunning) {
		t.Fatalf("during the sftp transfer: %+v, want running with 1 connection", r)
	}
	if pids := s.leasePIDs(u, ""); len(pids) != 1 {
		t.Fatalf("leases during the sftp transfer: %v, want one", pids)
	}

	// The upload is in the container's home, owned by the user's uid
	// there, with the exact bytes.
	uid := strings.TrimSpace(run(t, "docker", "exec", "-u", "0", ctr, "id", "-u", u.Name))
	inCtr := "/home/" + u.Name + "/" + name
	if got := strings.TrimSpace(run(t, "docker", "exec", "-u", "0", ctr, "stat", "-c", "%u %s", inCtr)); got != uid+" "+strconv.Itoa(len(data)) {
		t.Fatalf("%s in %s: uid and size %q, want %q", inCtr, ctr, got, uid+" "+strconv.Itoa(len(data)))
	}
	if f := strings.Fields(line); len(f) < 4 || f[2] != u.Name {
		t.Fatalf("sftp ls -l line %q does not show %s as the owner", line, u.Name)
	}
	content, err := exec.Command("docker", "exec", "-u", "0", ctr, "cat", inCtr).Output()
	if err != nil {
		t.Fatalf("reading %s in %s: %v", inCtr, ctr, err)
	}
	if !bytes.Equal(content, data) {
		t.Fatalf("%s in %s: %d bytes differ from the %d uploaded", inCtr, ctr, len(content), len(data))
	}
	for _, p := range hostPaths {
		if _, err := os.Lstat(p); err == nil {
			t.Fatalf("the upload landed on the host at %s", p)
		}
	}

	// Download to another local path, then end the batch.
	fmt.Fprintf(stdin, "get %s %s\n", name, back)
	stdin.Close()
	rest, _ := io.ReadAll(out)
	err = cmd.Wait()
	exited = true
	if err != nil {
		t.Fatalf("sftp: %v\nstdout:\n%s\nstderr:\n%s", err, rest, stderr.String())
	}
	got, err := os.ReadFile(back)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("downloaded %d bytes differ from the %d uploaded", len(got), len(data))
	}

	s.waitFor("the sftp connection's lease to be released", 30*time.Second, func() bool {
		r := s.session(u, "")
		return r != nil && r.Connections == 0 && r.Status == string(desired.StatusGrace) && len(s.leasePIDs(u, "")) == 0
	})
}

// TestSFTPServerMissing: when ssh.sftp_server names a path the image does
// not have, the sftp client fails without a garbled stream, spawn's log
// says why and what to do, a direct command gets the reason on stderr,
// and the connection leaves no lease behind.
func TestSFTPServerMissing(t *testing.T) {
	s := newServer(t, serverOptions{Users: []string{"sssft"}})
	u := s.user("sssft")
	const missing = "/usr/lib/openssh/podspawn-no-such-sftp-server"
	s.setSFTPServer(missing)

	cmd := s.sftp(u)
	cmd.Stdin = strings.NewReader("ls\n")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if code := exitCode(err); code == 0 || code == -1 {
		t.Fatalf("sftp with a missing sftp server: %v, want a non-zero exit\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	// Nothing reaches the protocol stream: Docker's exec error read as a
	// packet would show as "Received message too long".
	if strings.Contains(stderr.String(), "message too long") {
		t.Fatalf("sftp read an error text as a packet:\n%s", stderr.String())
	}
	// sshd drops a subsystem's stderr, so the operator learns why from
	// spawn's log, with what to do.
	logged, err := os.ReadFile(s.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{missing + " does not exist in image", "ssh.sftp_server", "openssh-sftp-server"} {
		if !strings.Contains(string(logged), want) {
			t.Fatalf("spawn's log does not say %q:\n%s", want, logged)
		}
	}
	// Run as a command, not a subsystem, the server's absence reaches the
	// user directly.
	direct := s.runSSH(u, nil, "", "/usr/lib/openssh/sftp-server")
	if direct.Code != 127 || !strings.Contains(direct.Stderr, "sftp and scp are not available in this session") {
		t.Fatalf("sftp-server as a command: exit %d, stderr %q; want 127 and the reason", direct.Code, direct.Stderr)
	}

	s.waitFor("no lease left by the failed sftp connection", 30*time.Second, func() bool {
		r := s.session(u, "")
		return (r == nil || r.Connections == 0) && len(s.leasePIDs(u, "")) == 0
	})
}
