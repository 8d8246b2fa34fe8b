// Package k8sact executes plan actions on Kubernetes: a session is one
// Pod (the session container plus its companion services as further
// containers), its network a NetworkPolicy that admits ingress only from
// the session's own Pod. Every object carries podspawn's labels, and an
// object without them, or of another instance, is never touched.
package k8sact

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/observed/k8sobs"
	"github.com/podspawn/podspawn/reconcile"
)

// Settings are the kubernetes section's scheduling settings.
type Settings struct {
	NodeSelector map[string]string
	RuntimeClass string
	// Registry is kubernetes.image_registry: project images are pulled
	// from there (RemoteImage).
	Registry string
	// StorageClass (kubernetes.storage_class; "" is the cluster's
	// default) and VolumeSize (kubernetes.volume_size) are those of the
	// claims of named volumes.
	StorageClass string
	VolumeSize   resource.Quantity
	// ImagePullSecrets name the namespace's Secrets the kubelet pulls
	// session images with (kubernetes.image_pull_secrets).
	ImagePullSecrets []string
	// HomeSize is the size of a new persistent home claim (state.home_size,
	// else kubernetes.volume_size).
	HomeSize resource.Quantity
}

// Executor executes actions against the API server and the store.
type Executor struct {
	C        *k8sobs.Client
	Store    actions.Store
	Now      func() time.Time
	Log      logr.Logger
	Settings Settings
	// StartTimeout bounds the wait for a new Pod to run.
	StartTimeout time.Duration
	// Sessions reads a generation's services when its Pod is created;
	// without it, Pods have only the session container.
	Sessions SessionLoader
}

// Execute runs one action idempotently.
func (x *Executor) Execute(ctx context.Context, a reconcile.Action) (actions.Outcome, error) {
	if o, ok, err := actions.ExecuteStore(ctx, x.Store, a, x.Now()); ok {
		return o, err
	}
	var (
		o   actions.Outcome
		err error
	)
	switch a.Kind {
	case reconcile.KindCreateNetwork:
		o, err = x.createPolicy(ctx, a)
	case reconcile.KindRemoveNetwork:
		o, err = x.remove(ctx, a, "networkpolicy")
	case reconcile.KindCreateContainer:
		o, err = x.createContainer(ctx, a)
	case reconcile.KindRemoveContainer:
		o, err = x.remove(ctx, a, "pod")
	case reconcile.KindCreateVolume:
		o, err = x.createClaim(ctx, a)
	case reconcile.KindRemoveVolume:
		o, err = x.remove(ctx, a, "persistentvolumeclaim")
	case reconcile.KindKillLeaseProcesses:
		o, err = x.killLeaseProcesses(ctx, a)
	default:
		return "", fmt.Errorf("unknown action kind %q", a.Kind)
	}
	if err != nil {
		return o, fmt.Errorf("%s %s: %w", a.Kind, a.Target, err)
	}
	return o, nil
}

// owned reports whether an object's labels and annotations say it
// belongs to the action's session generation.
func owned(m metav1.Object, a reconcile.Action) bool {
	l, an := m.GetLabels(), m.GetAnnotations()
	return l[k8sobs.LabelManagedBy] == observed.ManagedByValue && l[k8sobs.LabelSession] == a.SessionID &&
		l[k8sobs.LabelInstance] == a.Labels[observed.LabelInstance] &&
		an[k8sobs.AnnotationUser] == a.Key.User && an[k8sobs.AnnotationProject] == a.Key.Project
}

func notOwned(kind string, m metav1.Object, a reconcile.Action) error {
	l, an := m.GetLabels(), m.GetAnnotations()
	who := "is not managed by podspawn"
	switch {
	case l[k8sobs.LabelManagedBy] != observed.ManagedByValue:
	case l[k8sobs.LabelInstance] != a.Labels[observed.LabelInstance]:
		who = fmt.Sprintf("belongs to another podspawn state database (instance %q)", l[k8sobs.LabelInstance])
	default:
		who = fmt.Sprintf("belongs to another session (user %q, project %q, session %q)", an[k8sobs.AnnotationUser], an[k8sobs.AnnotationProject], l[k8sobs.LabelSession])
	}
	return fmt.Errorf("%s %s already exists and %s; remove it with kubectl delete: %w", kind, m.GetName(), who, actions.ErrTerminal)
}

func (x *Executor) meta(a reconcile.Action) (metav1.ObjectMeta, error) {
	an, err := k8sobs.Annotations(a.Key, a.Target, a.Labels)
	if err != nil {
		return metav1.ObjectMeta{}, err
	}
	return metav1.ObjectMeta{Name: k8sobs.ObjectName(a.Key), Namespace: x.C.Namespace,
		Labels: k8sobs.Labels(a.Key, a.Target, a.Labels), Annotations: an}, nil
}

// createClaim is create-volume: a PersistentVolumeClaim labelled like the
// session's other objects, removed with the session as Docker's named
// volume is; an existing claim of the generation is adopted.
func (x *Executor) createClaim(ctx context.Context, a reconcile.Action) (actions.Outcome, error) {
	m, err := x.meta(a)
	if err != nil {
		return "", err
	}
	m.Name = k8sobs.ClaimName(a.Key, a.Target)
	size := x.Settings.VolumeSize
	if size.IsZero() {
		size = resource.MustParse("1Gi")
	}
	pvc := &corev1.PersistentVolumeClaim{ObjectMeta: m, Spec: corev1.PersistentVolumeClaimSpec{
		AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
		Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: size}},
	}}
	if x.Settings.StorageClass != "" {
		pvc.Spec.StorageClassName = &x.Settings.StorageClass
	}
	api := x.C.API.PersistentVolumeClaims(x.C.Namespace)
	_, err = api.Create(ctx, pvc, metav1.CreateOptions{})
	return adoptIfTaken(err, "persistentvolumeclaim", a, func() (metav1.Object, error) {
		return object(api.Get(ctx, m.Name, metav1.GetOptions{}))
	})
}

// adoptIfTaken ends a create whose error is createErr: a name already
// taken by this generation's own object is adopted (unchanged), one being
// deleted is retried later, anything else is refused.
func adoptIfTaken(createErr error, kind string, a reconcile.Action, get func() (metav1.Object, error)) (actions.Outcome, error) {
	if !apierrors.IsAlreadyExists(createErr) {
		return actions.OutcomeOf(true, createErr)
	}
	existing, err := get()
	if err != nil {
		return "", fmt.Errorf("%w (and reading the existing one failed: %v)", createErr, err)
	}
	if !owned(existing, a) {
		return "", notOwned(kind, existing, a)
	}
	if existing.GetDeletionTimestamp() != nil {
		return "", fmt.Errorf("%s %s is being deleted; retrying once it is gone", kind, existing.GetName())
	}
	return actions.Unchanged, nil
}

// homes are the users' home claims of a's instance.
func (x *Executor) homes(a reconcile.Action) Homes {
	return Homes{C: x.C, Instance: a.Labels[observed.LabelInstance]}
}

// createPolicy is create-network: ingress to the session's Pod only from
// itself (its containers share the Pod's network anyway).
func (x *Executor) createPolicy(ctx context.Context, a reconcile.Action) (actions.Outcome, error) {
	m, err := x.meta(a)
	if err != nil {
		return "", err
	}
	self := metav1.LabelSelector{MatchLabels: map[string]string{k8sobs.LabelKey: k8sobs.KeyHash(a.Key), k8sobs.LabelSession: a.SessionID}}
	np := &networkingv1.NetworkPolicy{ObjectMeta: m, Spec: networkingv1.NetworkPolicySpec{
		PodSelector: self, PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: &self}}}},
	}}
	api := x.C.API.NetworkPolicies(x.C.Namespace)
	_, err = api.Create(ctx, np, metav1.CreateOptions{})
	return adoptIfTaken(err, "networkpolicy", a, func() (metav1.Object, error) {
		return object(api.Get(ctx, m.Name, metav1.GetOptions{}))
	})
}

// remove deletes the Pod, NetworkPolicy or PersistentVolumeClaim the plan saw, pinned by its UID
// so a same-named successor is never deleted; already gone is done. A
// service container's removal deletes its whole Pod: a Pod's containers go
// together, and the plan removes a service alone only with its generation
// (teardown, a stale generation, an orphan).
func (x *Executor) remove(ctx context.Context, a reconcile.Action, kind string) (actions.Outcome, error) {
	name, _, uid, ok := k8sobs.ParseObjectID(a.TargetID)
	if !ok {
		return "", fmt.Errorf("%q does not name a %s podspawn observed: %w", a.TargetID, kind, actions.ErrTerminal)
	}
	u := types.UID(uid)
	// A graceful delete (the Pod's own short grace period): the Pod object
	// stays until the kubelet has stopped its containers, so nothing still
	// runs, or holds a claim, once the removal is done.
	opts := metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &u}}
	var err error
	switch kind {
	case "pod":
		err = x.C.API.Pods(x.C.Namespace).Delete(ctx, name, opts)
		if err == nil {
			// Done only once it is gone, as Docker's removal is: the claims
			// of the session go next, and its row last.
			return awaitGone(ctx, podGetter{x.C}, name, u)
		}
	case "persistentvolumeclaim":
		err = x.C.API.PersistentVolumeClaims(x.C.Namespace).Delete(ctx, name, opts)
		if err == nil {
			return awaitGone(ctx, claimGetter{x.C}, name, u)
		}
	default:
		err = x.C.API.NetworkPolicies(x.C.Namespace).Delete(ctx, name, opts)
	}
	// NotFound, or a Conflict on the UID: the object seen is gone.
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return actions.Unchanged, nil
	}
	return actions.OutcomeOf(true, err)
}

// goneTimeout bounds the wait for a deleted Pod or claim to go: a Pod
// waits for the kubelet to stop its containers (its grace period), a
// claim for its protection finalizer, held until no Pod uses it.
const goneTimeout = 60 * time.Second

// getWatcher reads and watches one kind of object by name.
type getWatcher interface {
	kind() string
	get(ctx context.Context, name string) (metav1.Object, error)
	watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
}

type podGetter struct{ c *k8sobs.Client }

func (g podGetter) kind() string { return "pod" }
func (g podGetter) get(ctx context.Context, name string) (metav1.Object, error) {
	return object(g.c.API.Pods(g.c.Namespace).Get(ctx, name, metav1.GetOptions{}))
}
func (g podGetter) watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	return g.c.API.Pods(g.c.Namespace).Watch(ctx, opts)
}

type claimGetter struct{ c *k8sobs.Client }

func (g claimGetter) kind() string { return "persistentvolumeclaim" }
func (g claimGetter) get(ctx context.Context, name string) (metav1.Object, error) {
	return object(g.c.API.PersistentVolumeClaims(g.c.Namespace).Get(ctx, name, metav1.GetOptions{}))
}

// object keeps a failed read's typed nil out of the interface.
func object[T metav1.Object](o T, err error) (metav1.Object, error) {
	if err != nil {
		return nil, err
	}
	return o, nil
}
func (g claimGetter) watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	return g.c.API.PersistentVolumeClaims(g.c.Namespace).Watch(ctx, opts)
}

// awaitGone waits until the object uid named name is deleted. A watch the
// server ends (a timeout, a compacted resource version) is started again
// from a fresh read until goneTimeout.
func awaitGone(ctx context.Context, g getWatcher, name string, uid types.UID) (actions.Outcome, error) {
	ctx, cancel := context.WithTimeout(ctx, goneTimeout)
	defer cancel()
	for {
		obj, err := g.get(ctx, name)
		switch {
		case apierrors.IsNotFound(err) || (err == nil && obj.GetUID() != uid):
			return actions.Changed, nil
		case ctx.Err() != nil:
			return "", fmt.Errorf("%s %s is still being deleted after %s: %w", g.kind(), name, goneTimeout, stillThere(obj))
		case err != nil:
			return "", err
		}
		if gone, err := watchUntilDeleted(ctx, g, name, uid, obj.GetResourceVersion()); gone || err != nil {
			return actions.Changed, err
		}
	}
}

// watchUntilDeleted reports whether the watch saw uid deleted before it ended.
func watchUntilDeleted(ctx context.Context, g getWatcher, name string, uid types.UID, rv string) (bool, error) {
	w, err := g.watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String(), ResourceVersion: rv})
	if err != nil {
		if ctx.Err() != nil {
			return false, nil // the next read reports the timeout
		}
		return false, fmt.Errorf("watching the deletion of %s %s: %w", g.kind(), name, err)
	}
	defer w.Stop()
	for ev := range w.ResultChan() {
		if o, ok := ev.Object.(metav1.Object); ok && o.GetUID() == uid && ev.Type == watch.Deleted {
			return true, nil
		}
	}
	return false, nil
}

// stillThere says what holds a deleted object back.
func stillThere(obj metav1.Object) error {
	if obj == nil {
		return errors.New("it could not be read again")
	}
	return fmt.Errorf("finalizers %v (for a claim: a Pod may still use it)", obj.GetFinalizers())
}

func (x *Executor) killLeaseProcesses(ctx context.Context, a reconcile.Action) (actions.Outcome, error) {
	if a.LeaseID <= 0 || a.Key.User == "" {
		return "", fmt.Errorf("%s without a lease id or user: %w", a.Kind, actions.ErrTerminal)
	}
	var out strings.Builder
	code, err := Execer{C: x.C, Log: x.Log}.Run(ctx, actions.ExecSpec{Container: a.TargetID, User: a.Key.User, Kind: "lease kill",
		Argv: []string{"sh", "-c", actions.LeaseKillScript, "podspawn-kill", desired.LeaseMarker(a.LeaseID)}}, &out)
	switch {
	case apierrors.IsNotFound(err):
		return actions.Unchanged, nil
	case err != nil:
		return "", err
	case code != 0:
		return "", fmt.Errorf("killing the processes of connection %d: exit %d: %s", a.LeaseID, code, strings.TrimSpace(out.String()))
	}
	return actions.OutcomeOf(strings.Contains(out.String(), "killed "), nil)
}

// containerMetas is the Pod's annotation of the plan's containers.
func containerMetas(session reconcile.Action, services []reconcile.Action) (string, error) {
	metas := []k8sobs.ContainerMeta{{Container: "session", Name: session.Target, Labels: session.Labels}}
	for i, s := range services {
		metas = append(metas, k8sobs.ContainerMeta{Container: serviceContainer(i), Name: s.Target, Labels: s.Labels})
	}
	js, err := json.Marshal(metas)
	return string(js), err
}

func serviceContainer(i int) string { return fmt.Sprintf("service-%d", i) }
