// Package kubeapi is the part of the Kubernetes API podspawn calls: Pods,
// PersistentVolumeClaims and NetworkPolicies in its namespace, exec into a
// Pod, and what doctor reads (a namespace, Secrets, access reviews).
//
// It is client-go's REST client with a scheme of only those API groups,
// registered when a client is made. The full clientset
// (k8s.io/client-go/kubernetes) registers every API group of Kubernetes at
// package init, and pulls in its informers, listers and apply
// configurations: every podspawn process paid for that before main ran,
// auth-keys included, which sshd starts twice per SSH login.
package kubeapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"sync"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
)

// Objects are the calls podspawn makes on one kind of object in a
// namespace. client-go's typed clients (the fake clientset's included)
// satisfy it.
type Objects[T, L runtime.Object] interface {
	Getter[T]
	List(ctx context.Context, opts metav1.ListOptions) (L, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
	Create(ctx context.Context, obj T, opts metav1.CreateOptions) (T, error)
	Delete(ctx context.Context, name string, opts metav1.DeleteOptions) error
}

// Getter reads one object by name.
type Getter[T runtime.Object] interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (T, error)
}

// Creator creates an object (a review, which the API server answers
// without storing it).
type Creator[T runtime.Object] interface {
	Create(ctx context.Context, obj T, opts metav1.CreateOptions) (T, error)
}

// API is podspawn's Kubernetes API client.
type API interface {
	Pods(namespace string) Objects[*corev1.Pod, *corev1.PodList]
	PersistentVolumeClaims(namespace string) Objects[*corev1.PersistentVolumeClaim, *corev1.PersistentVolumeClaimList]
	NetworkPolicies(namespace string) Objects[*networkingv1.NetworkPolicy, *networkingv1.NetworkPolicyList]
	Namespaces() Getter[*corev1.Namespace]
	Secrets(namespace string) Getter[*corev1.Secret]
	SelfSubjectAccessReviews() Creator[*authorizationv1.SelfSubjectAccessReview]
	// ServerVersion is the API server's version.
	ServerVersion(ctx context.Context) (*version.Info, error)
	// ServerGroups lists the API groups the server serves (under /apis).
	ServerGroups(ctx context.Context) (*metav1.APIGroupList, error)
	// PodExecURL is the URL of an exec into a Pod, for client-go's
	// streaming executors.
	PodExecURL(namespace, pod string, opts *corev1.PodExecOptions) *url.URL
}

var (
	schemeOnce sync.Once
	scheme     *runtime.Scheme
	codecs     serializer.CodecFactory
	params     runtime.ParameterCodec
	schemeErr  error
)

func buildScheme() {
	scheme = runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, networkingv1.AddToScheme, authorizationv1.AddToScheme} {
		if err := add(scheme); err != nil {
			schemeErr = fmt.Errorf("registering the Kubernetes API types: %w", err)
			return
		}
	}
	codecs = serializer.NewCodecFactory(scheme)
	params = runtime.NewParameterCodec(scheme)
}

// New connects to the API server of cfg. The groups' clients share one
// HTTP client, so one connection serves them all.
func New(cfg *rest.Config) (API, error) {
	schemeOnce.Do(buildScheme)
	if schemeErr != nil {
		return nil, schemeErr
	}
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	client := func(gv schema.GroupVersion, apiPath string) (rest.Interface, error) {
		c := rest.CopyConfig(cfg)
		c.GroupVersion, c.APIPath = &gv, apiPath
		c.NegotiatedSerializer = rest.CodecFactoryForGeneratedClient(scheme, codecs).WithoutConversion()
		// Protobuf, as client-go's generated clients ask for these
		// built-in kinds: a pass that lists a thousand Pods decodes them
		// in less than half the CPU time JSON takes.
		if c.ContentType == "" {
			c.ContentType, c.AcceptContentTypes = runtime.ContentTypeProtobuf, runtime.ContentTypeProtobuf+","+runtime.ContentTypeJSON
		}
		if c.UserAgent == "" {
			c.UserAgent = rest.DefaultKubernetesUserAgent()
		}
		return rest.RESTClientForConfigAndClient(c, httpClient)
	}
	var a restAPI
	if a.core, err = client(corev1.SchemeGroupVersion, "/api"); err != nil {
		return nil, err
	}
	if a.networking, err = client(networkingv1.SchemeGroupVersion, "/apis"); err != nil {
		return nil, err
	}
	if a.authorization, err = client(authorizationv1.SchemeGroupVersion, "/apis"); err != nil {
		return nil, err
	}
	return a, nil
}

type restAPI struct {
	core, networking, authorization rest.Interface
}

func (a restAPI) Pods(ns string) Objects[*corev1.Pod, *corev1.PodList] {
	return objects[*corev1.Pod, *corev1.PodList]{a.core, "pods", ns,
		func() *corev1.Pod { return &corev1.Pod{} }, func() *corev1.PodList { return &corev1.PodList{} }}
}

func (a restAPI) PersistentVolumeClaims(ns string) Objects[*corev1.PersistentVolumeClaim, *corev1.PersistentVolumeClaimList] {
	return objects[*corev1.PersistentVolumeClaim, *corev1.PersistentVolumeClaimList]{a.core, "persistentvolumeclaims", ns,
		func() *corev1.PersistentVolumeClaim { return &corev1.PersistentVolumeClaim{} },
		func() *corev1.PersistentVolumeClaimList { return &corev1.PersistentVolumeClaimList{} }}
}

func (a restAPI) NetworkPolicies(ns string) Objects[*networkingv1.NetworkPolicy, *networkingv1.NetworkPolicyList] {
	return objects[*networkingv1.NetworkPolicy, *networkingv1.NetworkPolicyList]{a.networking, "networkpolicies", ns,
		func() *networkingv1.NetworkPolicy { return &networkingv1.NetworkPolicy{} },
		func() *networkingv1.NetworkPolicyList { return &networkingv1.NetworkPolicyList{} }}
}

func (a restAPI) Namespaces() Getter[*corev1.Namespace] {
	return objects[*corev1.Namespace, *corev1.NamespaceList]{a.core, "namespaces", "",
		func() *corev1.Namespace { return &corev1.Namespace{} }, func() *corev1.NamespaceList { return &corev1.NamespaceList{} }}
}

func (a restAPI) Secrets(ns string) Getter[*corev1.Secret] {
	return objects[*corev1.Secret, *corev1.SecretList]{a.core, "secrets", ns,
		func() *corev1.Secret { return &corev1.Secret{} }, func() *corev1.SecretList { return &corev1.SecretList{} }}
}

func (a restAPI) SelfSubjectAccessReviews() Creator[*authorizationv1.SelfSubjectAccessReview] {
	return objects[*authorizationv1.SelfSubjectAccessReview, *authorizationv1.SelfSubjectAccessReview]{a.authorization, "selfsubjectaccessreviews", "",
		func() *authorizationv1.SelfSubjectAccessReview { return &authorizationv1.SelfSubjectAccessReview{} }, nil}
}

func (a restAPI) PodExecURL(ns, pod string, opts *corev1.PodExecOptions) *url.URL {
	return a.core.Post().Resource("pods").Namespace(ns).Name(pod).SubResource("exec").VersionedParams(opts, params).URL()
}

func (a restAPI) ServerVersion(ctx context.Context) (*version.Info, error) {
	var v version.Info
	if err := a.getJSON(ctx, "/version", &v); err != nil {
		return nil, err
	}
	return &v, nil
}

func (a restAPI) ServerGroups(ctx context.Context) (*metav1.APIGroupList, error) {
	var l metav1.APIGroupList
	if err := a.getJSON(ctx, "/apis", &l); err != nil {
		return nil, err
	}
	return &l, nil
}

func (a restAPI) getJSON(ctx context.Context, path string, into any) error {
	body, err := a.core.Get().AbsPath(path).SetHeader("Accept", runtime.ContentTypeJSON).Do(ctx).Raw()
	if err != nil {
		return err
	}
	if err := json.Unmarshal(body, into); err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	return nil
}
