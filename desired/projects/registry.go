// Package projects keeps the registry of projects (projects.yaml) and
// parses Podfiles. A project gives its sessions an image, environment,
// companion services and hooks.
package projects

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"gopkg.in/yaml.v3"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/atomicfile"
)

// Project is one registered project.
type Project struct {
	Repo      string `yaml:"repo"`
	Branch    string `yaml:"branch,omitempty"`
	LocalPath string `yaml:"local_path"`
	// ImageTag is the image built from the Podfile at PodfilePath.
	ImageTag    string `yaml:"image_tag"`
	PodfilePath string `yaml:"podfile_path,omitempty"`
	// Mode overrides the session mode for this project's sessions.
	Mode desired.Mode `yaml:"mode,omitempty"`
	// AgentForwarding false keeps forwarded agents out of this project's
	// sessions although ssh.allow_agent_forwarding is on (sshd accepts
	// agents for every user or none, so true cannot turn it on).
	AgentForwarding *bool `yaml:"agent_forwarding,omitempty"`
}

// Registry maps project names to projects.
type Registry map[string]Project

// Load reads the registry. A missing file is an empty registry; a file
// that cannot be read or parsed is an error (never an empty registry).
func Load(path string) (Registry, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Registry{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading projects file %s: %w", path, err)
	}
	reg := Registry{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&reg); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("projects file %s: %w", path, err)
	}
	for _, name := range reg.Names() { // in order, so the same error comes first every time
		p := reg[name]
		if err := desired.ValidateProjectName(name); err != nil {
			return nil, fmt.Errorf("projects file %s: %w", path, err)
		}
		if p.Mode != "" {
			if _, err := desired.ParseMode(string(p.Mode)); err != nil {
				return nil, fmt.Errorf("projects file %s: project %s: %w", path, name, err)
			}
		}
	}
	return reg, nil
}

// Names returns the project names in order.
func (r Registry) Names() []string {
	names := make([]string, 0, len(r))
	for n := range r {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Save writes the registry atomically: a reader sees the old file or the
// new one, never half of one.
func (r Registry) Save(path string) error {
	data, err := yaml.Marshal(map[string]Project(r))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return atomicfile.Write(path, data, 0o644, atomicfile.KeepOwner, atomicfile.KeepOwner)
}
