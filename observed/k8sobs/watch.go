package k8sobs

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/observed"
)

// DefaultResync is how often the informers replay their whole cache; the
// daemon's own resync lists as well, so this is a second safety net.
const DefaultResync = 10 * time.Minute

// Watcher is controller.Watcher on Kubernetes: shared informers on the
// namespace's podspawn Pods, NetworkPolicies and PersistentVolumeClaims, each change turned into
// the session key it concerns.
type Watcher struct {
	C        *Client
	Instance string
	Log      logr.Logger
	Resync   time.Duration
}

// NewWatcher watches c's namespace for the sessions of instance.
func NewWatcher(c *Client, instance string, log logr.Logger) *Watcher {
	return &Watcher{C: c, Instance: instance, Log: log, Resync: DefaultResync}
}

// Seen is a no-op: every object carries its key in its annotations, so
// nothing needs the list to be attributed (Docker's network events do).
func (w *Watcher) Seen([]observed.Object, string) {}

// Watch starts the informers; since is not needed, as an informer starts
// with a list whose objects all arrive as adds. The error channel gets an
// error when the informers cannot sync within a minute.
func (w *Watcher) Watch(ctx context.Context, _ time.Time) (<-chan observed.Change, <-chan error) {
	changes := make(chan observed.Change)
	errs := make(chan error, 1)
	send := func(kind, action string, obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		m, ok := obj.(metav1.Object)
		if !ok {
			return
		}
		if id := m.GetLabels()[LabelInstance]; id != "" && id != w.Instance {
			return
		}
		k, ok := keyOf(m.GetAnnotations())
		if !ok {
			return
		}
		select {
		case changes <- observed.Change{Key: k, Kind: kind, Action: action}:
		case <-ctx.Done():
		}
	}
	handler := func(kind string) cache.ResourceEventHandlerFuncs {
		return cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { send(kind, "add", obj) },
			UpdateFunc: func(_, obj any) { send(kind, "update", obj) },
			DeleteFunc: func(obj any) { send(kind, "delete", obj) },
		}
	}
	api, ns := w.C.API, w.C.Namespace
	pods := informer(w, &corev1.Pod{}, api.Pods(ns).List, api.Pods(ns).Watch)
	nps := informer(w, &networkingv1.NetworkPolicy{}, api.NetworkPolicies(ns).List, api.NetworkPolicies(ns).Watch)
	pvcs := informer(w, &corev1.PersistentVolumeClaim{}, api.PersistentVolumeClaims(ns).List, api.PersistentVolumeClaims(ns).Watch)
	for i, h := range []struct {
		inf  cache.SharedIndexInformer
		kind string
	}{{pods, "pod"}, {nps, "networkpolicy"}, {pvcs, "persistentvolumeclaim"}} {
		if _, err := h.inf.AddEventHandler(handler(h.kind)); err != nil {
			errs <- fmt.Errorf("adding the %s event handler (%d): %w", h.kind, i, err)
			return changes, errs
		}
	}
	var running sync.WaitGroup
	for _, inf := range []cache.SharedIndexInformer{pods, nps, pvcs} {
		running.Add(1)
		go func() {
			defer running.Done()
			inf.RunWithContext(ctx)
		}()
	}
	go func() {
		sctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if !cache.WaitForCacheSync(sctx.Done(), pods.HasSynced, nps.HasSynced, pvcs.HasSynced) && ctx.Err() == nil {
			errs <- fmt.Errorf("the pod, network policy and persistent volume claim informers of namespace %s did not sync within a minute", w.C.Namespace)
		}
		<-ctx.Done()
		running.Wait()
	}()
	return changes, errs
}

// informer is a shared informer on podspawn's objects of one kind in the
// namespace.
func informer[L runtime.Object](w *Watcher, obj runtime.Object,
	list func(context.Context, metav1.ListOptions) (L, error),
	watchFrom func(context.Context, metav1.ListOptions) (watch.Interface, error)) cache.SharedIndexInformer {
	selected := func(o metav1.ListOptions) metav1.ListOptions {
		o.LabelSelector = Selector
		return o
	}
	return cache.NewSharedIndexInformer(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return list(ctx, selected(o))
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return watchFrom(ctx, selected(o))
		},
	}, obj, w.Resync, cache.Indexers{})
}

// keyOf reads the session key from an object's annotations.
func keyOf(a map[string]string) (desired.SessionKey, bool) {
	k := desired.SessionKey{User: a[AnnotationUser], Project: a[AnnotationProject]}
	if desired.ValidateUserName(k.User) != nil || (k.Project != "" && desired.ValidateProjectName(k.Project) != nil) {
		return desired.Unattributed, false
	}
	return k, true
}
