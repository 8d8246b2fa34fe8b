package ssh

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/observed/k8sobs"
	"github.com/podspawn/podspawn/test/harness"
)

// buildAgentProbe builds testdata/agentprobe static, for the busybox image.
func buildAgentProbe(t *testing.T) []byte {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "agentprobe")
	cmd := exec.Command("go", "build", "-o", bin, "./test/ssh/testdata/agentprobe")
	cmd.Dir, cmd.Env = harness.RepoRoot(), append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the agent probe: %v\n%s", err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestKubernetesAgentForwarding: with runtime: kubernetes, 'ssh -A' puts
// the client's agent in the session Pod: the relay copied into the Pod
// listens on a socket of the connection's own (0600 in a 0700 directory
// of the user), and the agent lists and signs through it; two connections
// get a socket each; once they end, nothing of them is left in the Pod.
// A connection without -A gets no SSH_AUTH_SOCK.
func TestKubernetesAgentForwarding(t *testing.T) {
	s, cs := k8sServer(t, serverOptions{Users: []string{"skg"}, SSH: "  allow_agent_forwarding: true\n"})
	u := s.user("skg")
	pod := k8sobs.ObjectName(desired.SessionKey{User: u.Name})
	cfg, err := clientcmd.BuildConfigFromFlags("", k8sAdminKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	inPod := func(script string) string {
		t.Helper()
		out, err := execOut(cs, cfg, pod, "session", "sh", "-c", script)
		if err != nil {
			t.Fatalf("%s in the pod: %v\n%s", script, err, out)
		}
		return out
	}
	agentSock := startAgent(t, s.Dir, u.KeyPath)
	want := strings.Fields(run(t, "env", "SSH_AUTH_SOCK="+agentSock, "ssh-add", "-l"))[1] // the fingerprint

	// The first login creates the Pod; the probe is copied in.
	if out := s.mustSSH(u, `echo "[$SSH_AUTH_SOCK]"`); out != "[]\n" {
		t.Fatalf("without -A: SSH_AUTH_SOCK = %q, want unset", out)
	}
	if r := s.runSSH(u, nil, string(buildAgentProbe(t)), "cat >/tmp/agentprobe && chmod 0755 /tmp/agentprobe"); r.Code != 0 {
		t.Fatalf("copying the probe: %d %s", r.Code, r.Stderr)
	}

	// A connection with -A that stays open while the socket is inspected.
	cmd := s.ssh(u, []string{"-A"}, `echo "sock=$SSH_AUTH_SOCK"; /tmp/agentprobe; echo "rc=$?"; ls -lnd "$(dirname "$SSH_AUTH_SOCK")" "$SSH_AUTH_SOCK"; id -u; cat`)
	cmd.Env = append(os.Environ(), "SSH_AUTH_SOCK="+agentSock)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out, errb lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	s.waitFor("the socket listing", 60*time.Second, func() bool { return regexp.MustCompile(`(?m)^[0-9]+\n`).MatchString(out.String()) })
	got := out.String()
	if !strings.Contains(got, "key "+want+" signed\n") || !strings.Contains(got, "rc=0") {
		t.Fatalf("the agent does not answer in the pod (want %s):\n%s\nstderr:\n%s", want, got, errb.String())
	}
	sock := regexp.MustCompile(`sock=(\S+)`).FindStringSubmatch(got)[1]
	if !strings.HasPrefix(sock, desired.AgentMountTarget+"/") {
		t.Fatalf("SSH_AUTH_SOCK %s is not under %s", sock, desired.AgentMountTarget)
	}
	uid := strings.TrimSpace(regexp.MustCompile(`(?m)^([0-9]+)$`).FindString(got))
	for _, re := range []string{`(?m)^drwx------ +[0-9]+ ` + uid + ` +[0-9]+ .* ` + regexp.QuoteMeta(filepath.Dir(sock)) + `$`,
		`(?m)^srw------- +[0-9]+ ` + uid + ` .* ` + regexp.QuoteMeta(sock) + `$`} {
		if !regexp.MustCompile(re).MatchString(got) {
			t.Fatalf("socket or directory not owned by uid %s with mode 0700/0600:\n%s", uid, got)
		}
	}

	// A second connection gets a socket of its own, and reuses the copy.
	second := s.ssh(u, []string{"-A"}, `echo "sock=$SSH_AUTH_SOCK"; /tmp/agentprobe`)
	second.Env = append(os.Environ(), "SSH_AUTH_SOCK="+agentSock)
	out2, err := second.CombinedOutput()
	if err != nil || !strings.Contains(string(out2), "key "+want+" signed") || strings.Contains(string(out2), "sock="+sock+"\n") {
		t.Fatalf("second connection (first uses %s): %v\n%s", sock, err, out2)
	}
	relays := inPod("ls -ln " + desired.AgentRelayDir + "; ls -lnd " + desired.AgentRelayDir + " " + desired.AgentMountTarget)
	if !regexp.MustCompile(`(?m)^total [0-9]+\n-rwxr-xr-x +1 0 +0 .* agentrelay-[0-9a-f]{32}\ndrwx-wx-wt +[0-9]+ 0 +0 .* ` +
		regexp.QuoteMeta(desired.AgentMountTarget) + `\ndrwxr-xr-x +[0-9]+ 0 +0 .* ` + regexp.QuoteMeta(desired.AgentRelayDir) + `\n`).MatchString(relays) {
		t.Fatalf("the relay's copy and directories in the pod:\n%s", relays)
	}

	// Disconnect: the relay is gone with its socket and directory.
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("ssh -A: %v\n%s", err, errb.String())
	}
	if left := inPod("ls -A " + desired.AgentMountTarget + "; ps -o args | grep '[a]gentrelay' || true"); left != "" {
		t.Fatalf("left in the pod after both connections ended:\n%s", left)
	}
}
