package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// ScopeProxy sits between podspawn and the shared Docker daemon. podspawn
// treats every managed-by=podspawn object without an instance label as its
// own, so on a daemon shared with other engineers (and with objects such as
// a stray "orphan-net-x") a real cleanup pass would reap objects this test
// did not create. The proxy makes the test see only its own world:
//   - list responses keep only objects labelled with one of the test's
//     instance ids, or whose id/name the test registered with Allow;
//   - a removal (or stop/kill) of any other object is refused with 403;
//   - every request is counted by method and path, so tests can assert
//     how many Docker calls a pass made.
//
// Everything else, including hijacked exec streams, passes through unchanged.
type ScopeProxy struct {
	Sock string

	upstream string
	rp       *httputil.ReverseProxy
	srv      *http.Server
	direct   *http.Client

	mu        sync.Mutex
	instances map[string]bool
	allowed   map[string]bool
	counts    map[string]int
	refused   []string
	// inflight and peak track concurrent DELETE requests, to see how
	// parallel a client's removals really are.
	inflight, peak int
}

var (
	versionRE = regexp.MustCompile(`^/v[0-9.]+`)
	listRE    = regexp.MustCompile(`^/(containers/json|networks|volumes)$`)
	removeRE  = regexp.MustCompile(`^/(containers|networks|volumes)/([^/]+)$`)
	stopRE    = regexp.MustCompile(`^/containers/([^/]+)/(stop|kill|restart|pause|rename|update)$`)
	subRE     = regexp.MustCompile(`^/(containers|exec|networks)/[^/]+/(.+)$`)
)

func upstreamSocket() string {
	if h := os.Getenv("DOCKER_HOST"); strings.HasPrefix(h, "unix://") {
		return strings.TrimPrefix(h, "unix://")
	}
	return "/var/run/docker.sock"
}

// NewScopeProxy starts a proxy on a fresh unix socket; it stops at test end.
func NewScopeProxy(t testing.TB) *ScopeProxy {
	t.Helper()
	// Unix socket paths are limited to 108 bytes, and t.TempDir() can be
	// longer than that for long test names.
	dir, err := os.MkdirTemp("", "psproxy")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := &ScopeProxy{
		Sock:      filepath.Join(dir, "docker.sock"),
		upstream:  upstreamSocket(),
		instances: map[string]bool{},
		allowed:   map[string]bool{},
		counts:    map[string]int{},
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", p.upstream)
		},
		MaxIdleConnsPerHost: 32,
	}
	p.direct = &http.Client{Transport: tr}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.Out.URL.Scheme = "http"
			r.Out.URL.Host = "docker"
			r.Out.Host = "docker"
		},
		Transport:      tr,
		FlushInterval:  -1,
		ModifyResponse: p.filterList,
		ErrorLog:       log.New(io.Discard, "", 0),
	}
	ln, err := net.Listen("unix", p.Sock)
	if err != nil {
		t.Fatalf("scope proxy: %v", err)
	}
	p.srv = &http.Server{Handler: http.HandlerFunc(p.serve)}
	go p.srv.Serve(ln)
	t.Cleanup(func() { p.srv.Close() })
	return p
}

// Host is the DOCKER_HOST value that routes through the proxy.
func (p *ScopeProxy) Host() string { return "unix://" + p.Sock }

// AddInstance makes every object labelled podspawn.instance=id visible.
func (p *ScopeProxy) AddInstance(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.instances[id] = true
}

// Allow makes objects with these ids or names visible and removable.
func (p *ScopeProxy) Allow(refs ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range refs {
		p.allowed[r] = true
	}
}

func (p *ScopeProxy) visible(id, name string, labels map[string]string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.instances[labels["podspawn.instance"]] || p.allowed[id] || p.allowed[name] || p.allowed[strings.TrimPrefix(name, "/")]
}

// Counts returns the requests seen since the last reset, keyed "GET /path"
// with the API version prefix removed.
func (p *ScopeProxy) Counts() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]int, len(p.counts))
	for k, v := range p.counts {
		out[k] = v
	}
	return out
}

// ResetCounts clears the request counters and the removal peak.
func (p *ScopeProxy) ResetCounts() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts = map[string]int{}
	p.peak = 0
}

// PeakRemovals is the most DELETE requests in flight at once since the last reset.
func (p *ScopeProxy) PeakRemovals() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.peak
}

// Refused lists the removals the proxy blocked.
func (p *ScopeProxy) Refused() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.refused...)
}

// SummarizeCounts renders counts grouped by endpoint kind, ids replaced by {id}.
func SummarizeCounts(c map[string]int) string {
	grouped := map[string]int{}
	for k, v := range c {
		method, path, _ := strings.Cut(k, " ")
		if m := removeRE.FindStringSubmatch(path); m != nil && m[2] != "json" && m[2] != "create" && m[2] != "prune" {
			path = "/" + m[1] + "/{id}"
		}
		if m := subRE.FindStringSubmatch(path); m != nil {
			path = "/" + m[1] + "/{id}/" + m[2]
		}
		grouped[method+" "+path] += v
	}
	keys := make([]string, 0, len(grouped))
	for k := range grouped {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "  %5d  %s\n", grouped[k], k)
	}
	return b.String()
}

func (p *ScopeProxy) serve(w http.ResponseWriter, r *http.Request) {
	path := versionRE.ReplaceAllString(r.URL.Path, "")
	p.mu.Lock()
	p.counts[r.Method+" "+path]++
	if r.Method == http.MethodDelete {
		p.inflight++
		if p.inflight > p.peak {
			p.peak = p.inflight
		}
		defer func() {
			p.mu.Lock()
			p.inflight--
			p.mu.Unlock()
		}()
	}
	p.mu.Unlock()

	var kind, ref string
	switch {
	case r.Method == http.MethodDelete && removeRE.MatchString(path):
		m := removeRE.FindStringSubmatch(path)
		kind, ref = m[1], m[2]
	case r.Method == http.MethodPost && stopRE.MatchString(path):
		kind, ref = "containers", stopRE.FindStringSubmatch(path)[1]
	}
	if kind != "" {
		ok, err := p.mine(r.Context(), kind, ref)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		if !ok {
			msg := fmt.Sprintf("scope proxy: refusing %s %s: %s %s was not created by this test", r.Method, path, strings.TrimSuffix(kind, "s"), ref)
			p.mu.Lock()
			p.refused = append(p.refused, msg)
			p.mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			json.NewEncoder(w).Encode(map[string]string{"message": msg})
			return
		}
	}
	p.rp.ServeHTTP(w, r)
}

// mine inspects ref on the daemon. An object that does not exist is
// "mine": removing it is a harmless NotFound that podspawn must handle.
func (p *ScopeProxy) mine(ctx context.Context, kind, ref string) (bool, error) {
	u := "http://docker/" + kind + "/" + ref
	if kind == "containers" {
		u += "/json"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return false, err
	}
	resp, err := p.direct.Do(req)
	if err != nil {
		return false, fmt.Errorf("scope proxy: inspecting %s %s: %w", kind, ref, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return true, nil
	}
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("scope proxy: inspecting %s %s: status %d", kind, ref, resp.StatusCode)
	}
	var obj struct {
		ID     string            `json:"Id"`
		Name   string            `json:"Name"`
		Labels map[string]string `json:"Labels"`
		Config *struct {
			Labels map[string]string `json:"Labels"`
		} `json:"Config"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&obj); err != nil {
		return false, fmt.Errorf("scope proxy: decoding %s %s: %w", kind, ref, err)
	}
	labels := obj.Labels
	if obj.Config != nil {
		labels = obj.Config.Labels
	}
	id := obj.ID
	if kind == "volumes" {
		id = obj.Name
	}
	return p.visible(id, obj.Name, labels), nil
}

// filterList drops objects the test does not own from list responses.
func (p *ScopeProxy) filterList(resp *http.Response) error {
	req := resp.Request
	path := versionRE.ReplaceAllString(req.URL.Path, "")
	if req.Method != http.MethodGet || resp.StatusCode != http.StatusOK || !listRE.MatchString(path) {
		return nil
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	type item struct {
		ID     string            `json:"Id"`
		Name   string            `json:"Name"`
		Names  []string          `json:"Names"`
		Labels map[string]string `json:"Labels"`
	}
	keep := func(raw json.RawMessage) (bool, error) {
		var it item
		if err := json.Unmarshal(raw, &it); err != nil {
			return false, err
		}
		name := it.Name
		if len(it.Names) > 0 {
			name = it.Names[0]
		}
		id := it.ID
		if id == "" {
			id = it.Name // volumes are identified by name
		}
		return p.visible(id, name, it.Labels), nil
	}
	filter := func(in []json.RawMessage) ([]json.RawMessage, error) {
		out := []json.RawMessage{}
		for _, raw := range in {
			ok, err := keep(raw)
			if err != nil {
				return nil, err
			}
			if ok {
				out = append(out, raw)
			}
		}
		return out, nil
	}
	var filtered []byte
	if path == "/volumes" {
		var v map[string]json.RawMessage
		if err := json.Unmarshal(body, &v); err != nil {
			return fmt.Errorf("scope proxy: decoding volume list: %w", err)
		}
		var vols []json.RawMessage
		if raw := v["Volumes"]; len(raw) > 0 && string(raw) != "null" {
			if err := json.Unmarshal(raw, &vols); err != nil {
				return fmt.Errorf("scope proxy: decoding volume list: %w", err)
			}
		}
		vols, err = filter(vols)
		if err != nil {
			return err
		}
		v["Volumes"], _ = json.Marshal(vols)
		filtered, err = json.Marshal(v)
	} else {
		var items []json.RawMessage
		if err := json.Unmarshal(body, &items); err != nil {
			return fmt.Errorf("scope proxy: decoding %s: %w", path, err)
		}
		items, err = filter(items)
		if err != nil {
			return err
		}
		filtered, err = json.Marshal(items)
	}
	if err != nil {
		return err
	}
	resp.Body = io.NopCloser(bytes.NewReader(filtered))
	resp.ContentLength = int64(len(filtered))
	resp.TransferEncoding = nil
	resp.Header.Set("Content-Length", strconv.Itoa(len(filtered)))
	return nil
}
