package doctor

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"

	"github.com/podspawn/podspawn/observed/k8sobs/kubeapi/fromclientset"

	"github.com/google/go-cmp/cmp"
	"gopkg.in/yaml.v3"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/version"
	fakediscovery "k8s.io/client-go/discovery/fake"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/podspawn/podspawn/desired/config"
)

// kubeEnv is an Env with runtime: kubernetes on a fake clientset whose
// SelfSubjectAccessReviews allow everything but deny.
func kubeEnv(t *testing.T, registry string, deny ...Permission) (*Env, *fake.Clientset) {
	t.Helper()
	cs := fake.NewClientset(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "podspawn"}})
	cs.Discovery().(*fakediscovery.FakeDiscovery).FakedServerVersion = &version.Info{GitVersion: "v1.37.2"}
	cs.PrependReactor("create", "selfsubjectaccessreviews", func(a k8stesting.Action) (bool, k8sruntime.Object, error) {
		r := a.(k8stesting.CreateAction).GetObject().(*authorizationv1.SelfSubjectAccessReview).DeepCopy()
		ra := r.Spec.ResourceAttributes
		if ra.Namespace != "podspawn" {
			return true, nil, errors.New("review outside the namespace")
		}
		r.Status.Allowed = true
		for _, d := range deny {
			if d == (Permission{Group: ra.Group, Resource: ra.Resource, Subresource: ra.Subresource, Verb: ra.Verb}) {
				r.Status.Allowed = false
			}
		}
		return true, r, nil
	})
	cfg := config.Defaults()
	cfg.Runtime, cfg.Kubernetes.ImageRegistry = config.RuntimeKubernetes, registry
	return &Env{ConfigPath: "/etc/podspawn/config.yaml", Config: cfg, Kube: Kube{API: fromclientset.API(cs), Host: "https://127.0.0.1:16443"}}, cs
}

func TestKubernetesChecksPass(t *testing.T) {
	reg := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v2/" {
			http.NotFound(w, r)
		}
	}))
	defer reg.Close()
	e, cs := kubeEnv(t, strings.TrimPrefix(reg.URL, "http://")+"/podspawn")
	cs.Resources = []*metav1.APIResourceList{{GroupVersion: "crd.projectcalico.org/v1"}}
	ctx := context.Background()
	got := []Result{checkKubeAPI(ctx, e), checkKubeNamespace(ctx, e), checkKubePermissions(ctx, e), checkImageRegistry(ctx, e), checkNetworkPolicyPlugin(ctx, e)}
	want := []Result{
		{Status: Pass, Detail: "v1.37.2 at https://127.0.0.1:16443"},
		{Status: Pass, Detail: "namespace podspawn"},
		{Status: Pass, Detail: "all 17 permissions in namespace podspawn"},
		{Status: Pass, Detail: "GET " + reg.URL + "/v2/: 200 OK"},
		{Status: Pass, Detail: "calico (API group crd.projectcalico.org)"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("results (-want +got):\n%s", diff)
	}
}

func TestKubernetesChecksFail(t *testing.T) {
	reg := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "nope", http.StatusTeapot) }))
	defer reg.Close()
	e, cs := kubeEnv(t, strings.TrimPrefix(reg.URL, "http://"),
		Permission{Resource: "pods", Subresource: "exec", Verb: "create"}, Permission{Resource: "persistentvolumeclaims", Verb: "delete"})
	// A namespaced Role cannot read namespaces: the dry run tells.
	cs.PrependReactor("get", "namespaces", func(k8stesting.Action) (bool, k8sruntime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "namespaces"}, "podspawn", errors.New("no rights"))
	})
	cs.PrependReactor("create", "networkpolicies", func(k8stesting.Action) (bool, k8sruntime.Object, error) {
		return true, nil, apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, "podspawn")
	})
	cs.PrependReactor("list", "pods", func(k8stesting.Action) (bool, k8sruntime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "", errors.New("no rights"))
	})
	ctx := context.Background()
	got := []Result{checkKubeNamespace(ctx, e), checkKubePermissions(ctx, e), checkImageRegistry(ctx, e), checkNetworkPolicyPlugin(ctx, e)}
	for i := range got {
		got[i].Fix = ""
	}
	want := []Result{
		{Status: Fail, Detail: "namespace podspawn does not exist"},
		{Status: Fail, Detail: "missing in namespace podspawn: create pods/exec, delete persistentvolumeclaims"},
		{Status: Fail, Detail: "GET " + reg.URL + "/v2/: 418 I'm a teapot, not a registry's answer"},
		{Status: Warn, Detail: "no network plugin known to enforce NetworkPolicy found (calico, cilium, antrea, kube-router, weave-net): whether session Pods are isolated from each other depends on the cluster's network plugin (kube-system's Pods not readable: forbidden)"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("results (-want +got):\n%s", diff)
	}
	// A plugin found by its Pods when kube-system is readable.
	e2, cs2 := kubeEnv(t, "")
	cs2.Tracker().Add(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "kube-router-x7k2p", Namespace: "kube-system"}})
	if r := checkNetworkPolicyPlugin(ctx, e2); r.Status != Pass || r.Detail != "kube-router (pod kube-system/kube-router-x7k2p)" {
		t.Fatalf("kube-router: %+v", r)
	}
	if r := checkImageRegistry(ctx, e2); r.Status != Warn {
		t.Fatalf("no registry: %+v", r)
	}
	e2.Kube = Kube{Err: errors.New("kubeconfig missing")}
	if r := checkKubeAPI(ctx, e2); r.Status != Fail || !strings.Contains(r.Detail, "kubeconfig missing") {
		t.Fatalf("no client: %+v", r)
	}
}

func TestImageRegistryCredentials(t *testing.T) {
	reg := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "login first", http.StatusUnauthorized)
	}))
	defer reg.Close()
	ctx := context.Background()
	e, _ := kubeEnv(t, strings.TrimPrefix(reg.URL, "http://"))
	answered := "GET " + reg.URL + "/v2/: 401 Unauthorized"
	if r := checkImageRegistry(ctx, e); r.Status != Warn || !strings.HasPrefix(r.Detail, answered+": the registry asks for credentials") {
		t.Fatalf("no credentials configured: %+v", r)
	}
	e.Config.Kubernetes.ImageRegistryAuth = "/etc/podspawn/registry/config.json"
	var asked []string
	e.Kube.RegistryAuth = func(file, registry string) (string, error) {
		asked = append(asked, file+" "+registry)
		if len(asked) > 1 {
			return "", errors.New("registry credentials file " + file + " has no credentials for " + registry)
		}
		return "e30=", nil
	}
	if r := checkImageRegistry(ctx, e); r.Status != Pass || r.Detail != answered+"; push credentials from /etc/podspawn/registry/config.json" {
		t.Fatalf("credentials configured: %+v", r)
	}
	if r := checkImageRegistry(ctx, e); r.Status != Fail || !strings.Contains(r.Detail, "has no credentials for") {
		t.Fatalf("unusable credentials: %+v", r)
	}
	want := e.Config.Kubernetes.ImageRegistryAuth + " " + e.Config.Kubernetes.ImageRegistry
	if diff := cmp.Diff([]string{want, want}, asked); diff != "" {
		t.Fatalf("credentials read (-want +got):\n%s", diff)
	}
}

// Permissions is the Role of hack/k8s/podspawn-rbac.yaml, right by right.
func TestPermissionsMatchTheRBACManifest(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	f, err := os.Open(filepath.Join(filepath.Dir(file), "..", "..", "hack", "k8s", "podspawn-rbac.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var manifest []string
	dec := yaml.NewDecoder(f)
	for {
		var doc struct {
			Kind  string `yaml:"kind"`
			Rules []struct {
				APIGroups []string `yaml:"apiGroups"`
				Resources []string `yaml:"resources"`
				Verbs     []string `yaml:"verbs"`
			} `yaml:"rules"`
		}
		if err := dec.Decode(&doc); err != nil {
			break
		}
		if doc.Kind != "Role" {
			continue
		}
		for _, r := range doc.Rules {
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					res, sub, _ := strings.Cut(res, "/")
					for _, v := range r.Verbs {
						manifest = append(manifest, Permission{Group: g, Resource: res, Subresource: sub, Verb: v}.String())
					}
				}
			}
		}
	}
	var code []string
	for _, p := range Permissions() {
		code = append(code, p.String())
	}
	sort.Strings(manifest)
	sort.Strings(code)
	if diff := cmp.Diff(manifest, code); diff != "" {
		t.Fatalf("the Role of podspawn-rbac.yaml (-) and doctor's Permissions (+) differ:\n%s", diff)
	}
}

// The pull secrets must exist and hold registry credentials; get on them
// is asked name by name (a Role may grant only those), and not at all
// without pull secrets.
func TestKubernetesPullSecrets(t *testing.T) {
	ctx := context.Background()
	e, cs := kubeEnv(t, "")
	var asked []string
	cs.PrependReactor("create", "selfsubjectaccessreviews", func(a k8stesting.Action) (bool, k8sruntime.Object, error) {
		if ra := a.(k8stesting.CreateAction).GetObject().(*authorizationv1.SelfSubjectAccessReview).Spec.ResourceAttributes; ra.Resource == "secrets" {
			asked = append(asked, ra.Verb+" "+ra.Name)
		}
		return false, nil, nil
	})
	if r := checkKubePullSecrets(ctx, e); r.Status != Pass || !strings.HasPrefix(r.Detail, "none set") {
		t.Fatalf("no pull secrets: %+v", r)
	}
	if r := checkKubePermissions(ctx, e); r != (Result{Status: Pass, Detail: "all 17 permissions in namespace podspawn"}) || len(asked) != 0 {
		t.Fatalf("permissions without pull secrets: %+v, secrets asked %v", r, asked)
	}
	e.Config.Kubernetes.ImagePullSecrets = []string{"regcred", "gone", "plain"}
	cs.Tracker().Add(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "regcred", Namespace: "podspawn"}, Type: corev1.SecretTypeDockerConfigJson})
	cs.Tracker().Add(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "plain", Namespace: "podspawn"}, Type: corev1.SecretTypeOpaque})
	r := checkKubePullSecrets(ctx, e)
	if r.Status != Fail || r.Detail != "in namespace podspawn: gone does not exist; plain is of type Opaque, not registry credentials" {
		t.Fatalf("missing and opaque: %+v", r)
	}
	e.Config.Kubernetes.ImagePullSecrets = []string{"regcred"}
	if r := checkKubePullSecrets(ctx, e); r != (Result{Status: Pass, Detail: "regcred in namespace podspawn"}) {
		t.Fatalf("present: %+v", r)
	}
	if r := checkKubePermissions(ctx, e); r.Status != Pass || r.Detail != "all 18 permissions in namespace podspawn" || !cmp.Equal(asked, []string{"get regcred"}) {
		t.Fatalf("permissions with a pull secret: %+v, secrets asked %v", r, asked)
	}
	cs.PrependReactor("get", "secrets", func(k8stesting.Action) (bool, k8sruntime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, "regcred", errors.New("no rights"))
	})
	if r := checkKubePullSecrets(ctx, e); r.Status != Warn || r.Detail != "cannot check secret regcred: forbidden" {
		t.Fatalf("forbidden: %+v", r)
	}
}

// elfFile writes a minimal 64-bit little-endian ELF executable for
// x86-64 with a program header per given type.
func elfFile(t *testing.T, progs ...elf.ProgType) string {
	t.Helper()
	var b bytes.Buffer
	hdr := elf.Header64{Type: uint16(elf.ET_EXEC), Machine: uint16(elf.EM_X86_64), Version: uint32(elf.EV_CURRENT),
		Phoff: 64, Ehsize: 64, Phentsize: 56, Phnum: uint16(len(progs)), Shentsize: 64}
	copy(hdr.Ident[:], elf.ELFMAG)
	hdr.Ident[elf.EI_CLASS], hdr.Ident[elf.EI_DATA], hdr.Ident[elf.EI_VERSION] = byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)
	binary.Write(&b, binary.LittleEndian, hdr)
	for _, p := range progs {
		binary.Write(&b, binary.LittleEndian, elf.Prog64{Type: uint32(p)})
	}
	path := filepath.Join(t.TempDir(), "podspawn-agentrelay")
	if err := os.WriteFile(path, b.Bytes(), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestAgentRelayCheck(t *testing.T) {
	e, _ := kubeEnv(t, "")
	e.Binary = "/usr/local/bin/podspawn"
	if r := checkAgentRelay(context.Background(), e); r.Status != Pass || !strings.Contains(r.Detail, "agent forwarding is off") {
		t.Fatalf("forwarding off: %+v", r)
	}
	e.Config.SSH.AllowAgentForwarding = true
	static, dynamic := elfFile(t, elf.PT_LOAD), elfFile(t, elf.PT_INTERP, elf.PT_LOAD)
	for name, c := range map[string]struct {
		path   string
		status Status
		detail string
	}{
		"missing next to podspawn": {"", Fail, "/usr/local/bin/podspawn-agentrelay: open /usr/local/bin/podspawn-agentrelay: no such file or directory; ssh -A connections get no agent"},
		"static":                   {static, Pass, static + ": static EM_X86_64 program (session Pods' nodes must run this architecture)"},
		"dynamic":                  {dynamic, Fail, dynamic + " is dynamically linked: session images need not have its libraries"},
	} {
		e.Config.Kubernetes.AgentRelay = c.path
		r := checkAgentRelay(context.Background(), e)
		if r.Status != c.status || r.Detail != c.detail {
			t.Errorf("%s: %+v, want %s %q", name, r, c.status, c.detail)
		}
		if r.Status == Fail && !strings.Contains(r.Fix, "CGO_ENABLED=0 go build -o ") {
			t.Errorf("%s: fix %q", name, r.Fix)
		}
	}

	// A node selector naming another architecture than the relay's.
	e.Config.Kubernetes.AgentRelay = static
	e.Config.Kubernetes.NodeSelector = map[string]string{"kubernetes.io/arch": "arm64"}
	r := checkAgentRelay(context.Background(), e)
	want := static + " is built for amd64 but kubernetes.node_selector puts sessions on kubernetes.io/arch=arm64 nodes; ssh -A connections get no agent"
	if r.Status != Fail || r.Detail != want || r.Fix != "build it for the nodes: CGO_ENABLED=0 GOARCH=arm64 go build -o "+static+" ./cmd/agentrelay" {
		t.Errorf("other architecture: %+v, want Fail %q", r, want)
	}
	e.Config.Kubernetes.NodeSelector = map[string]string{"kubernetes.io/arch": "amd64"}
	if r := checkAgentRelay(context.Background(), e); r.Status != Pass {
		t.Errorf("same architecture: %+v, want Pass", r)
	}
}
