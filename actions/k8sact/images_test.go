package k8sact

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/podspawn/podspawn/observed/k8sobs"
)

func TestRemoteImage(t *testing.T) {
	for in, want := range map[string]string{
		"podspawn/web:podfile-1": "r:5000/ps/podspawn/web:podfile-1",
		"postgres:16":            "postgres:16",
		"ubuntu:24.04":           "ubuntu:24.04",
	} {
		if got := RemoteImage("r:5000/ps", in); got != want {
			t.Errorf("RemoteImage(%q) = %q, want %q", in, got, want)
		}
	}
	if got := RemoteImage("", "podspawn/web:1"); got != "podspawn/web:1" {
		t.Errorf("without a registry: %q", got)
	}
	if k8sobs.RegistryURL("127.0.0.1:15000") != "http://127.0.0.1:15000" || k8sobs.RegistryURL("registry.example.com") != "https://registry.example.com" {
		t.Error("RegistryURL: loopback is http, others https")
	}
}

func TestImageExistsAsksTheRegistry(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead && r.URL.Path == "/v2/podspawn/web/manifests/podfile-1" {
			return
		}
		http.NotFound(w, r)
	}))
	defer srv.Close()
	i := Images{Registry: strings.TrimPrefix(srv.URL, "http://")}
	if ok, err := i.ImageExists(context.Background(), "podspawn/web:podfile-1"); !ok || err != nil {
		t.Fatalf("pushed image: %v, %v", ok, err)
	}
	if ok, err := i.ImageExists(context.Background(), "podspawn/web:podfile-2"); ok || err != nil {
		t.Fatalf("missing image: %v, %v", ok, err)
	}
	if _, err := (Images{}).ImageExists(context.Background(), "podspawn/web:1"); err == nil || !strings.Contains(err.Error(), "kubernetes.image_registry") {
		t.Fatalf("no registry: %v", err)
	}
}
