package projects_test

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
	"strconv"
	"strings"
	"testing"
)

// scopeProxy sits between a podspawn cleanup pass and the shared Docker
// daemon. cleanup treats managed-by=podspawn objects without an instance
// label as its own, so a real pass on a daemon that other engineers' tests
// use could reap their objects. Through the proxy, list responses hold
// only objects of this test's instance, and removing anything else is
// refused. Everything else passes through.
type scopeProxy struct {
	sock     string
	instance string
	direct   *http.Client
	rp       *httputil.ReverseProxy
}

var (
	apiVersionRE = regexp.MustCompile(`^/v[0-9.]+`)
	listPathRE   = regexp.MustCompile(`^/(containers/json|networks|volumes)$`)
	removePathRE = regexp.MustCompile(`^/(containers|networks|volumes)/([^/]+)$`)
	stopPathRE   = regexp.MustCompile(`^/containers/([^/]+)/(stop|kill|restart|pause|rename|update)$`)
)

func newScopeProxy(t testing.TB, instance string) *scopeProxy {
	t.Helper()
	upstream := "/var/run/docker.sock"
	if h := os.Getenv("DOCKER_HOST"); strings.HasPrefix(h, "unix://") {
		upstream = strings.TrimPrefix(h, "unix://")
	}
	// t.TempDir() can exceed the 108-byte limit of socket paths.
	dir, err := os.MkdirTemp("", "pjproxy")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", upstream)
	}}
	p := &scopeProxy{sock: filepath.Join(dir, "docker.sock"), instance: instance, direct: &http.Client{Transport: tr}}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.Out.URL.Scheme, r.Out.URL.Host, r.Out.Host = "http", "docker", "docker"
		},
		Transport:      tr,
		FlushInterval:  -1,
		ModifyResponse: p.filterList,
		ErrorLog:       log.New(io.Discard, "", 0),
	}
	ln, err := net.Listen("unix", p.sock)
	if err != nil {
		t.Fatalf("scope proxy: %v", err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(p.serve)}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return p
}

// Host is the DOCKER_HOST value that goes through the proxy.
func (p *scopeProxy) Host() string { return "unix://" + p.sock }

func (p *scopeProxy) mineLabels(labels map[string]string) bool {
	return labels["podspawn.instance"] == p.instance
}

func (p *scopeProxy) serve(w http.ResponseWriter, r *http.Request) {
	path := apiVersionRE.ReplaceAllString(r.URL.Path, "")
	var kind, ref string
	if m := removePathRE.FindStringSubmatch(path); r.Method == http.MethodDelete && m != nil {
		kind, ref = m[1], m[2]
	} else if m := stopPathRE.FindStringSubmatch(path); r.Method == http.MethodPost && m != nil {
		kind, ref = "containers", m[1]
	}
	if kind != "" {
		ok, err := p.mine(r.Context(), kind, ref)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		if !ok {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			json.NewEncoder(w).Encode(map[string]string{"message": fmt.Sprintf("scope proxy: %s %s was not created by this test", kind, ref)})
			return
		}
	}
	p.rp.ServeHTTP(w, r)
}

// mine inspects ref directly; a missing object is harmless to remove.
func (p *scopeProxy) mine(ctx context.Context, kind, ref string) (bool, error) {
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
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return true, nil
	}
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("scope proxy: inspecting %s %s: status %d", kind, ref, resp.StatusCode)
	}
	var obj struct {
		Labels map[string]string `json:"Labels"`
		Config *struct {
			Labels map[string]string `json:"Labels"`
		} `json:"Config"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&obj); err != nil {
		return false, err
	}
	if obj.Config != nil {
		return p.mineLabels(obj.Config.Labels), nil
	}
	return p.mineLabels(obj.Labels), nil
}

func (p *scopeProxy) filterList(resp *http.Response) error {
	path := apiVersionRE.ReplaceAllString(resp.Request.URL.Path, "")
	if resp.Request.Method != http.MethodGet || resp.StatusCode != http.StatusOK || !listPathRE.MatchString(path) {
		return nil
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	filter := func(in []json.RawMessage) ([]json.RawMessage, error) {
		out := []json.RawMessage{}
		for _, raw := range in {
			var it struct {
				Labels map[string]string `json:"Labels"`
			}
			if err := json.Unmarshal(raw, &it); err != nil {
				return nil, err
			}
			if p.mineLabels(it.Labels) {
				out = append(out, raw)
			}
		}
		return out, nil
	}
	var out []byte
	if path == "/volumes" {
		var v map[string]json.RawMessage
		if err := json.Unmarshal(body, &v); err != nil {
			return err
		}
		var vols []json.RawMessage
		if raw := v["Volumes"]; len(raw) > 0 && string(raw) != "null" {
			if err := json.Unmarshal(raw, &vols); err != nil {
				return err
			}
		}
		if vols, err = filter(vols); err != nil {
			return err
		}
		v["Volumes"], _ = json.Marshal(vols)
		out, err = json.Marshal(v)
	} else {
		var items []json.RawMessage
		if err := json.Unmarshal(body, &items); err != nil {
			return err
		}
		if items, err = filter(items); err != nil {
			return err
		}
		out, err = json.Marshal(items)
	}
	if err != nil {
		return err
	}
	resp.Body = io.NopCloser(bytes.NewReader(out))
	resp.ContentLength = int64(len(out))
	resp.TransferEncoding = nil
	resp.Header.Set("Content-Length", strconv.Itoa(len(out)))
	return nil
}
