package k8sact

import (
	corev1 "k8s.io/api/core/v1"

	"github.com/podspawn/podspawn/reconcile"
)

// SessionPod is the Pod that create-container makes for the session
// container's action a, with services as further containers; it creates
// nothing. hack/k8s-scale builds its Pods with it, so they are labelled,
// annotated and sized as podspawn's own.
func (x *Executor) SessionPod(a reconcile.Action, services []reconcile.Action) (*corev1.Pod, error) {
	return x.podFor(a, services)
}
