package k8sact

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/spec"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/observed/k8sobs"
	"github.com/podspawn/podspawn/reconcile"
)

// DefaultStartTimeout bounds the wait for a new session Pod to run.
const DefaultStartTimeout = 2 * time.Minute

// createContainer is create-container. The session container's action
// creates the one Pod of the generation with every service of the
// session's row (a Pod's containers are fixed at creation, and the plan
// runs a session's container creations side by side); a service's action
// waits for that Pod and checks its container is in it. An existing Pod of
// the generation is adopted.
func (x *Executor) createContainer(ctx context.Context, a reconcile.Action) (actions.Outcome, error) {
	if a.Container == nil {
		return "", fmt.Errorf("create-container without a container spec: %w", actions.ErrTerminal)
	}
	if a.Container.Role != observed.RoleSession {
		return x.awaitService(ctx, a)
	}
	services, err := x.services(ctx, a)
	if err != nil {
		return "", err
	}
	_, home := splitMount(a.Container, desired.PrepareHome)
	_, agent := splitMount(a.Container, desired.PrepareAgentDir)
	if home != nil {
		if err := x.homes(a).Ensure(ctx, a.Key.User, x.Settings.HomeSize, x.Settings.StorageClass); err != nil {
			return "", err
		}
	}
	pod, err := x.podFor(a, services)
	if err != nil {
		return "", err
	}
	pods := x.C.API.Pods(x.C.Namespace)
	res := actions.Changed
	created, err := pods.Create(ctx, pod, metav1.CreateOptions{})
	switch {
	case err == nil:
		pod = created
	case apierrors.IsAlreadyExists(err):
		existing, gerr := pods.Get(ctx, pod.Name, metav1.GetOptions{})
		if gerr != nil {
			return "", fmt.Errorf("%w (and reading the existing pod failed: %v)", err, gerr)
		}
		if !owned(existing, a) {
			return "", notOwned("pod", existing, a)
		}
		if existing.DeletionTimestamp != nil {
			return "", fmt.Errorf("pod %s is being deleted; retrying once it is gone", pod.Name)
		}
		pod, res = existing, actions.Unchanged
	default:
		return "", err
	}
	running, err := x.waitRunning(ctx, pod)
	if err != nil {
		return "", err
	}
	if a.Container.User != "" {
		if err := x.setupUser(ctx, running, a.Container.User, a.Container.Shell, home != nil, agent != nil); err != nil {
			return "", err
		}
	}
	return res, nil
}

// SessionLoader reads a session's row (sqlstore.Store): its services.
type SessionLoader interface {
	LoadKey(ctx context.Context, k desired.SessionKey) (*desired.Session, error)
}

// services are the service containers of a's generation, from its row.
func (x *Executor) services(ctx context.Context, a reconcile.Action) ([]reconcile.Action, error) {
	if x.Sessions == nil {
		return nil, nil
	}
	sess, err := x.Sessions.LoadKey(ctx, a.Key)
	if err != nil {
		return nil, fmt.Errorf("reading the services of session %s: %w", a.Key, err)
	}
	if sess == nil || sess.ID != a.SessionID {
		return nil, fmt.Errorf("session %s generation %s is no longer in the database", a.Key, a.SessionID)
	}
	var out []reconcile.Action
	for _, svc := range sess.Spec.Services {
		out = append(out, reconcile.Action{Target: sess.Spec.ServiceContainerName(svc.Name),
			Labels: spec.Labels(sess, a.Labels[observed.LabelInstance], observed.RoleService, svc.Name), Container: spec.Service(sess, svc)})
	}
	return out, nil
}

// serviceWait bounds how long a service's action waits for its session
// container's action to create the Pod.
const serviceWait = 30 * time.Second

// awaitService is a service's create-container: done once the session's
// Pod exists with the service in it.
func (x *Executor) awaitService(ctx context.Context, a reconcile.Action) (actions.Outcome, error) {
	name := k8sobs.ObjectName(a.Key)
	deadline := time.Now().Add(serviceWait)
	for {
		p, err := x.C.API.Pods(x.C.Namespace).Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return "", err
		case !owned(p, a):
			return "", notOwned("pod", p, a)
		default:
			for _, o := range k8sobs.PodObjects(p) {
				if o.Name == a.Target {
					return actions.Unchanged, nil
				}
			}
			// A stopped service is restarted by the kubelet; a missing one
			// cannot be added.
			return "", fmt.Errorf("service %s is missing from the pod %s, and a pod's containers are fixed; stop the session to recreate it: %w",
				a.Target, name, actions.ErrTerminal)
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("the session's pod %s was not created within %s", name, serviceWait)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// terminationGrace is the session Pod's grace period in seconds: PID 1
// (sleep) ignores SIGTERM, so a longer one would only hold a delete, and
// zero would make every delete a forced one (the API object goes at once
// while the kubelet may still run the containers and use the claims).
const terminationGrace = 1

// podFor is the session Pod of a's generation with its services.
func (x *Executor) podFor(a reconcile.Action, services []reconcile.Action) (*corev1.Pod, error) {
	m, err := x.meta(a)
	if err != nil {
		return nil, err
	}
	if m.Annotations[k8sobs.AnnotationContainers], err = containerMetas(a, services); err != nil {
		return nil, err
	}
	no, grace := false, int64(terminationGrace)
	ps := corev1.PodSpec{
		AutomountServiceAccountToken: &no, EnableServiceLinks: &no,
		TerminationGracePeriodSeconds: &grace,
		RestartPolicy:                 corev1.RestartPolicyAlways,
		NodeSelector:                  x.Settings.NodeSelector,
		SecurityContext:               &corev1.PodSecurityContext{SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
	}
	if x.Settings.RuntimeClass != "" {
		ps.RuntimeClassName = &x.Settings.RuntimeClass
	}
	for _, name := range x.Settings.ImagePullSecrets {
		ps.ImagePullSecrets = append(ps.ImagePullSecrets, corev1.LocalObjectReference{Name: name})
	}
	if h := a.Container.Hostname; h != "" {
		ps.Hostname = strings.Trim(strings.ReplaceAll(h, "_", "-"), "-")
		if len(validation.IsDNS1123Label(ps.Hostname)) > 0 {
			ps.Hostname = ""
		}
	}
	var aliases []string
	claim := func(volume string) string { return k8sobs.ClaimName(a.Key, volume) }
	sc, home := splitMount(a.Container, desired.PrepareHome)
	sc, agent := splitMount(sc, desired.PrepareAgentDir)
	c, vols, err := container("session", x.Settings.Registry, sc, claim)
	if err != nil {
		return nil, err
	}
	if home != nil {
		v, m := homeVolume(a, home.Target)
		vols, c.VolumeMounts = append(vols, v), append(c.VolumeMounts, m)
	}
	if agent != nil {
		v, m := agentVolumes()
		vols, c.VolumeMounts = append(vols, v...), append(c.VolumeMounts, m...)
	}
	ps.Containers, ps.Volumes = append(ps.Containers, c), append(ps.Volumes, vols...)
	for i, s := range services {
		c, vols, err := container(serviceContainer(i), x.Settings.Registry, s.Container, claim)
		if err != nil {
			return nil, fmt.Errorf("service %s: %w", s.Target, err)
		}
		ps.Containers, ps.Volumes = append(ps.Containers, c), append(ps.Volumes, vols...)
		aliases = append(aliases, s.Container.Aliases...)
	}
	if len(aliases) > 0 {
		// Services share the Pod's network: their names mean localhost.
		ps.HostAliases = []corev1.HostAlias{{IP: "127.0.0.1", Hostnames: aliases}}
	}
	return &corev1.Pod{ObjectMeta: m, Spec: ps}, nil
}

// container is one container of a session Pod with the config's security
// profile, its limits as both requests and limits, its tmpfs mounts and
// its named volumes (the claims claim names).
func container(name, registry string, s *spec.Container, claim func(volume string) string) (corev1.Container, []corev1.Volume, error) {
	if len(s.Mounts) > 0 {
		return corev1.Container{}, nil, fmt.Errorf("host mounts are not supported on the kubernetes runtime: %w", actions.ErrTerminal)
	}
	no, rt := false, corev1.SeccompProfileTypeRuntimeDefault
	c := corev1.Container{Name: name, Image: RemoteImage(registry, s.Image), Command: s.Cmd, ImagePullPolicy: corev1.PullIfNotPresent,
		SecurityContext: &corev1.SecurityContext{
			AllowPrivilegeEscalation: &no, ReadOnlyRootFilesystem: &s.Security.ReadonlyRootfs,
			SeccompProfile: &corev1.SeccompProfile{Type: rt},
			Capabilities:   &corev1.Capabilities{Drop: caps(s.Security.CapDrop), Add: caps(s.Security.CapAdd)},
		}}
	if len(s.Cmd) == 0 {
		c.Command = nil
	}
	for _, e := range s.Env {
		k, v, _ := strings.Cut(e, "=")
		c.Env = append(c.Env, corev1.EnvVar{Name: k, Value: v})
	}
	rl := corev1.ResourceList{}
	if s.CPUs > 0 {
		rl[corev1.ResourceCPU] = *resource.NewMilliQuantity(int64(s.CPUs*1000), resource.DecimalSI)
	}
	if s.MemoryBytes > 0 {
		rl[corev1.ResourceMemory] = *resource.NewQuantity(s.MemoryBytes, resource.BinarySI)
	}
	// The container's writable layer and logs: the kubelet evicts a Pod
	// past it, as Docker's storage quota refuses writes.
	if s.DiskBytes > 0 {
		rl[corev1.ResourceEphemeralStorage] = *resource.NewQuantity(s.DiskBytes, resource.BinarySI)
	}
	if len(rl) > 0 {
		c.Resources = corev1.ResourceRequirements{Requests: rl, Limits: rl}
	}
	var vols []corev1.Volume
	i := 0
	for path := range s.Security.Tmpfs {
		v := fmt.Sprintf("%s-tmpfs-%d", name, i)
		i++
		vols = append(vols, corev1.Volume{Name: v, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}})
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: v, MountPath: path})
	}
	for j, v := range s.Volumes {
		n := fmt.Sprintf("%s-volume-%d", name, j)
		vols = append(vols, corev1.Volume{Name: n, VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim(v.Name)}}})
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: n, MountPath: v.Target})
	}
	return c, vols, nil
}

func caps(in []string) []corev1.Capability {
	var out []corev1.Capability
	for _, c := range in {
		out = append(out, corev1.Capability(strings.TrimPrefix(strings.ToUpper(c), "CAP_")))
	}
	return out
}

// waitRunning watches the Pod until all its containers run. A container
// that cannot start (image missing, bad command) fails at once with the
// kubelet's reason instead of waiting out the timeout.
func (x *Executor) waitRunning(ctx context.Context, pod *corev1.Pod) (*corev1.Pod, error) {
	if podRunning(pod) {
		return pod, nil
	}
	timeout := x.StartTimeout
	if timeout <= 0 {
		timeout = DefaultStartTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	w, err := x.C.API.Pods(x.C.Namespace).Watch(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("metadata.name", pod.Name).String(), ResourceVersion: pod.ResourceVersion})
	if err != nil {
		return nil, fmt.Errorf("watching pod %s start: %w", pod.Name, err)
	}
	defer w.Stop()
	last := "Pending"
	for ev := range w.ResultChan() {
		p, ok := ev.Object.(*corev1.Pod)
		if !ok || p.UID != pod.UID {
			continue
		}
		if ev.Type == watch.Deleted {
			return nil, fmt.Errorf("pod %s was deleted while starting", pod.Name)
		}
		if podRunning(p) {
			return p, nil
		}
		if why := podFailing(p); why != "" {
			return nil, fmt.Errorf("pod %s cannot start: %s", pod.Name, why)
		}
		last = string(p.Status.Phase)
	}
	return nil, fmt.Errorf("pod %s not running after %s (phase %s): %w", pod.Name, timeout, last, context.Cause(ctx))
}

func podRunning(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning || len(p.Status.ContainerStatuses) < len(p.Spec.Containers) {
		return false
	}
	for _, s := range p.Status.ContainerStatuses {
		if s.State.Running == nil {
			return false
		}
	}
	return true
}

// podFailing names a container's reason when it cannot start without an
// operator (an image that is not there, a config error).
func podFailing(p *corev1.Pod) string {
	for _, s := range p.Status.ContainerStatuses {
		if w := s.State.Waiting; w != nil {
			switch w.Reason {
			case "ErrImageNeverPull", "ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CreateContainerConfigError", "CreateContainerError", "RunContainerError",
				// the kubelet restarts it and backs off; podspawn reports it
				"CrashLoopBackOff":
				return fmt.Sprintf("container %s: %s: %s", s.Name, w.Reason, w.Message)
			}
		}
	}
	return ""
}

// setupUser creates the session's account in the session container, as
// Docker's executor does, and hands it a persistent home and the agent's
// directory (one exec: it is on the login's path).
func (x *Executor) setupUser(ctx context.Context, p *corev1.Pod, user, shell string, home, agent bool) error {
	var out strings.Builder
	ref := k8sobs.ObjectID(p.Name, "session", string(p.UID))
	script := actions.UserSetupScript
	if home {
		script += adoptHomeScript
	}
	if agent {
		script += agentDirsScript
	}
	code, err := Execer{C: x.C, Log: x.Log}.Run(ctx, actions.ExecSpec{Container: ref, Kind: "user setup",
		Argv: []string{"sh", "-c", script, "podspawn-setup", user, shell}}, &out)
	if err != nil {
		return fmt.Errorf("setting up user %s in the pod: %w", user, err)
	}
	if code != 0 {
		return fmt.Errorf("setting up user %s in the pod: script exited %d: %s", user, code, strings.TrimSpace(out.String()))
	}
	return nil
}
