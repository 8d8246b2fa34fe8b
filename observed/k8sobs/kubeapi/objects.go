package kubeapi

import (
	"context"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
)

// objects is one kind of object in a namespace ("" for a cluster-scoped
// kind), on the REST client of its API group. It does what client-go's
// generated typed clients do for these five verbs; their generic base
// (k8s.io/client-go/gentype) is not used because it links client-go's
// fake clients, and through them the OpenAPI and protobuf machinery,
// into every podspawn process.
type objects[T, L runtime.Object] struct {
	client    rest.Interface
	resource  string
	namespace string
	newObject func() T
	newList   func() L
}

func (c objects[T, L]) request(r *rest.Request) *rest.Request {
	return r.NamespaceIfScoped(c.namespace, c.namespace != "").Resource(c.resource)
}

func (c objects[T, L]) Get(ctx context.Context, name string, opts metav1.GetOptions) (T, error) {
	out := c.newObject()
	err := c.request(c.client.Get()).Name(name).VersionedParams(&opts, params).Do(ctx).Into(out)
	return out, err
}

func (c objects[T, L]) List(ctx context.Context, opts metav1.ListOptions) (L, error) {
	out := c.newList()
	err := c.request(c.client.Get()).VersionedParams(&opts, params).Timeout(timeout(opts)).Do(ctx).Into(out)
	return out, err
}

func (c objects[T, L]) Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	opts.Watch = true
	return c.request(c.client.Get()).VersionedParams(&opts, params).Timeout(timeout(opts)).Watch(ctx)
}

func (c objects[T, L]) Create(ctx context.Context, obj T, opts metav1.CreateOptions) (T, error) {
	out := c.newObject()
	err := c.request(c.client.Post()).VersionedParams(&opts, params).Body(obj).Do(ctx).Into(out)
	return out, err
}

func (c objects[T, L]) Delete(ctx context.Context, name string, opts metav1.DeleteOptions) error {
	return c.request(c.client.Delete()).Name(name).Body(&opts).Do(ctx).Error()
}

func timeout(opts metav1.ListOptions) time.Duration {
	if opts.TimeoutSeconds == nil {
		return 0
	}
	return time.Duration(*opts.TimeoutSeconds) * time.Second
}
