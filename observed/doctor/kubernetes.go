package doctor

import (
	"context"
	"debug/elf"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podspawn/podspawn/desired/config"
	"github.com/podspawn/podspawn/observed/k8sobs"
	"github.com/podspawn/podspawn/observed/k8sobs/kubeapi"
)

// Kube is what the Kubernetes checks read (runtime: kubernetes).
type Kube struct {
	// API is nil when the client could not be built (Err says why).
	API kubeapi.API
	Err error
	// Host is the API server's address, for the messages.
	Host string
	// HTTP reaches kubernetes.image_registry (nil: a default client).
	HTTP *http.Client
	// RegistryAuth reads the push credentials of kubernetes.image_registry_auth
	// for the registry (nil: not checked).
	RegistryAuth func(file, registry string) (string, error)
}

// Permission is one right podspawn uses in its namespace, as the Role of
// hack/k8s/podspawn-rbac.yaml grants it.
type Permission struct {
	Group, Resource, Subresource, Verb string
}

func (p Permission) String() string {
	r := p.Resource
	if p.Subresource != "" {
		r += "/" + p.Subresource
	}
	if p.Group != "" {
		r += "." + p.Group
	}
	return p.Verb + " " + r
}

// Permissions are the rights podspawn's credentials need in its namespace
// (the Role of hack/k8s/podspawn-rbac.yaml; a test keeps the two equal).
func Permissions() []Permission {
	var out []Permission
	add := func(group, resource, sub string, verbs ...string) {
		for _, v := range verbs {
			out = append(out, Permission{Group: group, Resource: resource, Subresource: sub, Verb: v})
		}
	}
	add("", "pods", "", "get", "list", "watch", "create", "delete")
	add("", "pods", "exec", "create", "get")
	add("", "persistentvolumeclaims", "", "get", "list", "watch", "create", "delete")
	add("networking.k8s.io", "networkpolicies", "", "get", "list", "watch", "create", "delete")
	// Only doctor's: the pull secrets exist (checkKubePullSecrets).
	add("", "secrets", "", "get")
	return out
}

// enforcingPlugins are network plugins known to enforce NetworkPolicy:
// the API groups of their custom resources (visible to every
// authenticated user through discovery), and the name prefix of their
// Pods in kube-system (when podspawn may list those).
var enforcingPlugins = []struct{ name, group, podPrefix string }{
	{"calico", "crd.projectcalico.org", "calico-node"},
	{"cilium", "cilium.io", "cilium"},
	{"antrea", "crd.antrea.io", "antrea-agent"},
	{"kube-router", "", "kube-router"},
	{"weave-net", "", "weave-net"},
}

// kubeChecks run only with runtime: kubernetes.
func kubeChecks() []check {
	hang := "the API server accepted the connection but did not answer; check it (kubectl get --raw /readyz)"
	return []check{
		{name: "Kubernetes API server", needsConfig: true, run: checkKubeAPI, hangFix: hang},
		{name: "Kubernetes namespace", needsConfig: true, run: checkKubeNamespace, hangFix: hang},
		{name: "Kubernetes permissions", needsConfig: true, run: checkKubePermissions, hangFix: hang, timeout: 30 * time.Second},
		{name: "image registry", needsConfig: true, run: checkImageRegistry, hangFix: "the registry accepted the connection but did not answer"},
		{name: "image pull secrets", needsConfig: true, run: checkKubePullSecrets, hangFix: hang},
		{name: "network policy enforcement", needsConfig: true, run: checkNetworkPolicyPlugin, hangFix: hang},
		{name: "agent relay", needsConfig: true, run: checkAgentRelay},
	}
}

// checkAgentRelay reads the agent relay program that spawn copies into
// session Pods for ssh -A: it must be there and static, since it runs in
// session images of any libc (or none).
func checkAgentRelay(_ context.Context, e *Env) Result {
	if !e.Config.SSH.AllowAgentForwarding {
		return Result{Status: Pass, Detail: "not needed: agent forwarding is off (ssh.allow_agent_forwarding)"}
	}
	path := e.Config.Kubernetes.AgentRelayPath(e.Binary)
	fix := fmt.Sprintf("build it from podspawn's source with CGO_ENABLED=0 go build -o %s ./cmd/agentrelay, or set kubernetes.agent_relay in %s", path, e.ConfigPath)
	f, err := elf.Open(path)
	if err != nil {
		return Result{Status: Fail, Detail: fmt.Sprintf("%s: %v; ssh -A connections get no agent", path, err), Fix: fix}
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return Result{Status: Fail, Detail: path + " is dynamically linked: session images need not have its libraries", Fix: fix}
		}
	}
	// The nodes' architecture is not readable with podspawn's namespaced
	// Role; a node selector that names one is.
	if want := e.Config.Kubernetes.NodeSelector[archLabel]; want != "" {
		if got, known := goArch[f.Machine]; known && got != want {
			return Result{Status: Fail,
				Detail: fmt.Sprintf("%s is built for %s but kubernetes.node_selector puts sessions on %s=%s nodes; ssh -A connections get no agent", path, got, archLabel, want),
				Fix:    fmt.Sprintf("build it for the nodes: CGO_ENABLED=0 GOARCH=%s go build -o %s ./cmd/agentrelay", want, path)}
		}
	}
	return Result{Status: Pass, Detail: fmt.Sprintf("%s: static %s program (session Pods' nodes must run this architecture)", path, f.Machine)}
}

// archLabel is the well-known node label of a node's CPU architecture.
const archLabel = "kubernetes.io/arch"

// goArch names ELF machines as Go and Kubernetes do (kubernetes.io/arch
// takes GOARCH's values).
var goArch = map[elf.Machine]string{
	elf.EM_X86_64: "amd64", elf.EM_AARCH64: "arm64", elf.EM_386: "386", elf.EM_ARM: "arm",
	elf.EM_PPC64: "ppc64le", elf.EM_S390: "s390x", elf.EM_RISCV: "riscv64",
}

// kubeAPI is the client, or a failed result saying why there is none.
func kubeAPI(e *Env) (kubeapi.API, *Result) {
	if e.Kube.API == nil {
		return nil, &Result{Status: Fail, Detail: fmt.Sprintf("no Kubernetes client: %v", e.Kube.Err),
			Fix: "set kubernetes.kubeconfig in " + e.ConfigPath + " to a readable kubeconfig (empty: podspawn runs in a Pod of the cluster)"}
	}
	return e.Kube.API, nil
}

func checkKubeAPI(ctx context.Context, e *Env) Result {
	api, r := kubeAPI(e)
	if r != nil {
		return *r
	}
	v, err := api.ServerVersion(ctx)
	if err != nil {
		return Result{Status: Fail, Detail: fmt.Sprintf("API server %s: %v", e.Kube.Host, err),
			Fix: "start the API server or fix kubernetes.kubeconfig (server address, credentials)"}
	}
	return Result{Status: Pass, Detail: fmt.Sprintf("%s at %s", v.GitVersion, e.Kube.Host)}
}

// checkKubeNamespace reads the namespace; with a namespaced Role (no
// rights on namespaces) a server-side dry run of a NetworkPolicy there
// says whether it exists without creating anything.
func checkKubeNamespace(ctx context.Context, e *Env) Result {
	api, r := kubeAPI(e)
	if r != nil {
		return *r
	}
	ns := e.Config.Kubernetes.Namespace
	missing := Result{Status: Fail, Detail: fmt.Sprintf("namespace %s does not exist", ns),
		Fix: "create it: kubectl apply -f hack/k8s/podspawn-rbac.yaml (with its namespace changed to " + ns + "), or set kubernetes.namespace"}
	_, err := api.Namespaces().Get(ctx, ns, metav1.GetOptions{})
	switch {
	case err == nil:
		return Result{Status: Pass, Detail: "namespace " + ns}
	case apierrors.IsNotFound(err):
		return missing
	case !apierrors.IsForbidden(err):
		return Result{Status: Fail, Detail: fmt.Sprintf("reading namespace %s: %v", ns, err), Fix: "check the API server"}
	}
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "podspawn-doctor-dry-run", Namespace: ns}}
	_, err = api.NetworkPolicies(ns).Create(ctx, np, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	switch {
	case err == nil || apierrors.IsAlreadyExists(err):
		return Result{Status: Pass, Detail: "namespace " + ns + " (seen through a dry-run create)"}
	case apierrors.IsNotFound(err):
		return missing
	}
	return Result{Status: Warn, Detail: fmt.Sprintf("cannot tell whether namespace %s exists: %v", ns, err),
		Fix: "check the namespace with kubectl get namespace " + ns}
}

// checkKubePermissions asks the API server, with a SelfSubjectAccessReview
// each, whether podspawn's credentials have every right it uses.
func checkKubePermissions(ctx context.Context, e *Env) Result {
	api, r := kubeAPI(e)
	if r != nil {
		return *r
	}
	ns := e.Config.Kubernetes.Namespace
	var missing []string
	asked := 0
	for _, p := range Permissions() {
		// Secrets are read by name only, the configured pull secrets (a
		// Role may grant just those with resourceNames); none, none asked.
		names := []string{""}
		if p.Resource == "secrets" {
			names = e.Config.Kubernetes.ImagePullSecrets
		}
		for _, name := range names {
			asked++
			review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
				ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: p.Verb, Group: p.Group, Resource: p.Resource, Subresource: p.Subresource, Name: name}}}
			got, err := api.SelfSubjectAccessReviews().Create(ctx, review, metav1.CreateOptions{})
			if err != nil {
				return Result{Status: Fail, Detail: fmt.Sprintf("asking whether podspawn may %s: %v", p, err),
					Fix: "SelfSubjectAccessReviews are open to every authenticated user (system:basic-user); check the credentials of kubernetes.kubeconfig"}
			}
			if !got.Status.Allowed {
				what := p.String()
				if name != "" {
					what += " " + name
				}
				missing = append(missing, what)
			}
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return Result{Status: Fail, Detail: fmt.Sprintf("missing in namespace %s: %s", ns, strings.Join(missing, ", ")),
			Fix: "bind podspawn's credentials to the Role of hack/k8s/podspawn-rbac.yaml in namespace " + ns}
	}
	return Result{Status: Pass, Detail: fmt.Sprintf("all %d permissions in namespace %s", asked, ns)}
}

// checkKubePullSecrets reads each Secret of kubernetes.image_pull_secrets:
// it must exist and hold registry credentials, or the kubelet pulls
// without them and the session's first login fails on the image.
func checkKubePullSecrets(ctx context.Context, e *Env) Result {
	k := e.Config.Kubernetes
	if len(k.ImagePullSecrets) == 0 {
		return Result{Status: Pass, Detail: "none set (kubernetes.image_pull_secrets): session images are pulled without credentials"}
	}
	api, r := kubeAPI(e)
	if r != nil {
		return *r
	}
	var bad []string
	for _, name := range k.ImagePullSecrets {
		s, err := api.Secrets(k.Namespace).Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			bad = append(bad, name+" does not exist")
		case apierrors.IsForbidden(err):
			return Result{Status: Warn, Detail: fmt.Sprintf("cannot check secret %s: %s", name, shortErr(err)),
				Fix: "grant get on the pull secrets (the Role of hack/k8s/podspawn-rbac.yaml), or check them with kubectl -n " + k.Namespace + " get secret"}
		case err != nil:
			return Result{Status: Fail, Detail: fmt.Sprintf("reading secret %s: %v", name, err), Fix: "check the API server"}
		case s.Type != corev1.SecretTypeDockerConfigJson && s.Type != corev1.SecretTypeDockercfg:
			bad = append(bad, fmt.Sprintf("%s is of type %s, not registry credentials", name, s.Type))
		}
	}
	if len(bad) > 0 {
		return Result{Status: Fail, Detail: fmt.Sprintf("in namespace %s: %s", k.Namespace, strings.Join(bad, "; ")),
			Fix: "kubectl -n " + k.Namespace + " create secret docker-registry NAME --docker-server=... , or fix kubernetes.image_pull_secrets in " + e.ConfigPath}
	}
	return Result{Status: Pass, Detail: fmt.Sprintf("%s in namespace %s", strings.Join(k.ImagePullSecrets, ", "), k.Namespace)}
}

// checkImageRegistry sends GET /v2/ to kubernetes.image_registry: 200, or
// 401 (a registry that wants credentials), is a registry.
func checkImageRegistry(ctx context.Context, e *Env) Result {
	reg := e.Config.Kubernetes.ImageRegistry
	if reg == "" {
		return Result{Status: Warn, Detail: "kubernetes.image_registry is not set: sessions of projects with a Podfile image cannot start",
			Fix: "set kubernetes.image_registry to a registry this host can push to and the cluster can pull from"}
	}
	host, _, _ := strings.Cut(reg, "/")
	url := k8sobs.RegistryURL(host) + "/v2/"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Result{Status: Fail, Detail: err.Error(), Fix: "fix kubernetes.image_registry in " + e.ConfigPath}
	}
	c := e.Kube.HTTP
	if c == nil {
		c = &http.Client{}
	}
	resp, err := c.Do(req)
	if err != nil {
		return Result{Status: Fail, Detail: fmt.Sprintf("GET %s: %v", url, err), Fix: "start the registry or fix kubernetes.image_registry"}
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK, http.StatusUnauthorized:
		return registryCredentials(e, fmt.Sprintf("GET %s: %s", url, resp.Status), resp.StatusCode == http.StatusUnauthorized)
	}
	return Result{Status: Fail, Detail: fmt.Sprintf("GET %s: %s, not a registry's answer", url, resp.Status),
		Fix: "point kubernetes.image_registry at a container registry (Docker Registry HTTP API v2)"}
}

// registryCredentials judges kubernetes.image_registry_auth once the
// registry answered: unreadable credentials fail, a registry that asks for
// credentials with none configured warns (the push will be refused).
func registryCredentials(e *Env, answered string, wantsAuth bool) Result {
	k := e.Config.Kubernetes
	switch {
	case k.ImageRegistryAuth != "" && e.Kube.RegistryAuth != nil:
		if _, err := e.Kube.RegistryAuth(k.ImageRegistryAuth, k.ImageRegistry); err != nil {
			return Result{Status: Fail, Detail: fmt.Sprintf("%s; %v", answered, err), Fix: "fix the file kubernetes.image_registry_auth names"}
		}
		return Result{Status: Pass, Detail: fmt.Sprintf("%s; push credentials from %s", answered, k.ImageRegistryAuth)}
	case k.ImageRegistryAuth == "" && wantsAuth:
		return Result{Status: Warn, Detail: answered + ": the registry asks for credentials and podspawn sends none, so pushing project images may be refused",
			Fix: "log in with docker --config DIR login and set kubernetes.image_registry_auth to DIR/config.json"}
	}
	return Result{Status: Pass, Detail: answered}
}

// checkNetworkPolicyPlugin looks for a network plugin known to enforce
// NetworkPolicy: its API group (discovery) or its Pods in kube-system.
func checkNetworkPolicyPlugin(ctx context.Context, e *Env) Result {
	api, r := kubeAPI(e)
	if r != nil {
		return *r
	}
	noPlugin := Result{Status: Warn,
		Detail: "no network plugin known to enforce NetworkPolicy found (calico, cilium, antrea, kube-router, weave-net): whether session Pods are isolated from each other depends on the cluster's network plugin",
		Fix:    "install a plugin that enforces NetworkPolicy, or accept that sessions can reach each other's Pods"}
	groups, err := api.ServerGroups(ctx)
	if err != nil {
		return Result{Status: Warn, Detail: fmt.Sprintf("listing API groups: %v; enforcement depends on the cluster's network plugin", err), Fix: noPlugin.Fix}
	}
	have := map[string]bool{}
	for _, g := range groups.Groups {
		have[g.Name] = true
	}
	for _, p := range enforcingPlugins {
		if p.group != "" && have[p.group] {
			return Result{Status: Pass, Detail: fmt.Sprintf("%s (API group %s)", p.name, p.group)}
		}
	}
	pods, err := api.Pods("kube-system").List(ctx, metav1.ListOptions{})
	if err != nil {
		noPlugin.Detail += fmt.Sprintf(" (kube-system's Pods not readable: %s)", shortErr(err))
		return noPlugin
	}
	for _, pod := range pods.Items {
		for _, p := range enforcingPlugins {
			if strings.HasPrefix(pod.Name, p.podPrefix) {
				return Result{Status: Pass, Detail: fmt.Sprintf("%s (pod kube-system/%s)", p.name, pod.Name)}
			}
		}
	}
	return noPlugin
}

func shortErr(err error) string {
	if apierrors.IsForbidden(err) {
		return "forbidden"
	}
	return err.Error()
}

// runsOnKubernetes says whether the Kubernetes checks apply.
func runsOnKubernetes(e *Env) bool {
	return e.ConfigErr == nil && e.Config.Runtime == config.RuntimeKubernetes
}
