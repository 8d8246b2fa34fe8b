package ssh

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/observed/k8sobs"
	"github.com/podspawn/podspawn/test/harness"
)

// The test cluster of hack/k8s-up.sh (paths from hack/k8s/lib.sh).
const (
	k8sAdminKubeconfig    = "/var/lib/podspawn-k8s/kubeconfig"
	k8sPodspawnKubeconfig = "/var/lib/podspawn-k8s/podspawn.kubeconfig"
	k8sNamespace          = "podspawn"
	k8sRegistry           = "127.0.0.1:15000"
	k8sStorageClass       = "podspawn-hostpath"
)

var (
	k8sOnce sync.Once
	k8sErr  error
	// k8sStarted: this test process brought the cluster up, and TestMain
	// brings it down again when the package's tests are done.
	k8sStarted bool
)

// TestMain leaves the machine as found: a test cluster this process
// started is torn down after the last test.
func TestMain(m *testing.M) {
	code := m.Run()
	if k8sStarted {
		if out, err := exec.Command("bash", filepath.Join(harness.RepoRoot(), "hack", "k8s-down.sh")).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "hack/k8s-down.sh: %v\n%s", err, out)
			code = 1
		}
	}
	os.Exit(code)
}

// k8sCluster starts the test cluster through hack/k8s-up.sh once per test
// process (idempotent; it builds the binaries or takes the cached ones)
// and returns an admin client to check what podspawn did.
func k8sCluster(t testing.TB) kubernetes.Interface {
	t.Helper()
	k8sOnce.Do(func() {
		hack := filepath.Join(harness.RepoRoot(), "hack")
		wasUp := false
		if _, err := os.Stat(k8sAdminKubeconfig); err == nil {
			wasUp = exec.Command("bash", "-c", "KUBECONFIG="+k8sAdminKubeconfig+" PATH=$PATH:/var/cache/podspawn-k8s/*/bin timeout 5 kubectl get --raw /readyz").Run() == nil
		}
		start := time.Now()
		k8sStarted = !wasUp
		if out, err := exec.Command("bash", filepath.Join(hack, "k8s-up.sh")).CombinedOutput(); err != nil {
			k8sErr = fmt.Errorf("hack/k8s-up.sh: %v\n%s", err, out)
			return
		}
		fmt.Fprintf(os.Stderr, "test cluster up in %s (was up: %v)\n", time.Since(start).Round(time.Millisecond), wasUp)
	})
	if k8sErr != nil {
		t.Fatal(k8sErr)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", k8sAdminKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// k8sServer is a podspawn installation behind a real sshd with
// runtime: kubernetes, on the test cluster's podspawn ServiceAccount.
func k8sServer(t testing.TB, o serverOptions) (*server, kubernetes.Interface) {
	cs := k8sCluster(t)
	o.Extra += "runtime: kubernetes\nkubernetes:\n  kubeconfig: " + k8sPodspawnKubeconfig + "\n  namespace: " + k8sNamespace +
		"\n  image_registry: " + k8sRegistry + "\n  storage_class: " + k8sStorageClass + "\n  volume_size: 16Mi\n" + o.Kubernetes
	s := newServer(t, o)
	inst := s.Env.InstanceID()
	t.Cleanup(func() {
		zero := int64(0)
		cs.CoreV1().Pods(k8sNamespace).DeleteCollection(context.Background(), metav1.DeleteOptions{GracePeriodSeconds: &zero},
			metav1.ListOptions{LabelSelector: k8sobs.LabelInstance + "=" + inst})
		cs.NetworkingV1().NetworkPolicies(k8sNamespace).DeleteCollection(context.Background(), metav1.DeleteOptions{},
			metav1.ListOptions{LabelSelector: k8sobs.LabelInstance + "=" + inst})
		cs.CoreV1().PersistentVolumeClaims(k8sNamespace).DeleteCollection(context.Background(), metav1.DeleteOptions{},
			metav1.ListOptions{LabelSelector: k8sobs.LabelInstance + "=" + inst})
	})
	return s, cs
}

func sessionPods(t testing.TB, cs kubernetes.Interface, instance string) []corev1.Pod {
	t.Helper()
	l, err := cs.CoreV1().Pods(k8sNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: k8sobs.LabelInstance + "=" + instance})
	if err != nil {
		t.Fatal(err)
	}
	var live []corev1.Pod
	for _, p := range l.Items {
		if p.DeletionTimestamp == nil {
			live = append(live, p)
		}
	}
	return live
}

// TestKubernetesLogin: an SSH login lands in the user's Pod as the user,
// the exit code comes back exactly, a TTY works, the Pod carries no
// service account token and the security profile, and stop removes it.
func TestKubernetesLogin(t *testing.T) {
	s, cs := k8sServer(t, serverOptions{Users: []string{"ska"}})
	u := s.user("ska")
	key := desired.SessionKey{User: u.Name}

	r := s.runSSH(u, nil, "", `echo "$(id -un) $(hostname) $(pwd)"; echo oops >&2; exit 42`)
	if r.Code != 42 {
		t.Fatalf("exit code = %d, want 42\nstdout:\n%s\nstderr:\n%s", r.Code, r.Stdout, r.Stderr)
	}
	if want := u.Name + " " + u.Name + " /home/" + u.Name + "\n"; r.Stdout != want {
		t.Fatalf("stdout = %q, want %q", r.Stdout, want)
	}
	if !strings.Contains(r.Stderr, "oops") {
		t.Fatalf("stderr %q lacks the command's stderr", r.Stderr)
	}
	pods := sessionPods(t, cs, s.Env.InstanceID())
	if len(pods) != 1 || pods[0].Name != k8sobs.ObjectName(key) {
		t.Fatalf("pods %v, want one named %s", pods, k8sobs.ObjectName(key))
	}
	p := pods[0]
	if p.Annotations[k8sobs.AnnotationUser] != u.Name || p.Labels[k8sobs.LabelManagedBy] != "podspawn" {
		t.Fatalf("pod labels %v annotations %v", p.Labels, p.Annotations)
	}
	sc := p.Spec.Containers[0].SecurityContext
	if p.Spec.AutomountServiceAccountToken == nil || *p.Spec.AutomountServiceAccountToken ||
		sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil ||
		len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" || sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault ||
		p.Spec.TerminationGracePeriodSeconds == nil || *p.Spec.TerminationGracePeriodSeconds != 1 {
		t.Fatalf("session pod security: automount %v, container %+v, grace %v", p.Spec.AutomountServiceAccountToken, sc, p.Spec.TerminationGracePeriodSeconds)
	}
	lim := p.Spec.Containers[0].Resources
	if lim.Limits.Memory().Value() != 256<<20 || lim.Requests.Memory().Value() != 256<<20 || lim.Limits.Cpu().MilliValue() != 1000 {
		t.Fatalf("resources %+v, want 1 cpu and 256Mi as requests and limits", lim)
	}
	// No token in the Pod: nothing to reach the API server with.
	if out := s.mustSSH(u, "ls /var/run/secrets/kubernetes.io/serviceaccount 2>/dev/null | wc -l; echo $((1+1))"); out != "0\n2\n" {
		t.Fatalf("service account directory check: %q", out)
	}
	// A TTY session: a terminal, and its exit code.
	r = s.runSSH(u, []string{"-tt"}, "", "tty; stty size; exit 7")
	if r.Code != 7 || !strings.Contains(r.Stdout, "/dev/pts/") {
		t.Fatalf("tty session: code %d, stdout %q, stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	// The same Pod served every connection.
	if again := sessionPods(t, cs, s.Env.InstanceID()); len(again) != 1 || again[0].UID != p.UID {
		t.Fatalf("pods after reconnecting: %d (uid changed: %v)", len(again), len(again) == 1 && again[0].UID != p.UID)
	}

	s.Env.MustRun("stop", u.Name)
	harness.Eventually(t, 10*time.Second, "session pod removed by stop", func() bool {
		return len(sessionPods(t, cs, s.Env.InstanceID())) == 0
	})
	if r := s.Env.Run("list"); strings.Contains(r.Stdout, u.Name) {
		t.Fatalf("list after stop still shows %s:\n%s", u.Name, r.Stdout)
	}
}

// TestKubernetesOrphansAndForeign: cleanup removes a Pod of this instance
// without a session and leaves another instance's Pod and an unlabelled
// Pod alone.
func TestKubernetesOrphansAndForeign(t *testing.T) {
	s, cs := k8sServer(t, serverOptions{Users: []string{"skb"}, Options: harness.Options{Cleanup: "  orphan_min_age: 1s\n"}})
	inst := s.Env.InstanceID()
	orphan := labelledPod(t, cs, "skorphan"+harness.Uniq(""), inst, true)
	foreign := labelledPod(t, cs, "skforeign"+harness.Uniq(""), "other-instance-"+inst, true)
	unlabelled := labelledPod(t, cs, "skplain"+harness.Uniq(""), inst, false)
	// Past orphan_min_age (the creation time counts from the end of its
	// second, as the API server keeps whole seconds), the dry run plans
	// the orphan's removal in the same words as on Docker.
	var dry harness.Result
	planned := func() bool {
		dry = s.Env.MustRun("cleanup", "--dry-run")
		return strings.Contains(dry.Stdout, "remove-container") &&
			strings.Contains(dry.Stdout, desired.ContainerName(desired.SessionKey{User: orphan.Annotations[k8sobs.AnnotationUser]}))
	}
	if !waitUntil(10*time.Second, planned) {
		t.Fatalf("dry run does not plan the orphan's removal:\n%s", dry.Stdout)
	}
	s.Env.MustRun("cleanup")
	get := func(name string) bool {
		p, err := cs.CoreV1().Pods(k8sNamespace).Get(context.Background(), name, metav1.GetOptions{})
		return err == nil && p.DeletionTimestamp == nil
	}
	harness.Eventually(t, 10*time.Second, "orphan pod removed", func() bool { return !get(orphan.Name) })
	if !get(foreign.Name) || !get(unlabelled.Name) {
		t.Fatalf("cleanup touched a pod that is not this instance's: foreign present %v, unlabelled present %v", get(foreign.Name), get(unlabelled.Name))
	}
}

// TestKubernetesGraceExpiry: the cleanup daemon removes the session's Pod
// when the grace period after the last connection ends.
func TestKubernetesGraceExpiry(t *testing.T) {
	s, cs := k8sServer(t, serverOptions{Users: []string{"skc"}, Options: harness.Options{Session: "  grace_period: 2s\n  max_lifetime: 8h\n  mode: grace-period\n",
		Cleanup: "  orphan_min_age: 1s\n"}})
	u := s.user("skc")
	ctx, cancel := context.WithCancel(context.Background())
	daemon := exec.CommandContext(ctx, s.Env.Bin, "--config", s.Env.ConfigPath, "cleanup", "--daemon", "--interval", "60s")
	var dlog lockedBuffer
	daemon.Stdout, daemon.Stderr = &dlog, &dlog
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		daemon.Wait()
		if t.Failed() {
			t.Logf("daemon log:\n%s", dlog.String())
		}
	})
	s.mustSSH(u, "true")
	end := time.Now()
	if len(sessionPods(t, cs, s.Env.InstanceID())) != 1 {
		t.Fatal("no session pod after the login")
	}
	// The disconnect started the grace period rather than a teardown.
	if r := s.session(u, ""); r == nil || r.Status != string(desired.StatusGrace) {
		t.Fatalf("session after the disconnect: %+v, want it in its grace period", r)
	}
	// The wait is shorter than the 60 s resync: only the daemon's wake at
	// the grace deadline can remove the Pod in time.
	harness.Eventually(t, 30*time.Second, "session pod removed after the grace period", func() bool {
		return len(sessionPods(t, cs, s.Env.InstanceID())) == 0
	})
	t.Logf("pod removed %s after the connection ended (grace 2s)", time.Since(end).Round(10*time.Millisecond))

	// The informers bring a new orphan Pod to the daemon at once, long
	// before its 60 s resync; it goes once past orphan_min_age (1 s).
	orphan := labelledPod(t, cs, "skorph"+harness.Uniq(""), s.Env.InstanceID(), true)
	created := time.Now()
	// Again shorter than the resync: only the watch brings the Pod in time.
	harness.Eventually(t, 30*time.Second, "orphan pod removed by the daemon (through the watch, before the 60 s resync)", func() bool {
		p, err := cs.CoreV1().Pods(k8sNamespace).Get(context.Background(), orphan.Name, metav1.GetOptions{})
		return err != nil || p.DeletionTimestamp != nil
	})
	t.Logf("orphan pod removed %s after its creation (orphan_min_age 1s, resync 60s)", time.Since(created).Round(10*time.Millisecond))
}

// TestKubernetesInteractivePTY: a shell with a terminal in the Pod gets a
// prompt, follows window changes from the SSH client through the API
// server's exec, and its exit code comes back; remove-user --force then
// removes the Pod.
func TestKubernetesInteractivePTY(t *testing.T) {
	s, cs := k8sServer(t, serverOptions{Users: []string{"skd"}})
	u := s.user("skd")
	sess, stdin, out := openShell(t, s, u, 40, 80, 1)
	checkTerminal(t, sess, stdin, out, "the pod's terminal")

	// stdin reaches the process and its EOF ends it: 1 MB through cat.
	data := strings.Repeat("0123456789abcdef", 1<<16)
	if r := s.runSSH(u, nil, data, "cat"); r.Code != 0 || r.Stdout != data {
		t.Fatalf("1 MB through cat: exit %d, %d bytes back, stderr %q", r.Code, len(r.Stdout), r.Stderr)
	}

	if len(sessionPods(t, cs, s.Env.InstanceID())) != 1 {
		t.Fatal("no session pod")
	}
	s.Env.MustRun("remove-user", u.Name, "--force")
	harness.Eventually(t, 10*time.Second, "session pod removed by remove-user --force", func() bool {
		return len(sessionPods(t, cs, s.Env.InstanceID())) == 0
	})
}

// TestKubernetesDeadConnection: spawn killed with SIGKILL leaves no lease:
// the next cleanup pass kills what that connection started in the Pod
// (through the API server's exec, as the user) and releases its lease,
// while another live connection's command keeps running.
func TestKubernetesDeadConnection(t *testing.T) {
	cs := k8sCluster(t)
	e := harness.NewEnv(t, harness.Options{Session: "  grace_period: 60s\n  max_lifetime: 8h\n  mode: grace-period\n",
		Extra: "runtime: kubernetes\nkubernetes:\n  kubeconfig: " + k8sPodspawnKubeconfig + "\n  namespace: " + k8sNamespace + "\n"})
	user := harness.Uniq("skdc")
	e.AddUser(user)
	key := desired.SessionKey{User: user}
	t.Cleanup(func() { e.Run("stop", user) })
	cfg, err := clientcmd.BuildConfigFromFlags("", k8sAdminKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	procs := func() string {
		out, err := execOut(cs, cfg, k8sobs.ObjectName(key), "session", "ps", "-o", "args")
		if err != nil {
			return ""
		}
		return out
	}
	live := startSpawn(t, e, user, "sleep 130")
	harness.Eventually(t, 2*time.Minute, "the live connection's command to run", func() bool {
		return strings.Contains(procs(), "sleep 130")
	})
	dead := startSpawn(t, e, user, "sleep 121 & sleep 120")
	harness.Eventually(t, time.Minute, "the doomed connection's command and its child to run", func() bool {
		p := procs()
		return strings.Contains(p, "sleep 120") && strings.Contains(p, "sleep 121")
	})
	if n := len(e.Row(key).Leases); n != 2 {
		t.Fatalf("%d leases with two connections, want 2", n)
	}
	if err := dead.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	dead.Wait()
	r := e.Run("cleanup")
	if r.Code != 0 || !strings.Contains(r.Stdout, "killed the processes of dead connection") || !strings.Contains(r.Stdout, "released dead connection") {
		t.Fatalf("cleanup: exit %d\nstdout:\n%s\nstderr:\n%s", r.Code, r.Stdout, r.Stderr)
	}
	p := procs()
	if strings.Contains(p, "sleep 120") || strings.Contains(p, "sleep 121") || !strings.Contains(p, "sleep 130") {
		t.Fatalf("processes in the pod after the pass (want only the live connection's sleep 130):\n%s", p)
	}
	s := e.Row(key)
	if s == nil || len(s.Leases) != 1 || s.Leases[0].PID != live.Process.Pid {
		t.Fatalf("session after the pass: %+v; want only the live connection's lease (pid %d)", s, live.Process.Pid)
	}
}

// TestKubernetesProjectService: a project's image is built on the host and
// pushed to kubernetes.image_registry, its session Pod pulls it, and the
// companion service runs as a second container of the Pod, reachable from
// the session by its name.
func TestKubernetesProjectService(t *testing.T) {
	s, cs := k8sServer(t, serverOptions{Users: []string{"ske"}})
	u := s.user("ske")
	project := fmt.Sprintf("skweb%d", os.Getpid())
	repo := t.TempDir()
	podfile := "base: " + harness.Image + "\nshell: /bin/sh\nservices:\n" +
		"  - {name: db, image: " + harness.Image + ", command: [sh, -c, 'while true; do echo hello-from-db | nc -l -p 7000; done']}\n"
	if err := os.WriteFile(repo+"/podfile.yaml", []byte(podfile), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"init", "-q"}, {"add", "podfile.yaml"}, {"-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "podfile"}} {
		run(t, "git", append([]string{"-C", repo}, args...)...)
	}
	s.Env.MustRun("add-project", project, "--repo", repo)
	t.Cleanup(func() {
		s.Env.Run("stop", u.Name+"@"+project)
		out, _ := exec.Command("docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", "podspawn/"+project).Output()
		for _, ref := range strings.Fields(string(out)) {
			exec.Command("docker", "image", "rm", ref).Run()
		}
	})
	r := s.runSSH(u, []string{"-o", "SetEnv=PODSPAWN_PROJECT=" + project + ".pod"}, "",
		"echo $(hostname); for i in 1 2 3 4 5 6 7 8 9 10; do nc db 7000 </dev/null && exit 0; sleep 0.2; done; exit 3")
	if r.Code != 0 || r.Stdout != project+"\nhello-from-db\n" {
		if p := sessionPods(t, cs, s.Env.InstanceID()); len(p) == 1 {
			t.Logf("pod containers %d, host aliases %+v, annotations %v", len(p[0].Spec.Containers), p[0].Spec.HostAliases, p[0].Annotations)
		}
		t.Fatalf("project %s: exit %d stdout %q stderr %q", project, r.Code, r.Stdout, r.Stderr)
	}
	pods := sessionPods(t, cs, s.Env.InstanceID())
	if len(pods) != 1 || len(pods[0].Spec.Containers) != 2 || !strings.HasPrefix(pods[0].Spec.Containers[0].Image, k8sRegistry+"/podspawn/"+project+":") {
		t.Fatalf("project pod: %+v", pods)
	}
	if h := pods[0].Spec.HostAliases; len(h) != 1 || h[0].IP != "127.0.0.1" || h[0].Hostnames[0] != "db" {
		t.Fatalf("host aliases %+v", h)
	}
	if r := s.Env.Run("list"); !strings.Contains(r.Stdout, project) {
		t.Fatalf("list does not show the project session:\n%s", r.Stdout)
	}
}

// labelledPod creates a busybox Pod that looks like a session Pod of user
// with podspawn's labels for instance, or with none (labelled false), and
// deletes it at the end of the test.
func labelledPod(t *testing.T, cs kubernetes.Interface, user, instance string, labelled bool) *corev1.Pod {
	t.Helper()
	key := desired.SessionKey{User: user}
	l := map[string]string{"managed-by": "podspawn", "podspawn.user": user, "podspawn.project": "", "podspawn.session": "s-orphan",
		"podspawn.instance": instance, "podspawn.role": "session"}
	an, err := k8sobs.Annotations(key, desired.ContainerName(key), l)
	if err != nil {
		t.Fatal(err)
	}
	an[k8sobs.AnnotationContainers] = `[{"container":"session","name":"` + desired.ContainerName(key) + `","labels":{"podspawn.user":"` + user +
		`","podspawn.session":"s-orphan","podspawn.role":"session","podspawn.project":""}}]`
	labels := k8sobs.Labels(key, desired.ContainerName(key), l)
	if !labelled {
		labels, an = map[string]string{"podspawn-test": instance}, nil
	}
	zero, no := int64(0), false
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: k8sobs.ObjectName(key), Labels: labels, Annotations: an},
		Spec: corev1.PodSpec{TerminationGracePeriodSeconds: &zero, AutomountServiceAccountToken: &no,
			Containers: []corev1.Container{{Name: "session", Image: harness.Image, ImagePullPolicy: corev1.PullNever}}}}
	created, err := cs.CoreV1().Pods(k8sNamespace).Create(context.Background(), p, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cs.CoreV1().Pods(k8sNamespace).Delete(context.Background(), created.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	})
	return created
}

// TestKubernetesHangup: when the SSH client goes away, the connection's
// command in the Pod gets SIGHUP (as with Docker), and its lease goes.
func TestKubernetesHangup(t *testing.T) {
	s, cs := k8sServer(t, serverOptions{Users: []string{"skf"}})
	u := s.user("skf")
	key := desired.SessionKey{User: u.Name}
	cfg, err := clientcmd.BuildConfigFromFlags("", k8sAdminKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	procs := func() string {
		out, _ := execOut(cs, cfg, k8sobs.ObjectName(key), "session", "ps", "-o", "args")
		return out
	}
	client := s.ssh(u, nil, "sleep 301")
	if err := client.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		client.Process.Kill()
		client.Wait()
	})
	harness.Eventually(t, time.Minute, "the command to run in the pod", func() bool { return strings.Contains(procs(), "sleep 301") })
	if err := client.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	client.Wait()
	harness.Eventually(t, 20*time.Second, "the command to get SIGHUP", func() bool {
		p := procs()
		return p != "" && !strings.Contains(p, "sleep 301")
	})
	harness.Eventually(t, 20*time.Second, "the connection's lease to go", func() bool {
		r := s.Env.Row(key)
		return r != nil && len(r.Leases) == 0
	})
}
