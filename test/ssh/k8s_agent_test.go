package ssh

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
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
// get a socket each; once they end, or hang up, nothing of them is left
// in the Pod. A connection without -A gets no SSH_AUTH_SOCK.
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
	cmd, stdin, out, errb := s.sshHeldOpen(u, agentSock, `echo "sock=$SSH_AUTH_SOCK"; /tmp/agentprobe; echo "rc=$?"; ls -lnd "$(dirname "$SSH_AUTH_SOCK")" "$SSH_AUTH_SOCK"; id -u; cat`)
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
	leftovers := "ls -A " + desired.AgentMountTarget + "; ps -o args | grep '[a]gentrelay' || true"
	if left := inPod(leftovers); left != "" {
		t.Fatalf("left in the pod after both connections ended:\n%s", left)
	}

	// A connection that hangs up: its relay goes with its process.
	hung := s.ssh(u, []string{"-A"}, "sleep 302")
	hung.Env = append(os.Environ(), "SSH_AUTH_SOCK="+agentSock)
	if err := hung.Start(); err != nil {
		t.Fatal(err)
	}
	defer hung.Process.Kill()
	harness.Eventually(t, time.Minute, "the relay and the command to run in the pod", func() bool {
		ps := inPod("ps -o args")
		return strings.Contains(ps, "sleep 302") && strings.Contains(ps, "agentrelay")
	})
	hung.Process.Kill()
	hung.Wait()
	harness.Eventually(t, 20*time.Second, "the hung-up connection's relay and socket to go", func() bool {
		return inPod(leftovers+"; ps -o args | grep '[s]leep 302' || true") == ""
	})
}

// BenchmarkKubernetesAgentForwarding measures what 'ssh -A' adds to a
// re-attach with runtime: kubernetes: "ssh -A user@host true" against
// "ssh user@host true", alternated run by run so that both see the same
// load, after a first -A connection copied the relay into the Pod (also
// reported). Run it with -run '^$' -bench BenchmarkKubernetesAgentForwarding -benchtime 1x.
func BenchmarkKubernetesAgentForwarding(b *testing.B) {
	const runs = 10
	k8sCluster(b)
	o := serverOptions{Users: []string{"skw"}, SSH: "  allow_agent_forwarding: true\n"}
	o.Extra += "runtime: kubernetes\nkubernetes:\n  kubeconfig: " + k8sPodspawnKubeconfig + "\n  namespace: " + k8sNamespace + "\n"
	s := newServer(b, o)
	u := s.user("skw")
	agentSock := startAgent(b, s.Dir, u.KeyPath)
	timeIt := func(what string, opts ...string) time.Duration {
		cmd := s.ssh(u, opts, "true")
		cmd.Env = append(os.Environ(), "SSH_AUTH_SOCK="+agentSock)
		return timeCmd(b, what, cmd)
	}
	timeIt("new session")
	first := timeIt("first ssh -A (copies the relay)", "-A")
	var with, without []time.Duration
	for i := 0; i < runs; i++ {
		without = append(without, timeIt("ssh true"))
		with = append(with, timeIt("ssh -A true", "-A"))
	}
	s.Env.MustRun("stop", u.Name)
	median := func(ds []time.Duration) time.Duration {
		ds = slices.Clone(ds)
		slices.Sort(ds)
		return ds[len(ds)/2-1]/2 + ds[len(ds)/2]/2
	}
	report := func(label, unit string, ds []time.Duration) {
		b.ReportMetric(ms(median(ds)), unit)
		b.Logf("%-44s median %7.1f ms  min %7.1f ms  max %7.1f ms  (n=%d)", label, ms(median(ds)), ms(slices.Min(ds)), ms(slices.Max(ds)), len(ds))
	}
	b.Logf("%-44s %7.1f ms", "ssh -A true, first (copies the relay)", ms(first))
	report("ssh true, re-attach (kubernetes)", "reattach-ms", without)
	report("ssh -A true, re-attach (kubernetes)", "reattach-agent-ms", with)
	b.Logf("%-44s %+7.1f ms", "added by -A (difference of the medians)", ms(median(with)-median(without)))
}
