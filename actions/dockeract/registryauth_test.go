package dockeract

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/registry"
	"github.com/google/go-cmp/cmp"
)

func TestRegistryAuth(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	for _, tc := range []struct {
		name, config, registry string
		want                   registry.AuthConfig
		wantErr                string
	}{
		{name: "auth field", registry: "reg.example:5000/podspawn",
			config: `{"auths": {"reg.example:5000": {"auth": "` + b64("ci:s3cr:et") + `"}}}`,
			want:   registry.AuthConfig{Username: "ci", Password: "s3cr:et", ServerAddress: "reg.example:5000"}},
		{name: "username and password, URL key", registry: "reg.example",
			config: `{"auths": {"https://reg.example/v1/": {"username": "ci", "password": "pw"}}}`,
			want:   registry.AuthConfig{Username: "ci", Password: "pw", ServerAddress: "reg.example"}},
		{name: "identity token", registry: "reg.example/team",
			config: `{"auths": {"reg.example": {"identitytoken": "tok"}}}`,
			want:   registry.AuthConfig{IdentityToken: "tok", ServerAddress: "reg.example"}},
		{name: "another registry only", registry: "reg.example",
			config: `{"auths": {"other.example": {"auth": "` + b64("a:b") + `"}}}`, wantErr: "has no credentials for reg.example; log in with"},
		// An inline entry (empty here) wins over the helper: what `docker
		// login` wrote for this host is sent as it is.
		{name: "inline entry beside a credential helper", registry: "reg.example",
			config: `{"auths": {"reg.example": {}}, "credsStore": "pass"}`, want: registry.AuthConfig{ServerAddress: "reg.example"}},
		{name: "credential helper without entry", registry: "reg.example",
			config: `{"credHelpers": {"reg.example": "ecr-login"}}`, wantErr: "in a credential helper, which podspawn does not run"},
		{name: "bad auth", registry: "reg.example",
			config: `{"auths": {"reg.example": {"auth": "` + b64("nocolon") + `"}}}`, wantErr: "is not base64 of user:password"},
		{name: "not json", registry: "reg.example", config: `auths: {}`, wantErr: "is not a Docker config.json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "config.json")
			if err := os.WriteFile(file, []byte(tc.config), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := RegistryAuth(file, tc.registry)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			raw, err := base64.URLEncoding.DecodeString(got)
			if err != nil {
				t.Fatal(err)
			}
			var ac registry.AuthConfig
			if err := json.Unmarshal(raw, &ac); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, ac); diff != "" {
				t.Errorf("auth (-want +got):\n%s", diff)
			}
		})
	}
	if _, err := RegistryAuth(filepath.Join(t.TempDir(), "missing.json"), "reg.example"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: err = %v, want one wrapping ErrNotExist", err)
	}
}

type pushRecorder struct{ auth []string }

func (p *pushRecorder) ImageTag(context.Context, string, string) error { return nil }
func (p *pushRecorder) ImagePush(_ context.Context, _ string, o image.PushOptions) (io.ReadCloser, error) {
	p.auth = append(p.auth, o.RegistryAuth)
	return io.NopCloser(strings.NewReader(`{"status":"pushed"}`)), nil
}
func (p *pushRecorder) ImageRemove(context.Context, string, image.RemoveOptions) ([]image.DeleteResponse, error) {
	return nil, nil
}

func TestPushImageSendsTheAuthHeader(t *testing.T) {
	p := &pushRecorder{}
	for _, auth := range []string{"", "eyJ1c2VybmFtZSI6ImNpIn0="} {
		if err := PushImage(context.Background(), p, "local:1", "reg.example/p:1", auth); err != nil {
			t.Fatal(err)
		}
	}
	if diff := cmp.Diff([]string{"e30=", "eyJ1c2VybmFtZSI6ImNpIn0="}, p.auth); diff != "" {
		t.Errorf("X-Registry-Auth sent (-want +got):\n%s", diff)
	}
}
