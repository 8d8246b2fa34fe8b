// Command k8s-scale measures what one podspawn host pays to observe many
// sessions on Kubernetes, with podspawn's own code:
//
//	k8s-scale [flags] create  makes -pods session Pods in all (Pods of earlier
//	                          runs with the same -instance count), bound to -node
//	k8s-scale [flags] list    times k8sobs.Lister's pass list and one key's list
//	k8s-scale [flags] watch   starts k8sobs.Watcher and reports the time until
//	                          every Pod was delivered and the Go heap it holds
//
// The Pods are what actions/k8sact creates for a session of the default
// config (its labels, annotations and spec), one per user scale00000,
// scale00001, ... Each mode runs in a process of its own, so a measurement
// starts from a clean heap. hack/bench-k8s-scale.sh starts the API server
// it runs against.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podspawn/podspawn/observed/k8sobs/kubeapi"

	"github.com/podspawn/podspawn/actions/k8sact"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/config"
	"github.com/podspawn/podspawn/desired/generation"
	"github.com/podspawn/podspawn/desired/spec"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/observed/k8sobs"
	"github.com/podspawn/podspawn/reconcile"
)

type options struct {
	kubeconfig, namespace, instance, node string
	pods, passes, workers                 int
	apiserverPID, etcdPID                 int
}

func main() {
	var o options
	flag.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig of the API server (required)")
	flag.StringVar(&o.namespace, "n", "podspawn", "namespace")
	flag.StringVar(&o.instance, "instance", "", "podspawn instance id the Pods carry (required)")
	flag.StringVar(&o.node, "node", "", "create: node name the Pods are bound to (one without a kubelet keeps them Pending)")
	flag.IntVar(&o.pods, "pods", 0, "how many session Pods of -instance there are (create: are wanted)")
	flag.IntVar(&o.passes, "passes", 7, "list: passes to time")
	flag.IntVar(&o.workers, "workers", 32, "create: Pods created side by side")
	flag.IntVar(&o.apiserverPID, "apiserver-pid", 0, "list, watch: pid of kube-apiserver, whose CPU time is reported")
	flag.IntVar(&o.etcdPID, "etcd-pid", 0, "list, watch: pid of etcd, whose CPU time is reported")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "k8s-scale:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options, args []string) error {
	switch {
	case len(args) != 1:
		return errors.New("want exactly one of create, list or watch after the flags")
	case o.kubeconfig == "" || o.instance == "":
		return errors.New("-kubeconfig and -instance are required")
	case o.pods < 1:
		return fmt.Errorf("-pods must be at least 1, not %d", o.pods)
	}
	switch args[0] {
	case "create":
		if o.node == "" || o.workers < 1 {
			return errors.New("create needs -node and -workers of at least 1")
		}
		return create(ctx, o)
	case "list":
		if o.passes < 1 {
			return fmt.Errorf("-passes must be at least 1, not %d", o.passes)
		}
		return measureList(ctx, o)
	case "watch":
		return measureWatch(ctx, o)
	}
	return fmt.Errorf("unknown mode %q: want create, list or watch", args[0])
}

// create makes the missing Pods, o.workers at a time. The client's rate
// limit is raised for this setup only; the measurements use podspawn's.
func create(ctx context.Context, o options) error {
	c, err := k8sobs.NewClient(o.kubeconfig, o.namespace, nil)
	if err != nil {
		return err
	}
	c.Config.QPS, c.Config.Burst = 1000, 2000
	if c.API, err = kubeapi.New(c.Config); err != nil {
		return err
	}
	pods := c.API.Pods(c.Namespace)
	have, err := pods.List(ctx, metav1.ListOptions{LabelSelector: k8sobs.LabelInstance + "=" + o.instance})
	if err != nil {
		return fmt.Errorf("counting the pods of instance %s: %w", o.instance, err)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	x := &k8sact.Executor{C: c}
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range o.workers {
		wg.Go(func() {
			for i := range jobs {
				if err := createOne(ctx, x, o, i); err != nil {
					cancel(err)
				}
			}
		})
	}
	t0 := time.Now()
	for i := len(have.Items); i < o.pods && ctx.Err() == nil; i++ {
		select {
		case jobs <- i:
		case <-ctx.Done():
		}
	}
	close(jobs)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return err
	}
	fmt.Printf("created %d session pods (%d in all) in %.1f s\n", o.pods-len(have.Items), o.pods, time.Since(t0).Seconds())
	return nil
}

// createOne creates the session Pod of user scale<i>, as a pass's
// create-container of a new session would, bound to o.node.
func createOne(ctx context.Context, x *k8sact.Executor, o options, i int) error {
	key := desired.SessionKey{User: fmt.Sprintf("scale%05d", i)}
	s, err := generation.New(config.Defaults(), key, time.Now())
	if err != nil {
		return err
	}
	a := reconcile.Action{Kind: reconcile.KindCreateContainer, Key: key, Target: s.Spec.ContainerName, SessionID: s.ID,
		Labels: spec.Labels(s, o.instance, observed.RoleSession, ""), Container: spec.Session(s)}
	pod, err := x.SessionPod(a, nil)
	if err != nil {
		return err
	}
	pod.Spec.NodeName = o.node
	_, err = x.C.API.Pods(x.C.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating pod %s: %w", pod.Name, err)
	}
	return nil
}
