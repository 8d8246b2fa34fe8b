package kubeapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
)

// TestRequests: each call goes to the path and with the query the API
// server expects, and its answer is decoded into the typed object; an API
// error keeps its status.
func TestRequests(t *testing.T) {
	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Method+" "+r.URL.Path+"?"+r.URL.RawQuery+" accept="+r.Header.Get("Accept"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/api/v1/namespaces/ns/pods":
			if r.Method == http.MethodPost {
				p, ok := decode(t, r).(*corev1.Pod)
				if !ok {
					w.WriteHeader(http.StatusBadRequest)
					return
				}
				p.UID = "u1"
				json.NewEncoder(w).Encode(p)
				return
			}
			json.NewEncoder(w).Encode(corev1.PodList{Items: []corev1.Pod{{ObjectMeta: metav1.ObjectMeta{Name: "a"}}}})
		case "/api/v1/namespaces/ns/persistentvolumeclaims/gone":
			o, ok := decode(t, r).(*metav1.DeleteOptions)
			if !ok || o.PropagationPolicy == nil || *o.PropagationPolicy != metav1.DeletePropagationBackground {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Success"}`))
		case "/apis/networking.k8s.io/v1/namespaces/ns/networkpolicies/np":
			w.WriteHeader(http.StatusNotFound)
			json.NewEncoder(w).Encode(metav1.Status{Status: metav1.StatusFailure, Reason: metav1.StatusReasonNotFound, Code: 404,
				Message: `networkpolicies.networking.k8s.io "np" not found`})
		case "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews":
			w.Write([]byte(`{"apiVersion":"authorization.k8s.io/v1","kind":"SelfSubjectAccessReview","status":{"allowed":true}}`))
		case "/version":
			w.Write([]byte(`{"major":"1","minor":"37","gitVersion":"v1.37.2"}`))
		case "/apis":
			w.Write([]byte(`{"kind":"APIGroupList","groups":[{"name":"networking.k8s.io","versions":[]}]}`))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	api, err := New(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	pods, err := api.Pods("ns").List(ctx, metav1.ListOptions{LabelSelector: "a=b"})
	if err != nil || len(pods.Items) != 1 || pods.Items[0].Name != "a" {
		t.Fatalf("list: %v %+v", err, pods)
	}
	created, err := api.Pods("ns").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "b"}}, metav1.CreateOptions{})
	if err != nil || created.Name != "b" || created.UID != "u1" {
		t.Fatalf("create: %v %+v", err, created)
	}
	background := metav1.DeletePropagationBackground
	if err := api.PersistentVolumeClaims("ns").Delete(ctx, "gone", metav1.DeleteOptions{PropagationPolicy: &background}); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := api.NetworkPolicies("ns").Get(ctx, "np", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("get of a missing policy: %v, want NotFound", err)
	}
	review, err := api.SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{}, metav1.CreateOptions{})
	if err != nil || !review.Status.Allowed {
		t.Fatalf("review: %+v", review)
	}
	v, err := api.ServerVersion(ctx)
	if err != nil || v.GitVersion != "v1.37.2" {
		t.Fatalf("version: %v %+v", err, v)
	}
	groups, err := api.ServerGroups(ctx)
	if err != nil || len(groups.Groups) != 1 || groups.Groups[0].Name != "networking.k8s.io" {
		t.Fatalf("groups: %v %+v", err, groups)
	}
	u := api.PodExecURL("ns", "p", &corev1.PodExecOptions{Container: "c", Command: []string{"sh", "-c", "true"}, Stdout: true, TTY: true})
	if u.Path != "/api/v1/namespaces/ns/pods/p/exec" {
		t.Errorf("exec path %s", u.Path)
	}
	if q := u.Query(); !cmp.Equal(q["command"], []string{"sh", "-c", "true"}) || q.Get("container") != "c" || q.Get("tty") != "true" || q.Get("stdout") != "true" {
		t.Errorf("exec query %s", u.RawQuery)
	}

	const typed = " accept=application/vnd.kubernetes.protobuf,application/json"
	want := []string{
		"GET /api/v1/namespaces/ns/pods?labelSelector=a%3Db" + typed,
		"POST /api/v1/namespaces/ns/pods?" + typed,
		"DELETE /api/v1/namespaces/ns/persistentvolumeclaims/gone?" + typed,
		"GET /apis/networking.k8s.io/v1/namespaces/ns/networkpolicies/np?" + typed,
		"POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews?" + typed,
		"GET /version? accept=application/json",
		"GET /apis? accept=application/json",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
}

// decode reads a request body the way the API server does: protobuf or
// JSON, by its content type.
func decode(t *testing.T, r *http.Request) runtime.Object {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		t.Error(err)
		return nil
	}
	if ct := r.Header.Get("Content-Type"); ct != runtime.ContentTypeProtobuf {
		t.Errorf("%s %s sent %q, want protobuf", r.Method, r.URL.Path, ct)
	}
	obj, _, err := codecs.UniversalDeserializer().Decode(body, nil, nil)
	if err != nil {
		t.Errorf("decoding the body of %s %s: %v", r.Method, r.URL.Path, err)
		return nil
	}
	return obj
}
