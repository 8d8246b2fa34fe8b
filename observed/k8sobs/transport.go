package k8sobs

import (
	"net/http"
	"strings"
	"time"

	"k8s.io/client-go/rest"
)

// RequestObserver receives the duration of one API request (until its
// response headers, so an exec or a watch counts its setup only) under a
// bounded operation name.
type RequestObserver func(operation string, d time.Duration)

// observeRequests has every request made with cfg, exec's upgrades included,
// timed by fn.
func observeRequests(cfg *rest.Config, fn RequestObserver) {
	cfg.Wrap(func(next http.RoundTripper) http.RoundTripper { return observedTransport{next: next, observe: fn} })
}

type observedTransport struct {
	next    http.RoundTripper
	observe RequestObserver
}

func (t observedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := t.next.RoundTrip(r)
	t.observe(Operation(r.Method, r.URL.Path, r.URL.Query().Get("watch") == "true"), time.Since(start))
	return resp, err
}

// verbs names a request on a named object by its method.
var verbs = map[string]string{
	http.MethodGet: "get", http.MethodPost: "create", http.MethodPut: "update",
	http.MethodPatch: "patch", http.MethodDelete: "delete",
}

// Operation maps a namespaced API request to a bounded label: the
// resource, then the subresource or the verb, never a name ("pods.list",
// "pods.get", "pods.exec", "networkpolicies.create"). Requests outside a
// namespace are "other".
func Operation(method, path string, watch bool) string {
	segs := strings.Split(strings.Trim(path, "/"), "/")
	i := 0
	for i < len(segs) && segs[i] != "namespaces" {
		i++
	}
	if i+2 >= len(segs) {
		return "other"
	}
	res := segs[i+2]
	switch named := i+3 < len(segs); {
	case i+4 < len(segs):
		return res + "." + segs[i+4]
	case watch:
		return res + ".watch"
	case !named && method == http.MethodGet:
		return res + ".list"
	case !named && method == http.MethodPost:
		return res + ".create"
	case named && verbs[method] != "":
		return res + "." + verbs[method]
	}
	return res + ".other"
}
