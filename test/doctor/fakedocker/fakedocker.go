// Package fakedocker serves a tiny fake Docker Engine API on a unix socket,
// so doctor's Docker checks can pass, fail and hang on demand in tests.
package fakedocker

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
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
			json.NewEncoder(w).Encode(map[string]any{"ServerVersion": f.ServerVersion, "OSType": "linux"})
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
