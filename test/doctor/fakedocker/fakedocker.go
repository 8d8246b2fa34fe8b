// Package fakedocker serves a tiny fake Docker Engine API on a unix socket,
// so doctor's Docker checks can pass, fail and hang on demand in tests.
package fakedocker

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/system"
)

// FakeDocker configures the fake daemon.
type FakeDocker struct {
	// ServerVersion is returned by /info.
	ServerVersion string
	// Images maps a reference (as the client sends it) to an image id.
	Images map[string]string
	// Hang makes every API call except /_ping block until the client gives
	// up or the test ends.
	Hang bool
	// AddressPools is /info's DefaultAddressPools; empty is a daemon.json
	// without "default-address-pools" (Docker's built-in pools).
	AddressPools []system.NetworkAddressPool
	// Networks are served by GET /networks; nil serves DefaultNetworks,
	// an empty non-nil slice no network at all.
	Networks []Network
}

// Network is one network in the GET /networks answer.
type Network struct {
	Name string
	// Subnets are the IPAM subnets, IPv4 or IPv6.
	Subnets []string
	// Labels and Options (the driver's) as dockerd lists them.
	Labels, Options map[string]string
}

// DefaultNetworks are the networks of a fresh dockerd with default pools.
func DefaultNetworks() []Network {
	return []Network{{Name: "bridge", Subnets: []string{"172.17.0.0/16"}}, {Name: "host"}, {Name: "none"}}
}

// summaries renders ns the way dockerd lists networks.
func summaries(ns []Network) []network.Summary {
	out := []network.Summary{}
	for i, n := range ns {
		s := network.Summary{Name: n.Name, ID: fmt.Sprintf("%064x", i+1), Scope: "local", Driver: "bridge",
			IPAM: network.IPAM{Driver: "default", Config: []network.IPAMConfig{}}, Labels: n.Labels, Options: n.Options}
		if d, ok := map[string]string{"host": "host", "none": "null"}[n.Name]; ok {
			s.Driver = d
		}
		for _, sub := range n.Subnets {
			s.IPAM.Config = append(s.IPAM.Config, network.IPAMConfig{Subnet: sub})
		}
		out = append(out, s)
	}
	return out
}

var versionPrefix = regexp.MustCompile(`^/v[0-9.]+`)

// Start serves f on a fresh unix socket and returns its path. The socket
// lives in a short temporary directory (sun_path is 108 bytes) that is
// removed with the server when the test ends.
func Start(t testing.TB, f FakeDocker) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pdoc")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "docker.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var once sync.Once
	mux := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path := versionPrefix.ReplaceAllString(r.URL.Path, "")
		w.Header().Set("Api-Version", "1.43")
		w.Header().Set("Ostype", "linux")
		if path == "/_ping" {
			w.Write([]byte("OK"))
			return
		}
		if f.Hang {
			select {
			case <-r.Context().Done():
			case <-stop:
			}
			return
		}
		w.Header().Set("Content-Type", "application/json")
		switch {
		case path == "/info":
			info := map[string]any{"ServerVersion": f.ServerVersion, "OSType": "linux"}
			if len(f.AddressPools) > 0 {
				info["DefaultAddressPools"] = f.AddressPools
			}
			json.NewEncoder(w).Encode(info)
		case path == "/networks" && r.Method == http.MethodGet:
			nets := f.Networks
			if nets == nil {
				nets = DefaultNetworks()
			}
			json.NewEncoder(w).Encode(summaries(nets))
		case path == "/containers/json" && r.Method == http.MethodGet:
			// No containers: doctor's removal guard plans against an empty host.
			json.NewEncoder(w).Encode([]any{})
		case path == "/volumes" && r.Method == http.MethodGet:
			json.NewEncoder(w).Encode(map[string]any{"Volumes": []any{}})
		case strings.HasPrefix(path, "/images/") && strings.HasSuffix(path, "/json"):
			ref := strings.TrimSuffix(strings.TrimPrefix(path, "/images/"), "/json")
			id, ok := f.Images[ref]
			if !ok {
				w.WriteHeader(http.StatusNotFound)
				json.NewEncoder(w).Encode(map[string]string{"message": "No such image: " + ref})
				return
			}
			json.NewEncoder(w).Encode(map[string]any{"Id": id, "RepoTags": []string{ref}})
		default:
			w.WriteHeader(http.StatusNotFound)
			json.NewEncoder(w).Encode(map[string]string{"message": "page not found"})
		}
	})
	srv := &httptest.Server{Listener: l, Config: &http.Server{Handler: mux}}
	srv.Start()
	t.Cleanup(func() {
		once.Do(func() { close(stop) })
		srv.Close()
		os.RemoveAll(dir)
	})
	return sock
}
