package k8sact

import (
	"context"
	"errors"
	"fmt"
)

// Images is actions.Images on Kubernetes. Project images (Podfiles) are
// not built for the cluster yet: building on the host and pushing to
// kubernetes.image_registry is left to a follow-up, so both calls say so
// instead of pretending an image is there.
type Images struct{ Registry string }

var errNoProjectImages = errors.New("project images are not supported on the kubernetes runtime yet (building on the host and pushing to kubernetes.image_registry is not implemented)")

// ImageExists reports an error: see Images.
func (i Images) ImageExists(_ context.Context, ref string) (bool, error) {
	return false, fmt.Errorf("image %s: %w", ref, errNoProjectImages)
}

// BuildImage reports an error: see Images.
func (i Images) BuildImage(_ context.Context, tag, _ string) (string, error) {
	return "", fmt.Errorf("image %s: %w", tag, errNoProjectImages)
}
