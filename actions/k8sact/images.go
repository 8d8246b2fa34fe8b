package k8sact

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/observed/k8sobs"
)

// Images is actions.Images on Kubernetes: project images are built on the
// podspawn host (Build, Docker as today) and pushed to Registry (Push),
// where the cluster pulls them from. Registry is kubernetes.image_registry:
// host[:port][/path], plain http on a loopback host, https elsewhere, no
// credentials.
type Images struct {
	Registry string
	Build    func(ctx context.Context, tag, dockerfile string) (string, error)
	Push     func(ctx context.Context, local, remote string) error
	HTTP     *http.Client
}

var _ actions.Images = Images{}

var errNoRegistry = errors.New("project images need kubernetes.image_registry: the cluster pulls them from there")

// ImageExists reports whether the registry has ref.
func (i Images) ImageExists(ctx context.Context, ref string) (bool, error) {
	if i.Registry == "" {
		return false, errNoRegistry
	}
	repo, tag, ok := splitRef(RemoteImage(i.Registry, ref))
	if !ok {
		return false, fmt.Errorf("image reference %q has no tag", ref)
	}
	host, path, _ := strings.Cut(repo, "/")
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, k8sobs.RegistryURL(host)+"/v2/"+path+"/manifests/"+tag, nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, "+
		"application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json")
	c := i.HTTP
	if c == nil {
		c = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := c.Do(req)
	if err != nil {
		return false, fmt.Errorf("asking registry %s for %s: %w", host, ref, err)
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return true, nil
	case http.StatusNotFound:
		return false, nil
	}
	return false, fmt.Errorf("asking registry %s for %s: %s", host, ref, resp.Status)
}

// BuildImage builds tag on the host and pushes it to the registry.
func (i Images) BuildImage(ctx context.Context, tag, dockerfile string) (string, error) {
	if i.Registry == "" {
		return "", errNoRegistry
	}
	out, err := i.Build(ctx, tag, dockerfile)
	if err != nil {
		return out, err
	}
	return out, i.Push(ctx, tag, RemoteImage(i.Registry, tag))
}

// RemoteImage is where the cluster pulls image from: podspawn's project
// images (podspawn/<project>:podfile-<hash>) from the registry, any other
// image by its own name.
func RemoteImage(registry, image string) string {
	if registry == "" || !strings.HasPrefix(image, "podspawn/") {
		return image
	}
	return registry + "/" + image
}

// splitRef splits host/path/name:tag at the tag's colon.
func splitRef(ref string) (repo, tag string, ok bool) {
	i := strings.LastIndex(ref, ":")
	if i < 0 || strings.Contains(ref[i:], "/") {
		return "", "", false
	}
	return ref[:i], ref[i+1:], true
}
