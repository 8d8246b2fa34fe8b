package k8sobs

import (
	"net/http"
	"testing"
)

func TestOperation(t *testing.T) {
	for _, tc := range []struct {
		method, path string
		watch        bool
		want         string
	}{
		{http.MethodGet, "/api/v1/namespaces/podspawn/pods", false, "pods.list"},
		{http.MethodGet, "/api/v1/namespaces/podspawn/pods", true, "pods.watch"},
		{http.MethodGet, "/api/v1/namespaces/podspawn/pods/ps-alice-x", false, "pods.get"},
		{http.MethodPost, "/api/v1/namespaces/podspawn/pods", false, "pods.create"},
		{http.MethodDelete, "/api/v1/namespaces/podspawn/pods/ps-alice-x", false, "pods.delete"},
		{http.MethodGet, "/api/v1/namespaces/podspawn/pods/ps-alice-x/exec", false, "pods.exec"},
		{http.MethodPost, "/api/v1/namespaces/podspawn/pods/ps-alice-x/exec", false, "pods.exec"},
		{http.MethodGet, "/apis/networking.k8s.io/v1/namespaces/podspawn/networkpolicies", false, "networkpolicies.list"},
		{http.MethodPatch, "/apis/networking.k8s.io/v1/namespaces/podspawn/networkpolicies/np", false, "networkpolicies.patch"},
		{http.MethodGet, "/api/v1/namespaces/podspawn", false, "other"},
		{http.MethodPost, "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", false, "other"},
		{http.MethodGet, "/version", false, "other"},
		{http.MethodOptions, "/api/v1/namespaces/podspawn/pods/p", false, "pods.other"},
	} {
		if got := Operation(tc.method, tc.path, tc.watch); got != tc.want {
			t.Errorf("Operation(%s, %s, %v) = %q, want %q", tc.method, tc.path, tc.watch, got, tc.want)
		}
	}
}
