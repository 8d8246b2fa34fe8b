package dockeract

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/docker/docker/api/types/registry"
)

// dockerConfig is the part of a Docker client config file (config.json,
// as `docker login` writes it) that holds registry credentials.
type dockerConfig struct {
	Auths map[string]struct {
		Auth          string `json:"auth"`
		Username      string `json:"username"`
		Password      string `json:"password"`
		IdentityToken string `json:"identitytoken"`
	} `json:"auths"`
	CredsStore  string            `json:"credsStore"`
	CredHelpers map[string]string `json:"credHelpers"`
}

// RegistryAuth reads the credentials for the host of reg (host[:port][/path])
// from the Docker client config file and encodes them for the Engine API's
// X-Registry-Auth header. Credentials kept by a credential helper are
// refused: podspawn runs no helper program as root on their behalf.
func RegistryAuth(file, reg string) (string, error) {
	host, _, _ := strings.Cut(reg, "/")
	login := fmt.Sprintf("docker --config %s login %s", filepath.Dir(file), host)
	raw, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("reading registry credentials (kubernetes.image_registry_auth): %w", err)
	}
	var cfg dockerConfig
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return "", fmt.Errorf("registry credentials file %s (kubernetes.image_registry_auth) is not a Docker config.json: %w; write it with %q", file, err, login)
	}
	for key, a := range cfg.Auths {
		if registryHost(key) != host {
			continue
		}
		ac := registry.AuthConfig{Username: a.Username, Password: a.Password, IdentityToken: a.IdentityToken, ServerAddress: host}
		if a.Auth != "" {
			dec, err := base64.StdEncoding.DecodeString(a.Auth)
			user, pass, ok := strings.Cut(string(dec), ":")
			if err != nil || !ok {
				return "", fmt.Errorf("registry credentials file %s: the auth of %s is not base64 of user:password; log in again with %q", file, key, login)
			}
			ac.Username, ac.Password = user, pass
		}
		return registry.EncodeAuthConfig(ac)
	}
	if cfg.CredHelpers[host] != "" || cfg.CredsStore != "" {
		return "", fmt.Errorf("registry credentials file %s keeps the credentials of %s in a credential helper, which podspawn does not run; log in with a config directory of its own (%q, no credsStore) and point kubernetes.image_registry_auth at its config.json", file, host, login)
	}
	return "", fmt.Errorf("registry credentials file %s has no credentials for %s; log in with %q", file, host, login)
}

// registryHost is the host[:port] of a config.json auths key, which older
// clients wrote as a URL ("https://host/v1/").
func registryHost(key string) string {
	key = strings.TrimPrefix(strings.TrimPrefix(key, "https://"), "http://")
	host, _, _ := strings.Cut(key, "/")
	return host
}
