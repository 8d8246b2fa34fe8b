package dockeract

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
)

// ImageInspector reads one local image.
type ImageInspector interface {
	ImageInspect(ctx context.Context, imageID string, inspectOpts ...client.ImageInspectOption) (image.InspectResponse, error)
}

// ImageAPI is the part of the Docker client that image builds use.
type ImageAPI interface {
	ImageInspector
	ImageBuild(ctx context.Context, buildContext io.Reader, options build.ImageBuildOptions) (build.ImageBuildResponse, error)
}

// ImageExists reports whether ref is present locally.
func ImageExists(ctx context.Context, api ImageInspector, ref string) (bool, error) {
	_, err := api.ImageInspect(ctx, ref)
	if errdefs.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

// Images is the local image store (actions.Images).
type Images struct{ API ImageAPI }

// ImageExists reports whether ref is present locally.
func (d Images) ImageExists(ctx context.Context, ref string) (bool, error) {
	return ImageExists(ctx, d.API, ref)
}

// BuildImage builds tag from a Dockerfile alone (see BuildImage).
func (d Images) BuildImage(ctx context.Context, tag, dockerfile string) (string, error) {
	return BuildImage(ctx, d.API, tag, dockerfile)
}

// BuildImage builds tag from a Dockerfile alone (no other context), with
// the classic builder, which works without network access when the base
// image is local. The build output is returned for error messages.
func BuildImage(ctx context.Context, api ImageAPI, tag, dockerfile string) (string, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "Dockerfile", Mode: 0o644, Size: int64(len(dockerfile))}); err != nil {
		return "", err
	}
	if _, err := tw.Write([]byte(dockerfile)); err != nil {
		return "", err
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	resp, err := api.ImageBuild(ctx, &buf, build.ImageBuildOptions{
		Tags: []string{tag}, Dockerfile: "Dockerfile", Remove: true, ForceRemove: true, Version: build.BuilderV1,
	})
	if err != nil {
		return "", fmt.Errorf("building image %s: %w", tag, err)
	}
	defer resp.Body.Close()
	var out strings.Builder
	dec := json.NewDecoder(resp.Body)
	for {
		var msg struct {
			Stream string `json:"stream"`
			Error  string `json:"error"`
		}
		if err := dec.Decode(&msg); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return out.String(), fmt.Errorf("building image %s: reading build output: %w", tag, err)
		}
		out.WriteString(msg.Stream)
		if msg.Error != "" {
			return out.String(), fmt.Errorf("building image %s: %s", tag, strings.TrimSpace(msg.Error))
		}
	}
	return out.String(), nil
}

// PushAPI is the part of the Docker client PushImage uses.
type PushAPI interface {
	ImageTag(ctx context.Context, source, target string) error
	ImagePush(ctx context.Context, ref string, options image.PushOptions) (io.ReadCloser, error)
	ImageRemove(ctx context.Context, ref string, options image.RemoveOptions) ([]image.DeleteResponse, error)
}

// PushImage pushes the local image local as remote (a reference in a
// registry) with auth (RegistryAuth's header value; empty for none):
// tagged, pushed, and the remote tag dropped again so only the local name
// stays on the host.
func PushImage(ctx context.Context, api PushAPI, local, remote, auth string) error {
	if err := api.ImageTag(ctx, local, remote); err != nil {
		return fmt.Errorf("tagging %s as %s: %w", local, remote, err)
	}
	defer api.ImageRemove(context.WithoutCancel(ctx), remote, image.RemoveOptions{}) //nolint:errcheck // only an extra tag
	if auth == "" {
		auth = "e30=" // no credentials: an empty auth object (the daemon wants the header)
	}
	rc, err := api.ImagePush(ctx, remote, image.PushOptions{RegistryAuth: auth})
	if err != nil {
		return fmt.Errorf("pushing %s: %w", remote, err)
	}
	defer rc.Close()
	dec := json.NewDecoder(rc)
	for {
		var msg struct {
			Error string `json:"error"`
		}
		if err := dec.Decode(&msg); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("pushing %s: reading the output: %w", remote, err)
		}
		if msg.Error != "" {
			return fmt.Errorf("pushing %s: %s", remote, strings.TrimSpace(msg.Error))
		}
	}
}
