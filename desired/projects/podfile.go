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
	"math"
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

// Resources asks for tighter limits than the config's ceilings
// (defaults.cpus, defaults.memory and defaults.disk); 0 or unset means the
// ceiling.
type Resources struct {
	CPUs   float64 `yaml:"cpus"`
	Memory string  `yaml:"memory"`
	Disk   string  `yaml:"disk"`
}

// Limits are the administrator's ceilings for a project's containers.
type Limits struct {
	// CPUs and MemoryBytes come from defaults.cpus and defaults.memory
	// (Memory as written there); 0 means no ceiling.
	CPUs        float64
	MemoryBytes int64
	Memory      string
	// DiskBytes and Disk come from defaults.disk, the same way.
	DiskBytes int64
	Disk      string
	// MaxServices is resources.max_services_per_project, MaxVolumes
	// resources.max_volumes_per_project.
	MaxServices int
	MaxVolumes  int
	// HostCPUs is how many CPUs the host has: Docker refuses more.
	HostCPUs int
}

// LimitsOf reads the ceilings from cfg.
func LimitsOf(cfg config.Config, hostCPUs int) Limits {
	return Limits{CPUs: cfg.Defaults.CPUs, MemoryBytes: cfg.Defaults.MemoryBytes, Memory: cfg.Defaults.Memory,
		DiskBytes: cfg.Defaults.DiskBytes, Disk: cfg.Defaults.Disk,
		MaxServices: cfg.Resources.MaxServicesPerProject, MaxVolumes: cfg.Resources.MaxVolumesPerProject, HostCPUs: hostCPUs}
}

// CheckLimits refuses a Podfile that asks for more than a ceiling, more
// CPUs than the host has, or more services than allowed; the error names
// the field, the value and the limit.
func (pf *Podfile) CheckLimits(l Limits) error {
	if n := len(pf.Services); n > l.MaxServices {
		return fmt.Errorf("field services: %d service(s), more than the %d allowed per project (resources.max_services_per_project in the config)", n, l.MaxServices)
	}
	if n := pf.volumeCount(); n > l.MaxVolumes {
		return fmt.Errorf("field services[].volumes: %d named volume(s), more than the %d allowed per project (resources.max_volumes_per_project in the config)", n, l.MaxVolumes)
	}
	if err := checkCeiling("resources", pf.Resources, l); err != nil {
		return err
	}
	for i, s := range pf.Services {
		if err := checkCeiling(fmt.Sprintf("services[%d].resources", i), s.Resources, l); err != nil {
			return err
		}
	}
	return nil
}

// volumeCount counts the distinct named volumes of the services (two
// services may share one).
func (pf *Podfile) volumeCount() int {
	names := map[string]bool{}
	for _, s := range pf.Services {
		for _, v := range s.Volumes {
			name, _, _ := strings.Cut(v, ":")
			names[name] = true
		}
	}
	return len(names)
}

func checkCeiling(field string, r Resources, l Limits) error {
	cpus := strconv.FormatFloat(r.CPUs, 'f', -1, 64)
	if l.CPUs > 0 && r.CPUs > l.CPUs {
		return fmt.Errorf("field %s.cpus: %s is above the ceiling of %s (defaults.cpus in the config); ask for %s or less, or leave it out to get the ceiling",
			field, cpus, strconv.FormatFloat(l.CPUs, 'f', -1, 64), strconv.FormatFloat(l.CPUs, 'f', -1, 64))
	}
	if l.HostCPUs > 0 && r.CPUs > float64(l.HostCPUs) {
		return fmt.Errorf("field %s.cpus: %s is more than the %d CPU(s) of this host; ask for %d or less", field, cpus, l.HostCPUs, l.HostCPUs)
	}
	mem, err := config.ParseMemory(r.Memory)
	if err != nil {
		return fmt.Errorf("field %s.memory: %w", field, err)
	}
	if l.MemoryBytes > 0 && mem > l.MemoryBytes {
		return fmt.Errorf("field %s.memory: %q is above the ceiling of %s (defaults.memory in the config); ask for %s or less, or leave it out to get the ceiling",
			field, r.Memory, l.Memory, l.Memory)
	}
	disk, err := config.ParseMemory(r.Disk)
	if err != nil {
		return fmt.Errorf("field %s.disk: %w", field, err)
	}
	if l.DiskBytes > 0 && disk > l.DiskBytes {
		return fmt.Errorf("field %s.disk: %q is above the ceiling of %s (defaults.disk in the config); ask for %s or less, or leave it out to get the ceiling",
			field, r.Disk, l.Disk, l.Disk)
	}
	return nil
}

// tighten is what a container gets: the Podfile's value when it is set
// and below the ceiling, the ceiling otherwise (0 is unset, or no ceiling).
func tighten[T float64 | int64](ceiling, asked T) T {
	if asked > 0 && (ceiling == 0 || asked < ceiling) {
		return asked
	}
	return ceiling
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
	if r.CPUs < 0 || math.IsNaN(r.CPUs) || math.IsInf(r.CPUs, 0) {
		return fmt.Errorf("field %s.cpus: %v must be a positive number (or 0 for the ceiling)", field, r.CPUs)
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
// ("" = keep the default). The session and every service get the ceilings
// of l unless the Podfile asks for less: a Podfile that asks for more
// (registered before the ceilings were lowered, or edited in the clone)
// still gets the ceiling. More services than l allows is an error.
func (pf *Podfile) Apply(spec *desired.Spec, key desired.SessionKey, image string, l Limits) (desired.Mode, error) {
	if n := len(pf.Services); n > l.MaxServices {
		return "", fmt.Errorf("%d service(s), more than the %d allowed per project (resources.max_services_per_project)", n, l.MaxServices)
	}
	if n := pf.volumeCount(); n > l.MaxVolumes {
		return "", fmt.Errorf("%d named volume(s), more than the %d allowed per project (resources.max_volumes_per_project)", n, l.MaxVolumes)
	}
	spec.Image = image
	if pf.Shell != "" {
		spec.Shell = pf.Shell
	}
	mem, err := config.ParseMemory(pf.Resources.Memory)
	if err != nil {
		return "", err
	}
	spec.CPUs = tighten(l.CPUs, pf.Resources.CPUs)
	spec.MemoryBytes = tighten(l.MemoryBytes, mem)
	disk, err := config.ParseMemory(pf.Resources.Disk)
	if err != nil {
		return "", err
	}
	spec.DiskBytes = tighten(l.DiskBytes, disk)
	spec.Env = append(spec.Env, envList(pf.Env, key)...)
	spec.Env = append(spec.Env, "PODSPAWN_USER="+key.User, "PODSPAWN_PROJECT="+key.Project)
	spec.OnCreate = expand(pf.OnCreate, key)
	spec.OnStart = expand(pf.OnStart, key)
	for _, s := range pf.Services {
		m, err := config.ParseMemory(s.Resources.Memory)
		if err != nil {
			return "", err
		}
		d, err := config.ParseMemory(s.Resources.Disk)
		if err != nil {
			return "", err
		}
		svc := desired.Service{Name: s.Name, Image: s.Image, Env: envList(s.Env, key), Command: s.Command,
			CPUs: tighten(l.CPUs, s.Resources.CPUs), MemoryBytes: tighten(l.MemoryBytes, m), DiskBytes: tighten(l.DiskBytes, d)}
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
