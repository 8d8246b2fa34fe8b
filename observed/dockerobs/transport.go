package dockerobs

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/docker/docker/client"
)

// RequestObserver receives the duration of one Docker API request (until
// its response headers, so a stream such as /events counts its setup
// only) under a bounded operation name.
type RequestObserver func(operation string, d time.Duration)

// NewInstrumentedClient is NewClient with every request timed by observe.
func NewInstrumentedClient(observe RequestObserver) (*client.Client, error) {
	c, err := client.NewClientWithOpts(client.FromEnv, withObserver(observe), client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("connecting to docker: %w", err)
	}
	return c, nil
}

// withObserver wraps the transport FromEnv configured (unix socket, TCP,
// TLS), so it must come after FromEnv.
func withObserver(observe RequestObserver) client.Opt {
	return func(c *client.Client) error {
		hc := c.HTTPClient()
		hc.Transport = &observedTransport{next: hc.Transport, observe: observe}
		return client.WithHTTPClient(hc)(c)
	}
}

type observedTransport struct {
	next    http.RoundTripper
	observe RequestObserver
}

func (t *observedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := t.next.RoundTrip(r)
	t.observe(Operation(r.Method, r.URL.Path), time.Since(start))
	return resp, err
}

// collections maps the first path segment to the name used in operations.
var collections = map[string]string{
	"containers": "containers", "networks": "networks", "volumes": "volumes",
	"images": "images", "exec": "exec", "plugins": "plugins", "system": "system",
}

// Operation maps a Docker API request to a bounded label: ids and names
// never appear, only the collection and the verb ("containers.list",
// "containers.delete", "containers.start", "networks.inspect", ...).
func Operation(method, path string) string {
	segs := strings.Split(strings.Trim(path, "/"), "/")
	if len(segs) > 0 && strings.HasPrefix(segs[0], "v1.") {
		segs = segs[1:] // the API version
	}
	if len(segs) == 0 || segs[0] == "" {
		return "other"
	}
	coll, ok := collections[segs[0]]
	if !ok {
		switch segs[0] {
		case "_ping", "version", "info", "events", "build", "auth":
			return strings.TrimPrefix(segs[0], "_")
		}
		return "other"
	}
	switch len(segs) {
	case 1:
		if method == http.MethodGet {
			return coll + ".list"
		}
		return coll + ".other"
	case 2:
		switch {
		case segs[1] == "json" && method == http.MethodGet:
			return coll + ".list" // GET /containers/json, /images/json
		case segs[1] == "create" || segs[1] == "prune":
			return coll + "." + segs[1]
		case method == http.MethodDelete:
			return coll + ".delete"
		case method == http.MethodGet:
			return coll + ".inspect" // GET /networks/{id}, /volumes/{name}
		}
		return coll + ".other"
	}
	// /{coll}/{id}/{verb}: the verb is a fixed word of the API.
	verb := segs[len(segs)-1]
	if verb == "json" {
		return coll + ".inspect"
	}
	if knownVerbs[verb] {
		return coll + "." + verb
	}
	if method == http.MethodDelete {
		return coll + ".delete" // DELETE /images/{name with slashes}
	}
	return coll + ".other"
}

// knownVerbs are the sub-resources of the Docker API, the only words of a
// path past an id that may become part of a label.
var knownVerbs = map[string]bool{
	"start": true, "stop": true, "kill": true, "restart": true, "pause": true, "unpause": true,
	"wait": true, "attach": true, "resize": true, "exec": true, "logs": true, "top": true,
	"stats": true, "changes": true, "export": true, "archive": true, "update": true, "rename": true,
	"connect": true, "disconnect": true, "history": true, "push": true, "tag": true, "get": true,
	"load": true, "search": true,
}
