// Package k8sobs reads observed state from Kubernetes: the Pods,
// NetworkPolicies and PersistentVolumeClaims labelled
// app.kubernetes.io/managed-by=podspawn in one namespace, turned into the
// same observed.Objects Docker gives (one container object per container
// of a session's Pod, one network object per NetworkPolicy, one volume
// object per claim), so reconcile plans alike on both runtimes.
package k8sobs

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"strings"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/observed"
)

// Kubernetes labels and annotations of podspawn's objects. Label values
// are restricted ([A-Za-z0-9._-], alphanumeric at both ends, 63
// characters), and podspawn's user and project names may end with '_' or
// '-', so the exact names live in annotations; labels carry what
// selectors need.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// LabelKey is a hash of the session key: the selector of one key's
	// objects and of the NetworkPolicy's peers.
	LabelKey = "podspawn.io/key"
	// LabelContainer is a hash of the Docker-style container name, so an
	// inspect by that name is one selected list.
	LabelContainer = "podspawn.io/container"
	LabelInstance  = "podspawn.io/instance"
	LabelSession   = "podspawn.io/session"
	LabelRole      = "podspawn.io/role"
	// AnnotationLabels holds podspawn's labels of the object exactly, as
	// JSON (observed.Label* keys); observed.Object.Labels is read from it.
	AnnotationLabels = "podspawn.io/labels"
	AnnotationUser   = "podspawn.io/user"
	// AnnotationProject is absent for a session without a project.
	AnnotationProject = "podspawn.io/project"
	// AnnotationName is the Docker-style name of the object podspawn's
	// plan uses (podspawn-alice, podspawn-alice-net).
	AnnotationName = "podspawn.io/name"
	// AnnotationContainers maps each container of a Pod to the plan's
	// name and labels of that container (JSON list of ContainerMeta).
	AnnotationContainers = "podspawn.io/containers"
	// LabelKeep protects an object from removal, as Docker's podspawn.keep.
	LabelKeep = "podspawn.io/keep"
	// LabelHome marks a user's persistent home claim (its value is a hash
	// of the user name). A home is desired state, like Docker's home
	// directory, not an object of a session: Selector leaves it out, so
	// no pass ever sees it, let alone removes it as an orphan.
	LabelHome = "podspawn.io/home"
)

// Selector selects every session object podspawn manages (not the
// users' home claims).
const Selector = LabelManagedBy + "=" + observed.ManagedByValue + ",!" + LabelHome

// ContainerMeta is one container of a session Pod as the plan knows it.
type ContainerMeta struct {
	// Container is the container's name in the Pod spec.
	Container string            `json:"container"`
	Name      string            `json:"name"`
	Labels    map[string]string `json:"labels"`
}

// hash is a short hex digest; 16 hex digits (64 bits) make a collision
// between two sessions' names practically impossible, and a collision
// would still be caught: the exact names in the annotations are compared
// before an object is adopted or removed.
func hash(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// KeyHash is the value of LabelKey for k.
func KeyHash(k desired.SessionKey) string { return hash(k.User, k.Project) }

// NameHash is the value of LabelContainer for a Docker-style name.
func NameHash(name string) string { return hash(name) }

// ObjectName is the DNS-1123 name of a session's Pod and NetworkPolicy:
// readable (ps-<user>-<project>, '_' as '-', cut short) and injective
// through the hash of the exact user and project.
func ObjectName(k desired.SessionKey) string {
	readable := k.User
	if k.Project != "" {
		readable += "-" + k.Project
	}
	readable = strings.Trim(strings.ReplaceAll(readable, "_", "-"), "-")
	if len(readable) > 40 {
		readable = strings.TrimRight(readable[:40], "-")
	}
	return "ps-" + readable + "-" + KeyHash(k)
}

// ClaimName is the DNS-1123 name of the PersistentVolumeClaim of a
// session's named volume, whose Docker-style name is volume: the session's
// object name and a hash of the volume's name.
func ClaimName(k desired.SessionKey, volume string) string {
	return ObjectName(k) + "-" + NameHash(volume)[:10]
}

// HomeClaimName is the DNS-1123 name of user's persistent home claim:
// readable (ps-home-<user>) and injective through the hash of the exact
// name, which differs from every session's key hash.
func HomeClaimName(user string) string {
	readable := strings.Trim(strings.ReplaceAll(user, "_", "-"), "-")
	if len(readable) > 40 {
		readable = strings.TrimRight(readable[:40], "-")
	}
	return "ps-home-" + readable + "-" + HomeHash(user)
}

// HomeHash is the value of LabelHome for user.
func HomeHash(user string) string { return hash("home", user) }

// Labels are the Kubernetes labels of an object with podspawn's labels l
// (observed.Label* keys).
func Labels(k desired.SessionKey, name string, l map[string]string) map[string]string {
	out := map[string]string{
		LabelManagedBy: observed.ManagedByValue,
		LabelKey:       KeyHash(k),
		LabelContainer: NameHash(name),
	}
	for from, to := range map[string]string{observed.LabelInstance: LabelInstance, observed.LabelSession: LabelSession, observed.LabelRole: LabelRole, observed.LabelKeep: LabelKeep} {
		if v := l[from]; v != "" {
			out[to] = v
		}
	}
	return out
}

// Annotations are the annotations of an object named name (Docker-style)
// with podspawn's labels l.
func Annotations(k desired.SessionKey, name string, l map[string]string) (map[string]string, error) {
	js, err := json.Marshal(l)
	if err != nil {
		return nil, fmt.Errorf("encoding labels: %w", err)
	}
	a := map[string]string{AnnotationUser: k.User, AnnotationName: name, AnnotationLabels: string(js)}
	if k.Project != "" {
		a[AnnotationProject] = k.Project
	}
	return a, nil
}

// podspawnLabels reads an object's podspawn labels back: the exact ones
// from the annotation, with the selector labels that are authoritative on
// the object itself (an operator may set keep with kubectl label).
func podspawnLabels(labels, annotations map[string]string) map[string]string {
	l := map[string]string{}
	if js := annotations[AnnotationLabels]; js != "" {
		_ = json.Unmarshal([]byte(js), &l) // a damaged annotation reads as unlabelled: never ours to touch
	}
	if labels[LabelManagedBy] == observed.ManagedByValue {
		l[observed.LabelManagedBy] = observed.ManagedByValue
	} else {
		delete(l, observed.LabelManagedBy)
	}
	if v, ok := labels[LabelKeep]; ok {
		l[observed.LabelKeep] = v
	}
	// The instance label is what keeps a podspawn host off another's
	// objects: the selector label wins over the annotation.
	if v, ok := labels[LabelInstance]; ok {
		l[observed.LabelInstance] = v
	} else {
		delete(l, observed.LabelInstance)
	}
	return l
}

// RegistryURL is the base URL of the registry at host[:port]: http for a
// loopback registry (as Docker and containerd treat them), https for any
// other.
func RegistryURL(host string) string {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	if ip := net.ParseIP(h); h == "localhost" || (ip != nil && ip.IsLoopback()) {
		return "http://" + host
	}
	return "https://" + host
}
