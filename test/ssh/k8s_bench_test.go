package ssh

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/podspawn/podspawn/observed/k8sobs"
	"github.com/podspawn/podspawn/test/harness"
)

// BenchmarkKubernetesSSHConnect measures "ssh user@host true" with
// runtime: kubernetes, for a new session (a Pod is created) and a
// re-attach, next to the floors measured in the same run: ssh to a plain
// account, a bare Pod created until Running plus an exec of true, and a
// bare exec of true through the API server. hack/bench-k8s.sh runs it;
// PODSPAWN_BENCH_ROUNDS sets the number of rounds (default 10).
func BenchmarkKubernetesSSHConnect(b *testing.B) {
	runs := 10
	if v := os.Getenv("PODSPAWN_BENCH_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 2 {
			b.Fatalf("PODSPAWN_BENCH_ROUNDS=%q: want a number of rounds of at least 2", v)
		}
		runs = n
	}
	k8sCluster(b)
	o := serverOptions{Users: []string{"skz"}, PlainUser: true}
	o.Extra += "runtime: kubernetes\nkubernetes:\n  kubeconfig: " + k8sPodspawnKubeconfig + "\n  namespace: " + k8sNamespace + "\n"
	s := newServer(b, o)
	u := s.user("skz")
	// The bare Pods are made as podspawn's ServiceAccount, like the sessions.
	cfg, err := clientcmd.BuildConfigFromFlags("", k8sPodspawnKubeconfig)
	if err != nil {
		b.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		b.Fatal(err)
	}
	timeIt := func(what string, cmd *exec.Cmd) time.Duration { return timeCmd(b, what, cmd) }
	// Each round measures one of each, so that a load that changes during
	// the run (other processes on a shared host) weighs on the figures and
	// their floors alike instead of on whichever block ran then.
	var fresh, reattach, plain, barePod, bareExec, sessionExec []time.Duration
	for i := 0; i < runs; i++ {
		if s.session(u, "") != nil {
			s.Env.MustRun("stop", u.Name)
		}
		// The kubelet tears a deleted Pod down after the API has let it
		// go: the last round's Pods are gone before anything is timed, so
		// their teardown weighs on no measurement.
		waitNoPods(b, cs, s.Env.InstanceID())
		fresh = append(fresh, timeIt("new session", s.ssh(u, nil, "true")))
		reattach = append(reattach, timeIt("re-attach", s.ssh(u, nil, "true")))
		// The session Pod's security profile (seccomp RuntimeDefault above
		// all: runc loads the filter for each exec) costs every exec into
		// it, so a bare exec into that Pod is measured too.
		pods := sessionPods(b, cs, s.Env.InstanceID())
		if len(pods) != 1 {
			b.Fatalf("%d session pods, want 1", len(pods))
		}
		start := time.Now()
		if _, err := execOut(cs, cfg, pods[0].Name, pods[0].Spec.Containers[0].Name, "true"); err != nil {
			b.Fatal(err)
		}
		sessionExec = append(sessionExec, time.Since(start))
		plain = append(plain, timeIt("ssh without podspawn", s.ssh(s.Plain, nil, "true")))
		d, e := barePodTrue(cs, cfg, fmt.Sprintf("bench-bare-%d-%d", os.Getpid(), i))
		if e != nil {
			b.Fatal(e)
		}
		barePod, bareExec = append(barePod, d[0]), append(bareExec, d[1])
	}
	s.Env.MustRun("stop", u.Name)
	// What podspawn adds, round by round: the goals are at most 500 ms
	// over plain ssh plus a bare Pod for a new session, and at most 150 ms
	// over plain ssh plus a bare exec for a re-attach.
	over := func(xs, floor1, floor2 []time.Duration) []time.Duration {
		out := make([]time.Duration, len(xs))
		for i := range xs {
			out[i] = xs[i] - floor1[i] - floor2[i]
		}
		return out
	}
	newOver, reattachOver := over(fresh, plain, barePod), over(reattach, plain, bareExec)
	reattachOverSession := over(reattach, plain, sessionExec)
	report := func(label, unit string, ds []time.Duration) {
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		med := ds[len(ds)/2-1]/2 + ds[len(ds)/2]/2
		b.ReportMetric(ms(med), unit)
		b.Logf("%-44s median %7.1f ms  min %7.1f ms  max %7.1f ms  (n=%d)", label, ms(med), ms(ds[0]), ms(ds[len(ds)-1]), len(ds))
	}
	report("ssh true, new session (kubernetes)", "new-ms", fresh)
	report("ssh true, re-attach (kubernetes)", "reattach-ms", reattach)
	report("ssh true, plain account (sshd floor)", "plain-ssh-ms", plain)
	report("bare pod create..Running + exec true", "bare-pod-ms", barePod)
	report("bare exec true through the API server", "bare-exec-ms", bareExec)
	report("bare exec true into the session Pod", "session-exec-ms", sessionExec)
	report("new session over its floors (per round)", "new-over-ms", newOver)
	report("re-attach over its floors (per round)", "reattach-over-ms", reattachOver)
	report("re-attach over plain ssh + exec into its Pod", "reattach-over-session-exec-ms", reattachOverSession)
	fmt.Fprintln(os.Stderr)
}

// waitNoPods waits until the session's and the bare Pods of earlier
// rounds are gone: deleted, torn down by the kubelet and reported gone.
func waitNoPods(b *testing.B, cs kubernetes.Interface, instance string) {
	b.Helper()
	left := ""
	gone := waitUntil(time.Minute, func() bool {
		for _, sel := range []string{k8sobs.LabelInstance + "=" + instance, "podspawn-bench=bare"} {
			l, err := cs.CoreV1().Pods(k8sNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: sel})
			if err != nil || len(l.Items) > 0 {
				left = fmt.Sprint(err)
				if err == nil {
					left = l.Items[0].Name
				}
				return false
			}
		}
		return true
	})
	if !gone {
		b.Fatalf("pods of earlier rounds still there after a minute: %s", left)
	}
}

// barePodTrue creates a bare Pod as podspawn's ServiceAccount, waits
// until it runs, execs true in it, and deletes it: the durations of
// create..Running+exec and of a second exec alone.
func barePodTrue(cs kubernetes.Interface, cfg *rest.Config, name string) ([2]time.Duration, error) {
	ctx := context.Background()
	zero, no := int64(0), false
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"podspawn-bench": "bare"}},
		Spec: corev1.PodSpec{TerminationGracePeriodSeconds: &zero, AutomountServiceAccountToken: &no,
			Containers: []corev1.Container{{Name: "c", Image: harness.Image, Command: []string{"sleep", "infinity"}, ImagePullPolicy: corev1.PullIfNotPresent}}}}
	pods := cs.CoreV1().Pods(k8sNamespace)
	defer pods.Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	start := time.Now()
	if _, err := pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return [2]time.Duration{}, err
	}
	for {
		p, err := pods.Get(ctx, name, metav1.GetOptions{})
		if err != nil && !errors.IsNotFound(err) {
			return [2]time.Duration{}, err
		}
		if err == nil && p.Status.Phase == corev1.PodRunning {
			break
		}
		if time.Since(start) > time.Minute {
			return [2]time.Duration{}, fmt.Errorf("bare pod %s not running after a minute", name)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := execTrue(cs, cfg, name); err != nil {
		return [2]time.Duration{}, err
	}
	first := time.Since(start)
	start = time.Now()
	if err := execTrue(cs, cfg, name); err != nil {
		return [2]time.Duration{}, err
	}
	return [2]time.Duration{first, time.Since(start)}, nil
}

func execTrue(cs kubernetes.Interface, cfg *rest.Config, pod string) error {
	_, err := execOut(cs, cfg, pod, "c", "true")
	return err
}

// execOut runs argv in a Pod's container through the API server and
// returns its stdout; a non-zero exit is an error.
func execOut(cs kubernetes.Interface, cfg *rest.Config, pod, container string, argv ...string) (string, error) {
	req := cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(k8sNamespace).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: container, Command: argv, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	ws, err := remotecommand.NewWebSocketExecutor(cfg, "GET", req.URL().String())
	if err != nil {
		return "", err
	}
	spdy, err := remotecommand.NewSPDYExecutor(cfg, "POST", req.URL())
	if err != nil {
		return "", err
	}
	ex, err := remotecommand.NewFallbackExecutor(ws, spdy, httpstream.IsUpgradeFailure)
	if err != nil {
		return "", err
	}
	var out strings.Builder
	err = ex.StreamWithContext(context.Background(), remotecommand.StreamOptions{Stdout: &out, Stderr: discard{}})
	return out.String(), err
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
