package k8sobs

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/observed/k8sobs/kubeapi"
)

// Client is the API connection: podspawn's API client and the REST config
// exec needs.
type Client struct {
	API       kubeapi.API
	Config    *rest.Config
	Namespace string
}

// NewClient connects with kubeconfig, or the in-cluster configuration
// when it is empty. A non-nil observe times every request.
func NewClient(kubeconfig, namespace string, observe RequestObserver) (*Client, error) {
	var (
		cfg *rest.Config
		err error
	)
	if kubeconfig == "" {
		cfg, err = rest.InClusterConfig()
	} else {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client configuration (kubernetes.kubeconfig %q): %w", kubeconfig, err)
	}
	// client-go's default of 5 requests a second would throttle a pass
	// that removes many sessions.
	cfg.QPS, cfg.Burst = 50, 100
	if observe != nil {
		observeRequests(cfg, observe)
	}
	api, err := kubeapi.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return &Client{API: api, Config: cfg, Namespace: namespace}, nil
}

// ObjectID is how a container or network object's ID names the
// Kubernetes object: Pod (or NetworkPolicy) name, container name (empty
// for a NetworkPolicy) and UID, which pins the exact object a plan saw.
func ObjectID(name, container, uid string) string { return name + "/" + container + "/" + uid }

// ParseObjectID splits an ObjectID; ok is false for anything else.
func ParseObjectID(id string) (name, container, uid string, ok bool) {
	parts := strings.Split(id, "/")
	if len(parts) != 3 || parts[0] == "" || parts[2] == "" {
		return "", "", "", false
	}
	return parts[0], parts[1], parts[2], true
}

// PodObjects are the container objects of one session Pod, as Docker
// would show them: one per container, named and labelled as the plan
// created them.
func PodObjects(p *corev1.Pod) []observed.Object {
	var metas []ContainerMeta
	if js := p.Annotations[AnnotationContainers]; js != "" {
		if json.Unmarshal([]byte(js), &metas) != nil {
			metas = nil
		}
	}
	base := podspawnLabels(p.Labels, p.Annotations)
	statuses := map[string]corev1.ContainerStatus{}
	for _, s := range p.Status.ContainerStatuses {
		statuses[s.Name] = s
	}
	var out []observed.Object
	for _, m := range metas {
		l := map[string]string{}
		for k, v := range m.Labels {
			l[k] = v
		}
		for _, k := range []string{observed.LabelManagedBy, observed.LabelKeep, observed.LabelInstance} {
			if v, ok := base[k]; ok {
				l[k] = v
			} else {
				delete(l, k)
			}
		}
		o := observed.Object{Kind: observed.KindContainer, ID: ObjectID(p.Name, m.Container, string(p.UID)), Name: m.Name,
			Created: created(p.CreationTimestamp), Labels: l}
		containerState(&o, p, statuses[m.Container])
		out = append(out, o)
	}
	return out
}

// containerState fills State, Running, ExitCode and the run times the way
// Docker reports them: running, exited (with the last exit), created
// (not started yet), or removing (the Pod is being deleted).
func containerState(o *observed.Object, p *corev1.Pod, s corev1.ContainerStatus) {
	o.State = "created"
	if term := s.LastTerminationState.Terminated; term != nil {
		o.State, o.ExitCode = "exited", int(term.ExitCode)
		o.StartedAt, o.FinishedAt = term.StartedAt.UTC(), term.FinishedAt.UTC()
	}
	switch {
	case p.DeletionTimestamp != nil:
		o.State = observed.StateRemoving
	case s.State.Running != nil:
		o.State, o.Running = "running", true
		o.StartedAt = s.State.Running.StartedAt.UTC()
	case s.State.Terminated != nil:
		t := s.State.Terminated
		o.State, o.ExitCode = "exited", int(t.ExitCode)
		o.StartedAt, o.FinishedAt = t.StartedAt.UTC(), t.FinishedAt.UTC()
	}
	o.RuntimeRestarts = int(s.RestartCount)
	if w := s.State.Waiting; w != nil {
		o.RuntimeReason = w.Reason
	}
	// The kubelet starts a stopped container of a live Pod again itself
	// (restartPolicy Always), backing off: that is not a stop for
	// podspawn to restart, nor a crash loop for it to end.
	if o.State == "exited" && p.Status.Phase != corev1.PodFailed && p.Status.Phase != corev1.PodSucceeded &&
		(p.Spec.RestartPolicy == "" || p.Spec.RestartPolicy == corev1.RestartPolicyAlways) {
		o.State = observed.StateRestarting
	}
}

// ClaimObject is the volume object of a session's PersistentVolumeClaim
// (a named service volume); a claim being deleted (it waits for its Pod
// to go) is removing.
func ClaimObject(c *corev1.PersistentVolumeClaim) observed.Object {
	o := observed.Object{Kind: observed.KindVolume, ID: ObjectID(c.Name, "", string(c.UID)), Name: c.Annotations[AnnotationName],
		Created: created(c.CreationTimestamp), Labels: podspawnLabels(c.Labels, c.Annotations)}
	if c.DeletionTimestamp != nil {
		o.State = observed.StateRemoving
	}
	return o
}

// PolicyObject is the network object of a session's NetworkPolicy.
func PolicyObject(np *networkingv1.NetworkPolicy) observed.Object {
	return observed.Object{Kind: observed.KindNetwork, ID: ObjectID(np.Name, "", string(np.UID)), Name: np.Annotations[AnnotationName],
		Created: created(np.CreationTimestamp), State: "", Labels: podspawnLabels(np.Labels, np.Annotations)}
}

// created is the latest instant an object may have been created: the API
// server keeps whole seconds (truncated), and an object must never look
// older than it is (cleanup.orphan_min_age keeps podspawn off objects
// still being set up).
func created(t metav1.Time) time.Time {
	return t.UTC().Truncate(time.Second).Add(time.Second)
}

// Lister is controller.Lister and controller.ContainerInspector on one
// namespace.
type Lister struct{ C *Client }

func (l Lister) list(ctx context.Context, selector string) ([]observed.Object, error) {
	opts := metav1.ListOptions{LabelSelector: selector}
	// The three lists go side by side: a connection waits for them on
	// attach and on detach.
	var (
		nps        *networkingv1.NetworkPolicyList
		pvcs       *corev1.PersistentVolumeClaimList
		nerr, verr error
		wg         sync.WaitGroup
	)
	wg.Add(2)
	go func() {
		defer wg.Done()
		nps, nerr = l.C.API.NetworkPolicies(l.C.Namespace).List(ctx, opts)
	}()
	go func() {
		defer wg.Done()
		pvcs, verr = l.C.API.PersistentVolumeClaims(l.C.Namespace).List(ctx, opts)
	}()
	pods, err := l.C.API.Pods(l.C.Namespace).List(ctx, opts)
	wg.Wait()
	if err != nil {
		return nil, fmt.Errorf("listing pods in namespace %s: %w", l.C.Namespace, err)
	}
	if nerr != nil {
		return nil, fmt.Errorf("listing network policies in namespace %s: %w", l.C.Namespace, nerr)
	}
	if verr != nil {
		return nil, fmt.Errorf("listing persistent volume claims in namespace %s: %w", l.C.Namespace, verr)
	}
	var objs []observed.Object
	for i := range pods.Items {
		objs = append(objs, PodObjects(&pods.Items[i])...)
	}
	for i := range nps.Items {
		objs = append(objs, PolicyObject(&nps.Items[i]))
	}
	for i := range pvcs.Items {
		objs = append(objs, ClaimObject(&pvcs.Items[i]))
	}
	return objs, nil
}

// Ping reads one Pod of the namespace: the API server answers and
// podspawn may list there.
func (l Lister) Ping(ctx context.Context) error {
	_, err := l.C.API.Pods(l.C.Namespace).List(ctx, metav1.ListOptions{Limit: 1, LabelSelector: Selector})
	return err
}

// List returns every object podspawn manages in the namespace.
func (l Lister) List(ctx context.Context) ([]observed.Object, error) { return l.list(ctx, Selector) }

// ListKey returns the objects of one session key.
func (l Lister) ListKey(ctx context.Context, k desired.SessionKey) ([]observed.Object, error) {
	objs, err := l.list(ctx, Selector+","+LabelKey+"="+KeyHash(k))
	if err != nil {
		return nil, err
	}
	// The hash selects; the exact names decide.
	out := objs[:0]
	for _, o := range objs {
		if got, ok := o.Key(); ok && got == k {
			out = append(out, o)
		}
	}
	return out, nil
}

// CountContainers counts podspawn's Pods in the namespace, in every
// phase: on Kubernetes a session's containers are one Pod, and status
// reports Pods.
func (l Lister) CountContainers(ctx context.Context) (int, error) {
	pods, err := l.C.API.Pods(l.C.Namespace).List(ctx, metav1.ListOptions{LabelSelector: Selector})
	if err != nil {
		return 0, err
	}
	return len(pods.Items), nil
}

// InspectContainer finds the container the plan calls ref (a Docker-style
// name, or an ObjectID) in podspawn's Pods.
func (l Lister) InspectContainer(ctx context.Context, ref string) (observed.Object, bool, error) {
	if name, _, _, ok := ParseObjectID(ref); ok {
		p, err := l.C.API.Pods(l.C.Namespace).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return observed.Object{}, false, nil
		}
		if err != nil {
			return observed.Object{}, false, fmt.Errorf("inspecting pod %s: %w", name, err)
		}
		for _, o := range PodObjects(p) {
			if o.ID == ref {
				return o, true, nil
			}
		}
		return observed.Object{}, false, nil
	}
	// Pods only: this is on every connection's path.
	pods, err := l.C.API.Pods(l.C.Namespace).List(ctx, metav1.ListOptions{LabelSelector: Selector + "," + LabelContainer + "=" + NameHash(ref)})
	if err != nil {
		return observed.Object{}, false, fmt.Errorf("inspecting container %s: %w", ref, err)
	}
	for i := range pods.Items {
		for _, o := range PodObjects(&pods.Items[i]) {
			if o.Name == ref {
				return o, true, nil
			}
		}
	}
	return observed.Object{}, false, nil
}

// Placements maps the Docker-style name of every session container of
// instance's Pods to where it runs and the kubelet's restarts of it: one
// list call, for list and list -o wide.
func (l Lister) Placements(ctx context.Context, instance string) (map[string]observed.Placement, error) {
	pods, err := l.C.API.Pods(l.C.Namespace).List(ctx, metav1.ListOptions{LabelSelector: Selector + "," + LabelInstance + "=" + instance})
	if err != nil {
		return nil, fmt.Errorf("listing pods in namespace %s: %w", l.C.Namespace, err)
	}
	out := map[string]observed.Placement{}
	for i := range pods.Items {
		if name, p, ok := SessionPlacement(&pods.Items[i]); ok {
			out[name] = p
		}
	}
	return out, nil
}

// SessionPlacement is the placement of a Pod's session container, with the
// container's Docker-style name; ok is false for a Pod without one.
func SessionPlacement(p *corev1.Pod) (name string, pl observed.Placement, ok bool) {
	var metas []ContainerMeta
	if json.Unmarshal([]byte(p.Annotations[AnnotationContainers]), &metas) != nil {
		return "", observed.Placement{}, false
	}
	for _, m := range metas {
		if m.Labels[observed.LabelRole] != observed.RoleSession {
			continue
		}
		pl.Node = p.Spec.NodeName
		for _, s := range p.Status.ContainerStatuses {
			if s.Name == m.Container {
				pl.Restarts = int(s.RestartCount)
				if r := s.State.Running; r != nil && p.DeletionTimestamp == nil {
					pl.Up, pl.StartedAt = true, r.StartedAt.UTC()
				}
			}
		}
		return m.Name, pl, true
	}
	return "", observed.Placement{}, false
}
