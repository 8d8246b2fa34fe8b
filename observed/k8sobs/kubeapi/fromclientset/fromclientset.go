// Package fromclientset serves kubeapi.API from a client-go clientset: the
// fake one of unit tests, or a test's own. podspawn itself does not link
// the clientset (see kubeapi).
package fromclientset

import (
	"context"
	"net/url"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/podspawn/podspawn/observed/k8sobs/kubeapi"
)

// API wraps cs.
func API(cs kubernetes.Interface) kubeapi.API { return api{cs} }

type api struct{ cs kubernetes.Interface }

func (a api) Pods(ns string) kubeapi.Objects[*corev1.Pod, *corev1.PodList] {
	return a.cs.CoreV1().Pods(ns)
}

func (a api) PersistentVolumeClaims(ns string) kubeapi.Objects[*corev1.PersistentVolumeClaim, *corev1.PersistentVolumeClaimList] {
	return a.cs.CoreV1().PersistentVolumeClaims(ns)
}

func (a api) NetworkPolicies(ns string) kubeapi.Objects[*networkingv1.NetworkPolicy, *networkingv1.NetworkPolicyList] {
	return a.cs.NetworkingV1().NetworkPolicies(ns)
}

func (a api) Namespaces() kubeapi.Getter[*corev1.Namespace] { return a.cs.CoreV1().Namespaces() }

func (a api) Secrets(ns string) kubeapi.Getter[*corev1.Secret] { return a.cs.CoreV1().Secrets(ns) }

func (a api) SelfSubjectAccessReviews() kubeapi.Creator[*authorizationv1.SelfSubjectAccessReview] {
	return a.cs.AuthorizationV1().SelfSubjectAccessReviews()
}

func (a api) ServerVersion(context.Context) (*version.Info, error) {
	return a.cs.Discovery().ServerVersion()
}

func (a api) ServerGroups(context.Context) (*metav1.APIGroupList, error) {
	return a.cs.Discovery().ServerGroups()
}

// PodExecURL needs a real clientset: the fake one has no REST client.
func (a api) PodExecURL(ns, pod string, opts *corev1.PodExecOptions) *url.URL {
	return a.cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(pod).SubResource("exec").
		VersionedParams(opts, scheme.ParameterCodec).URL()
}
