package k8sact

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/spec"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/observed/k8sobs"
	"github.com/podspawn/podspawn/reconcile"
)

// Homes are the users' persistent homes on Kubernetes: one
// PersistentVolumeClaim per user, like Docker's <homes_dir>/<user>, owned
// by no session (a session's Pod only mounts it), so it outlives stop,
// image updates and crash loops. A project session mounts the project's
// directory of it, as Docker mounts <homes_dir>/<user>/<project>, so one
// size caps all of a user's homes together as state.home_size does.
type Homes struct {
	C *k8sobs.Client
	// Instance is the state database's instance id: another podspawn
	// host's claims are never adopted or deleted.
	Instance string
}

// Home is a user's home claim as list-users and remove-user show it.
type Home struct {
	Name string
	UID  types.UID
	// Capacity is the bound volume's size, zero until the claim is bound;
	// Requested is what the claim asks for.
	Capacity, Requested resource.Quantity
	Deleting            bool
}

func (h Homes) owns(c *corev1.PersistentVolumeClaim, user string) bool {
	l := c.Labels
	return l[k8sobs.LabelManagedBy] == observed.ManagedByValue && l[k8sobs.LabelHome] == k8sobs.HomeHash(user) &&
		l[k8sobs.LabelInstance] == h.Instance && c.Annotations[k8sobs.AnnotationUser] == user
}

// Get reads user's home claim; nil without one. A claim of that name
// that is not this instance's home of user is an error, never adopted.
func (h Homes) Get(ctx context.Context, user string) (*Home, error) {
	name := k8sobs.HomeClaimName(user)
	c, err := h.C.API.PersistentVolumeClaims(h.C.Namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the home of %s (persistentvolumeclaim %s): %w", user, name, err)
	}
	if !h.owns(c, user) {
		return nil, fmt.Errorf("persistentvolumeclaim %s is not the podspawn home of %s on this host (labels %v); remove or rename it with kubectl: %w",
			name, user, c.Labels, actions.ErrTerminal)
	}
	return &Home{Name: name, UID: c.UID, Capacity: c.Status.Capacity[corev1.ResourceStorage],
		Requested: c.Spec.Resources.Requests[corev1.ResourceStorage], Deleting: c.DeletionTimestamp != nil}, nil
}

// Ensure creates user's home claim unless it exists. An existing claim is
// kept as it is: its files are the user's, so a changed size or storage
// class applies only to new homes.
func (h Homes) Ensure(ctx context.Context, user string, size resource.Quantity, storageClass string) error {
	home, err := h.Get(ctx, user)
	switch {
	case err != nil:
		return err
	case home != nil && home.Deleting:
		return fmt.Errorf("the home of %s (persistentvolumeclaim %s) is being deleted; retrying once it is gone", user, home.Name)
	case home != nil:
		return nil
	}
	c := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: k8sobs.HomeClaimName(user), Namespace: h.C.Namespace,
			Labels: map[string]string{k8sobs.LabelManagedBy: observed.ManagedByValue, k8sobs.LabelHome: k8sobs.HomeHash(user),
				k8sobs.LabelInstance: h.Instance},
			Annotations: map[string]string{k8sobs.AnnotationUser: user}},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: size}},
		}}
	if storageClass != "" {
		c.Spec.StorageClassName = &storageClass
	}
	_, err = h.C.API.PersistentVolumeClaims(h.C.Namespace).Create(ctx, c, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		// Made by a login of the same user just now: check it is ours.
		_, err = h.Get(ctx, user)
	}
	if err != nil {
		return fmt.Errorf("creating the home of %s (persistentvolumeclaim %s): %w", user, c.Name, err)
	}
	return nil
}

// Purge deletes user's home claim and waits until it is gone (its
// protection finalizer holds it while a Pod still uses it); false when
// there was none.
func (h Homes) Purge(ctx context.Context, user string) (bool, error) {
	home, err := h.Get(ctx, user)
	if err != nil || home == nil {
		return false, err
	}
	err = h.C.API.PersistentVolumeClaims(h.C.Namespace).Delete(ctx, home.Name,
		metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &home.UID}})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("deleting the home of %s (persistentvolumeclaim %s): %w", user, home.Name, err)
	}
	if _, err := awaitGone(ctx, claimGetter{h.C}, home.Name, home.UID); err != nil {
		return false, err
	}
	return true, nil
}

// splitMount splits the mount that prep prepares off a session
// container's spec: on Kubernetes it is a volume of the Pod (the user's
// home claim, the agent's emptyDir), not a host directory.
func splitMount(s *spec.Container, prep desired.MountPrep) (*spec.Container, *desired.Mount) {
	var found *desired.Mount
	rest := make([]desired.Mount, 0, len(s.Mounts))
	for _, m := range s.Mounts {
		if m.Prepare == prep {
			found = &m
			continue
		}
		rest = append(rest, m)
	}
	if found == nil {
		return s, nil
	}
	c := *s
	c.Mounts = rest
	return &c, found
}

// homeVolume is the Pod's volume and the session container's mount of
// the user's home claim: its root for a default session, the project's
// directory in it for a project session (the kubelet makes the directory
// if missing, and refuses a link in its place).
func homeVolume(a reconcile.Action, target string) (corev1.Volume, corev1.VolumeMount) {
	const name = "home"
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: k8sobs.HomeClaimName(a.Key.User)}}},
		corev1.VolumeMount{Name: name, MountPath: target, SubPath: a.Key.Project}
}

// adoptHomeScript follows actions.UserSetupScript (its $home, $uid and
// $gid) in a session with a persistent home. It gives the home's root,
// and only it, to the account, as Docker's executor does on the host: a
// new home is root's (made by the provisioner or the kubelet) and becomes
// the user's with mode 0700; one of another uid (an image whose account
// got another uid) changes owner only. It runs as the container's root,
// in the container's mount namespace, so nothing outside the container is
// reachable; chown -h and the link test keep it off links even there.
const adoptHomeScript = `
if [ -L "$home" ] || [ ! -d "$home" ]; then echo "the persistent home $home is not a directory" >&2; exit 1; fi
set -- $(ls -ldn "$home")
if [ "$3" = 0 ]; then chown -h "$uid:$gid" "$home"; chmod 0700 "$home"
elif [ "$3:$4" != "$uid:$gid" ]; then chown -h "$uid:$gid" "$home"; fi
`
