package projects

import (
	"github.com/distribution/reference"

	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/config"
)

// Podfile is the server-mode subset of a project's podfile.yaml.
type Podfile struct {
	Base      string            `yaml:"base"`
	Env       map[string]string `yaml:"env"`
	Shell     string            `yaml:"shell"`
	Resources Resources         `yaml:"resources"`
	Mode      string            `yaml:"mode"`
	Services  []Service         `yaml:"services"`
	OnCreate  string            `yaml:"on_create"`
	OnStart   string            `yaml:"on_start"`

	// Raw is the file's bytes; the image tag is derived from them.
	Raw []byte `yaml:"-"`
}

// Resources limits the session container.
type Resources struct {
	CPUs   float64 `yaml:"cpus"`
	Memory string  `yaml:"memory"`
}

// Service is a companion container.
type Service struct {
	Name    string            `yaml:"name"`
	Image   string            `yaml:"image"`
	Env     map[string]string `yaml:"env"`
	Command []string          `yaml:"command"`
	// Volumes are "name:/path" named volumes (never host paths).
	Volumes   []string  `yaml:"volumes"`
	Resources Resources `yaml:"resources"`
}

// PodfileNames are looked up in this order in a project's clone.
var PodfileNames = []string{"podfile.yaml", ".podspawn/podfile.yaml"}

// maxPodfileSize bounds what is read: a Podfile is a few hundred bytes.
const maxPodfileSize = 1 << 20

// Find returns the path, relative to clone, of the clone's Podfile. A
// candidate that resolves outside the clone is refused, not skipped.
func Find(clone string) (string, error) {
	for _, n := range PodfileNames {
		f, err := openInClone(clone, n)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		var esc *EscapeError
		if errors.As(err, &esc) {
			return "", fmt.Errorf("podfile %w", err)
		}
		if err != nil {
			return "", fmt.Errorf("looking for a podfile in %s: %w", clone, err)
		}
		fi, err := f.Stat()
		f.Close()
		if err == nil && fi.Mode().IsRegular() {
			return n, nil
		}
	}
	return "", fmt.Errorf("no podfile found in %s (looked for %s)", clone, strings.Join(PodfileNames, ", "))
}

// EscapeError is a path in a project's clone that resolves outside it.
type EscapeError struct {
	Clone, Rel string
	// Target is the link's text when Rel itself is the link.
	Target string
}

func (e *EscapeError) Error() string {
	link := ""
	if e.Target != "" {
		link = fmt.Sprintf(" (a symbolic link to %q)", e.Target)
	}
	return fmt.Sprintf("%q in the clone %s resolves outside the clone%s; podspawn reads nothing from outside a project's clone: make it a plain file in the repository",
		e.Rel, e.Clone, link)
}

// openInClone opens rel inside clone. Links that stay inside the clone
// are followed; one that leads out (podfile.yaml -> /etc/shadow) is an
// *EscapeError, so root never reads a file the repository points at.
func openInClone(clone, rel string) (*os.File, error) {
	if !filepath.IsLocal(rel) {
		return nil, &EscapeError{Clone: clone, Rel: rel}
	}
	base, err := filepath.EvalSymlinks(clone)
	if err != nil {
		return nil, fmt.Errorf("project clone: %w", err)
	}
	p, err := filepath.EvalSymlinks(filepath.Join(clone, rel))
	if err != nil {
		return nil, err
	}
	if r, err := filepath.Rel(base, p); err != nil || !filepath.IsLocal(r) {
		target, _ := os.Readlink(filepath.Join(clone, rel))
		return nil, &EscapeError{Clone: clone, Rel: rel, Target: target}
	}
	// The check above names the problem; os.Root holds even if the clone
	// changed since.
	root, err := os.OpenRoot(clone)
	if err != nil {
		return nil, fmt.Errorf("project clone: %w", err)
	}
	defer root.Close()
	return root.Open(rel)
}

// ReadPodfile reads and validates the Podfile at rel in clone (see Find).
func ReadPodfile(clone, rel string) (*Podfile, error) {
	path := filepath.Join(clone, rel)
	f, err := openInClone(clone, rel)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("podfile %s does not exist", path)
		}
		var esc *EscapeError
		if errors.As(err, &esc) {
			return nil, fmt.Errorf("podfile %w", err)
		}
		return nil, fmt.Errorf("reading podfile: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("podfile %s is not a regular file", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxPodfileSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading podfile: %w", err)
	}
	if len(data) > maxPodfileSize {
		return nil, fmt.Errorf("podfile %s is larger than %d bytes", path, maxPodfileSize)
	}
	pf, err := ParsePodfile(data)
	if err != nil {
		return nil, fmt.Errorf("podfile %s: %w", path, err)
	}
	return pf, nil
}

// Printable escapes, as strconv.Quote would, what a terminal interprets
// in untrusted text (control characters, escape sequences, invalid UTF-8,
// bidirectional overrides) and keeps the rest as it is, so text from a
// repository can go into an error message.
func Printable(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == ' ' || unicode.IsPrint(r):
			b.WriteRune(r)
		default:
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		}
		i += size
	}
	return b.String()
}

var (
	envKeyRE     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	serviceRE    = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)
	volumeNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)
)

// ParsePodfile decodes and validates; every error names the field.
func ParsePodfile(data []byte) (*Podfile, error) {
	pf := &Podfile{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(pf); err != nil && !errors.Is(err, io.EOF) {
		// The decoder quotes the file's own text (unknown keys, values).
		return nil, errors.New(Printable(strings.TrimPrefix(err.Error(), "yaml: ")))
	}
	pf.Raw = append([]byte(nil), data...)
	if strings.TrimSpace(pf.Base) == "" {
		return nil, errors.New("field base: the base image is required (e.g. base: ubuntu:24.04)")
	}
	// The base goes into the Dockerfile's FROM line: anything but an image
	// reference (a newline and a RUN, say) would run build steps on the server.
	if _, err := reference.ParseNormalizedNamed(pf.Base); err != nil {
		return nil, fmt.Errorf("field base: %q is not an image reference (e.g. ubuntu:24.04 or registry.example.com/team/dev:1): %v", pf.Base, err)
	}
	if pf.Shell != "" && !strings.HasPrefix(pf.Shell, "/") {
		return nil, fmt.Errorf("field shell: %q must be an absolute path", pf.Shell)
	}
	if pf.Mode != "" {
		if _, err := desired.ParseMode(pf.Mode); err != nil {
			return nil, fmt.Errorf("field mode: %w", err)
		}
	}
	if err := checkEnv("env", pf.Env); err != nil {
		return nil, err
	}
	if err := checkResources("resources", pf.Resources); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for i, s := range pf.Services {
		field := fmt.Sprintf("services[%d]", i)
		if s.Name == "" {
			return nil, fmt.Errorf("field %s.name: a service name is required", field)
		}
		if !serviceRE.MatchString(s.Name) {
			return nil, fmt.Errorf("field %s.name: %q must match %s", field, s.Name, serviceRE)
		}
		if seen[s.Name] {
			return nil, fmt.Errorf("field %s.name: duplicate service name %q", field, s.Name)
		}
		seen[s.Name] = true
		if strings.TrimSpace(s.Image) == "" {
			return nil, fmt.Errorf("field %s.image: service %q needs an image", field, s.Name)
		}
		if _, err := reference.ParseNormalizedNamed(s.Image); err != nil {
			return nil, fmt.Errorf("field %s.image: %q is not an image reference (e.g. postgres:16): %v", field, s.Image, err)
		}
		if err := checkEnv(field+".env", s.Env); err != nil {
			return nil, err
		}
		if err := checkResources(field+".resources", s.Resources); err != nil {
			return nil, err
		}
		for j, v := range s.Volumes {
			if _, _, err := splitVolume(v); err != nil {
				return nil, fmt.Errorf("field %s.volumes[%d]: %w", field, j, err)
			}
		}
	}
	return pf, nil
}

func checkEnv(field string, env map[string]string) error {
	for k := range env {
		if !envKeyRE.MatchString(k) {
			return fmt.Errorf("field %s: %q is not a valid variable name", field, k)
		}
	}
	return nil
}

func checkResources(field string, r Resources) error {
	if r.CPUs < 0 {
		return fmt.Errorf("field %s.cpus: must not be negative", field)
	}
	if _, err := config.ParseMemory(r.Memory); err != nil {
		return fmt.Errorf("field %s.memory: %w", field, err)
	}
	return nil
}

// splitVolume parses "name:/target". Host paths are refused: a Podfile
// author must never be able to mount the server's files.
func splitVolume(v string) (string, string, error) {
	name, target, ok := strings.Cut(v, ":")
	if !ok || target == "" {
		return "", "", fmt.Errorf("%q must be name:/path (a named volume)", v)
	}
	if strings.HasPrefix(name, "/") || strings.HasPrefix(name, ".") {
		return "", "", fmt.Errorf("%q: host paths are not allowed; use a named volume such as pgdata:%s", v, target)
	}
	if !volumeNameRE.MatchString(name) {
		return "", "", fmt.Errorf("%q: volume name must match %s", v, volumeNameRE)
	}
	if !strings.HasPrefix(target, "/") {
		return "", "", fmt.Errorf("%q: the mount target must be an absolute path", v)
	}
	return name, target, nil
}

// Tag is the image tag of the project's Podfile: the first 12 hex digits
// of the sha256 of its bytes, so a changed Podfile gets a new image.
func (pf *Podfile) Tag(project string) string {
	sum := sha256.Sum256(pf.Raw)
	return "podspawn/" + project + ":podfile-" + hex.EncodeToString(sum[:])[:12]
}

// Dockerfile is the build recipe: the base plus labels, nothing fetched
// from the network, so a local base image builds offline.
func (pf *Podfile) Dockerfile(project string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "FROM %s\n", pf.Base)
	fmt.Fprintf(&b, "LABEL podspawn.project=%q podspawn.podfile=%q\n", project, pf.Tag(project))
	return b.String()
}

func expand(s string, key desired.SessionKey) string {
	return strings.NewReplacer("${PODSPAWN_USER}", key.User, "${PODSPAWN_PROJECT}", key.Project).Replace(s)
}

func envList(env map[string]string, key desired.SessionKey) []string {
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+expand(v, key))
	}
	sort.Strings(out)
	return out
}

// Apply turns the Podfile into the session's spec on top of spec (which
// carries the server defaults) and returns the mode the project asks for
// ("" = keep the default).
func (pf *Podfile) Apply(spec *desired.Spec, key desired.SessionKey, image string) (desired.Mode, error) {
	spec.Image = image
	if pf.Shell != "" {
		spec.Shell = pf.Shell
	}
	if pf.Resources.CPUs > 0 {
		spec.CPUs = pf.Resources.CPUs
	}
	if pf.Resources.Memory != "" {
		m, err := config.ParseMemory(pf.Resources.Memory)
		if err != nil {
			return "", err
		}
		spec.MemoryBytes = m
	}
	spec.Env = append(spec.Env, envList(pf.Env, key)...)
	spec.Env = append(spec.Env, "PODSPAWN_USER="+key.User, "PODSPAWN_PROJECT="+key.Project)
	spec.OnCreate = expand(pf.OnCreate, key)
	spec.OnStart = expand(pf.OnStart, key)
	for _, s := range pf.Services {
		svc := desired.Service{Name: s.Name, Image: s.Image, Env: envList(s.Env, key), Command: s.Command, CPUs: s.Resources.CPUs}
		if s.Resources.Memory != "" {
			m, err := config.ParseMemory(s.Resources.Memory)
			if err != nil {
				return "", err
			}
			svc.MemoryBytes = m
		}
		for _, v := range s.Volumes {
			name, target, err := splitVolume(v)
			if err != nil {
				return "", err
			}
			svc.Volumes = append(svc.Volumes, desired.VolumeMount{Name: name, Target: target})
		}
		spec.Services = append(spec.Services, svc)
	}
	return desired.Mode(pf.Mode), nil
}
