package ssh

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/observed/k8sobs"
	"github.com/podspawn/podspawn/test/harness"
)

// TestKubernetesListWideAndCrashLoop: list -o wide names the node of the
// session's Pod, status counts Pods, and a session container the kubelet
// restarts after it died shows as restarting, with the kubelet's count,
// as a crash-looping Docker container does, and status counts it.
func TestKubernetesListWideAndCrashLoop(t *testing.T) {
	s, cs := k8sServer(t, serverOptions{Users: []string{"skl"}})
	u := s.user("skl")
	key := desired.SessionKey{User: u.Name}
	s.mustSSH(u, "true")
	pod, err := cs.CoreV1().Pods(k8sNamespace).Get(context.Background(), k8sobs.ObjectName(key), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pod.Spec.NodeName == "" {
		t.Fatal("the running session pod has no node")
	}
	row := tableRow(t, s.Env.MustRun("list", "-o", "wide").Stdout, u.Name)
	if len(row) != 8 || row[3] != "grace_period" || row[7] != pod.Spec.NodeName {
		t.Fatalf("list -o wide row %q, want status grace_period and node %s", row, pod.Spec.NodeName)
	}
	if out := s.Env.MustRun("status").Stdout; !strings.Contains(out, " Pods in Kubernetes\n") {
		t.Fatalf("status does not count Pods:\n%s", out)
	}

	killSessionInit(t, cs, k8sobs.ObjectName(key))
	var out string
	harness.Eventually(t, 30*time.Second, "list to show the kubelet's restart", func() bool {
		out = s.Env.MustRun("list").Stdout
		r := tableRow(t, out, u.Name)
		return len(r) > 4 && r[3] == "restarting" && r[4] == "(1)"
	})
	if js := s.Env.MustRun("list", "-o", "json").Stdout; !strings.Contains(js, `"restarts": 1,`) {
		t.Fatalf("list -o json lacks the restart:\n%s", js)
	}
	// status counts it as list does (the kubelet's restart, within
	// cleanup.crash_loop_reset_after of the new start).
	if out := s.Env.MustRun("status").Stdout; !strings.Contains(out, "\nRestarting:  1 ") {
		t.Fatalf("status does not count the kubelet's restart:\n%s", out)
	}
	if out := s.Env.MustRun("status", "--prometheus").Stdout; !strings.Contains(out, "\npodspawn_sessions_restarting 1\n") {
		t.Fatalf("status --prometheus does not count the kubelet's restart:\n%s", out)
	}
}

// tableRow is the whitespace-split row of user in list's table.
func tableRow(t *testing.T, out, user string) []string {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == user {
			return f
		}
	}
	return nil
}

// killSessionInit SIGKILLs the session container's PID 1 (sleep infinity)
// from the host, found by the container's id in its cgroup, as a crash
// would end it; the kubelet then restarts the container.
func killSessionInit(t *testing.T, cs kubernetes.Interface, podName string) {
	t.Helper()
	p, err := cs.CoreV1().Pods(k8sNamespace).Get(context.Background(), podName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var id string
	for _, st := range p.Status.ContainerStatuses {
		if st.Name == "session" {
			_, id, _ = strings.Cut(st.ContainerID, "://")
		}
	}
	if id == "" {
		t.Fatalf("pod %s has no session container id", podName)
	}
	dirs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		t.Fatal(err)
	}
	killed := 0
	for _, d := range dirs {
		cg, err1 := os.ReadFile(filepath.Join(d, "cgroup"))
		cmd, err2 := os.ReadFile(filepath.Join(d, "cmdline"))
		if err1 != nil || err2 != nil || !bytes.Contains(cg, []byte(id)) || string(cmd) != "sleep\x00infinity\x00" {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(d))
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("killing %d: %v", pid, err)
		}
		killed++
	}
	if killed != 1 {
		t.Fatalf("killed %d processes of container %s, want its sleep infinity", killed, id)
	}
}

// TestKubernetesDoctor: doctor's Kubernetes checks against the test
// cluster with podspawn's own ServiceAccount: the API server and its
// version, the namespace (the Role cannot read namespaces: the dry run
// tells), every right of the RBAC manifest, the registry, and a warning
// that no plugin here enforces NetworkPolicy; a pull secret is in the
// session Pod and doctor finds it.
func TestKubernetesDoctor(t *testing.T) {
	cs := k8sCluster(t)
	secret := harness.Uniq("skd-regcred")
	_, err := cs.CoreV1().Secrets(k8sNamespace).Create(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: secret},
		Type: corev1.SecretTypeDockerConfigJson, StringData: map[string]string{corev1.DockerConfigJsonKey: `{"auths":{}}`}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.CoreV1().Secrets(k8sNamespace).Delete(context.Background(), secret, metav1.DeleteOptions{}) })
	s, _ := k8sServer(t, serverOptions{Users: []string{"skd"}, Kubernetes: "  image_pull_secrets: [" + secret + "]\n"})
	// The session's Pod names it; the kubelet pulls with it.
	u := s.user("skd")
	s.mustSSH(u, "true")
	pod, err := cs.CoreV1().Pods(k8sNamespace).Get(context.Background(), k8sobs.ObjectName(desired.SessionKey{User: u.Name}), metav1.GetOptions{})
	if err != nil || len(pod.Spec.ImagePullSecrets) != 1 || pod.Spec.ImagePullSecrets[0].Name != secret {
		t.Fatalf("the session Pod's pull secrets: %v, %v", pod, err)
	}
	r := s.Env.Run("doctor", "-o", "json")
	var rep struct {
		Checks []struct{ Name, Status, Detail string } `json:"checks"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &rep); err != nil {
		t.Fatalf("doctor -o json: %v\n%s", err, r.Stdout)
	}
	got := map[string]string{}
	for _, c := range rep.Checks {
		got[c.Name] = c.Status + ": " + c.Detail
	}
	for name, want := range map[string]*regexp.Regexp{
		"Kubernetes API server":      regexp.MustCompile(`^pass: v1\.\d+\.\d+ at https://127\.0\.0\.1:16443$`),
		"Kubernetes namespace":       regexp.MustCompile(`^pass: namespace podspawn \(seen through a dry-run create\)$`),
		"Kubernetes permissions":     regexp.MustCompile(`^pass: all \d+ permissions in namespace podspawn$`),
		"image registry":             regexp.MustCompile(`^pass: GET http://127\.0\.0\.1:15000/v2/: 200 OK$`),
		"image pull secrets":         regexp.MustCompile(`^pass: ` + secret + ` in namespace podspawn$`),
		"network policy enforcement": regexp.MustCompile(`^warn: no network plugin known to enforce NetworkPolicy found .*forbidden\)$`),
	} {
		if !want.MatchString(got[name]) {
			t.Errorf("%s: %q, want %s", name, got[name], want)
		}
	}
}
