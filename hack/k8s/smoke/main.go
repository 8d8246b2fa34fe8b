// Command smoke is what podspawn's Kubernetes runtime does to a session Pod,
// timed against the test cluster of hack/k8s-up.sh: create a Pod shaped like a
// session (no service account token, capabilities dropped, no privilege
// escalation, seccomp RuntimeDefault, grace period 0), wait until it is
// Running, exec in it through the API server (client-go's WebSocket executor
// with SPDY fallback, as kubectl exec does) with and without a TTY, check that
// an exit code comes back exactly, delete the Pod and wait until it is gone.
//
// hack/k8s-smoke.sh builds and runs it; it reads KUBECONFIG.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/util/exec"
)

func main() {
	image := flag.String("image", "k8s.test/busybox:1", "image of the Pod's container")
	pull := flag.String("pull", string(corev1.PullNever), "imagePullPolicy: Never, IfNotPresent or Always")
	ns := flag.String("n", "podspawn", "namespace")
	name := flag.String("name", "", "Pod name (default smoke-<random>)")
	execs := flag.Int("execs", 5, "exec round trips without a TTY to time")
	timeout := flag.Duration("timeout", 2*time.Minute, "how long to wait for Running and for the delete")
	flag.Parse()

	cfg, err := clientcmd.BuildConfigFromFlags("", os.Getenv("KUBECONFIG"))
	check("kubeconfig", err)
	cs, err := kubernetes.NewForConfig(cfg)
	check("client", err)
	ctx := context.Background()
	if *name == "" {
		*name = fmt.Sprintf("smoke-%d", time.Now().UnixNano()%1000000)
	}

	zero := int64(0)
	pod := smokePod(*name, *image, *pull)
	t0 := time.Now()
	_, err = cs.CoreV1().Pods(*ns).Create(ctx, pod, metav1.CreateOptions{})
	check("create pod", err)
	// From here on, a failure still deletes the Pod.
	cleanup := func() {
		_ = cs.CoreV1().Pods(*ns).Delete(context.Background(), *name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	}
	fail := func(format string, a ...any) {
		fmt.Printf("FAIL: "+format+"\n", a...)
		cleanup()
		fmt.Println("0 passed, 1 failed")
		os.Exit(1)
	}
	for {
		p, err := cs.CoreV1().Pods(*ns).Get(ctx, *name, metav1.GetOptions{})
		if err != nil {
			fail("get pod: %v", err)
		}
		if p.Status.Phase == corev1.PodRunning {
			break
		}
		if p.Status.Phase == corev1.PodFailed || time.Since(t0) > *timeout {
			fail("pod %s not Running after %v: phase %s, %s", *name, time.Since(t0).Round(time.Millisecond), p.Status.Phase, waiting(p))
		}
		time.Sleep(20 * time.Millisecond)
	}
	fmt.Printf("pod %s/%s Running after %v (image %s, pull %s)\n", *ns, *name, time.Since(t0).Round(time.Millisecond), *image, *pull)

	run := func(cmd []string, tty bool, stdin string) (string, int, time.Duration, error) {
		s := time.Now()
		out, code, err := execIn(ctx, cfg, cs, *ns, *name, cmd, tty, stdin)
		return out, code, time.Since(s), err
	}

	execChecks(run, *name, *execs, fail)

	s := time.Now()
	if err := cs.CoreV1().Pods(*ns).Delete(ctx, *name, metav1.DeleteOptions{}); err != nil {
		fail("delete pod: %v", err)
	}
	for {
		_, err := cs.CoreV1().Pods(*ns).Get(ctx, *name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			break
		}
		if time.Since(s) > *timeout {
			fail("pod not gone %v after delete", *timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	fmt.Printf("pod deleted and gone after %v\n", time.Since(s).Round(time.Millisecond))
	fmt.Println("1 passed, 0 failed")
}

// smokePod is a Pod with the security settings podspawn gives a session.
func smokePod(name, image, pull string) *corev1.Pod {
	zero := int64(0)
	no := false
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:   name,
			Labels: map[string]string{"app.kubernetes.io/managed-by": "podspawn-k8s-smoke"},
		},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken:  &no,
			TerminationGracePeriodSeconds: &zero,
			RestartPolicy:                 corev1.RestartPolicyNever,
			Containers: []corev1.Container{{
				Name: "c", Image: image, ImagePullPolicy: corev1.PullPolicy(pull),
				Command: []string{"sleep", "3600"},
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: &no,
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
					SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
				},
			}},
		},
	}
}

// execChecks runs the exec round trips through the API server: a TTY
// session, timed execs without one, an exit code, and the Pod's security.
func execChecks(run func([]string, bool, string) (string, int, time.Duration, error), name string, execs int, fail func(string, ...any)) {
	// A TTY session as a person has it: stdin stays open until the shell exits.
	out, code, d, err := run([]string{"sh"}, true, "echo hello-$((6*7)); tty; exit\n")
	if err != nil || code != 0 || !strings.Contains(out, "hello-42") || !strings.Contains(out, "/dev/pts/") {
		fail("tty exec: code %d, err %v, output %q", code, err, out)
	}
	fmt.Printf("exec with tty: %v\n", d.Round(time.Millisecond))

	var tot, worst time.Duration
	for i := 0; i < execs; i++ {
		out, code, d, err = run([]string{"cat", "/etc/hostname"}, false, "")
		if err != nil || code != 0 || strings.TrimSpace(out) != name {
			fail("exec cat /etc/hostname: code %d, err %v, output %q", code, err, out)
		}
		tot += d
		worst = max(worst, d)
	}
	if execs > 0 {
		fmt.Printf("exec without tty: avg %v, max %v over %d\n", (tot / time.Duration(execs)).Round(time.Millisecond), worst.Round(time.Millisecond), execs)
	}

	_, code, d, err = run([]string{"sh", "-c", "exit 42"}, false, "")
	if err != nil || code != 42 {
		fail("exec exit 42: code %d, err %v", code, err)
	}
	fmt.Printf("exec exit code 42 passed back: %v\n", d.Round(time.Millisecond))

	out, code, _, err = run([]string{"sh", "-c", "ls /var/run/secrets/kubernetes.io/serviceaccount 2>&1; grep CapEff /proc/self/status"}, false, "")
	if err != nil || !strings.Contains(out, "No such file") || !strings.Contains(out, "CapEff:\t0000000000000000") {
		fail("pod has a service account token or capabilities: code %d, err %v, output %q", code, err, out)
	}
	fmt.Println("no service account token, no capabilities")

}

// execIn runs cmd in the Pod's container "c" through the API server and
// returns its output and exit code.
func execIn(ctx context.Context, cfg *rest.Config, cs kubernetes.Interface, ns, name string, cmd []string, tty bool, stdin string) (string, int, error) {
	req := cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(name).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: "c", Command: cmd, Stdin: stdin != "", Stdout: true, Stderr: !tty, TTY: tty}, scheme.ParameterCodec)
	ws, err := remotecommand.NewWebSocketExecutor(cfg, "GET", req.URL().String())
	if err != nil {
		return "", -1, err
	}
	spdy, err := remotecommand.NewSPDYExecutor(cfg, "POST", req.URL())
	if err != nil {
		return "", -1, err
	}
	ex, err := remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
	if err != nil {
		return "", -1, err
	}
	// Separate buffers: the executor writes stdout and stderr from two
	// goroutines, and a bytes.Buffer is not safe for that.
	var out, errb bytes.Buffer
	opts := remotecommand.StreamOptions{Stdout: &out, Tty: tty}
	if !tty {
		opts.Stderr = &errb
	}
	if stdin != "" {
		// A pipe, not a reader that hits EOF: closing stdin would end the
		// session before the shell has answered.
		pr, pw := io.Pipe()
		go func() { _, _ = pw.Write([]byte(stdin)) }()
		defer pw.Close()
		opts.Stdin = pr
	}
	err = ex.StreamWithContext(ctx, opts)
	output := out.String() + errb.String()
	var exitErr exec.CodeExitError
	if errors.As(err, &exitErr) {
		return output, exitErr.Code, nil
	}
	if err != nil {
		return output, -1, err
	}
	return output, 0, nil
}

// waiting says why a Pod's containers are not running yet.
func waiting(p *corev1.Pod) string {
	var why []string
	for _, c := range p.Status.ContainerStatuses {
		if w := c.State.Waiting; w != nil {
			why = append(why, fmt.Sprintf("%s waiting: %s %s", c.Name, w.Reason, w.Message))
		}
	}
	for _, c := range p.Status.Conditions {
		if c.Status != corev1.ConditionTrue && c.Message != "" {
			why = append(why, fmt.Sprintf("%s: %s", c.Type, c.Message))
		}
	}
	return strings.Join(why, "; ")
}

func check(what string, err error) {
	if err != nil {
		fmt.Printf("FAIL: %s: %v\n0 passed, 1 failed\n", what, err)
		os.Exit(1)
	}
}
