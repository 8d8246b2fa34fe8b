package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadMissingFileGivesDefaults(t *testing.T) {
	cfg, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Exists || cfg.Session.GracePeriod.Duration != 60*time.Second || cfg.Defaults.MemoryBytes != 2<<30 || cfg.Resources.MaxServicesPerProject != 8 {
		t.Fatalf("unexpected defaults: %+v", cfg)
	}
}

func TestLoadHomeSize(t *testing.T) {
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte("state:\n  home_size: 2g\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(p)
	if err != nil || cfg.State.HomeSizeBytes != 2<<30 {
		t.Fatalf("home_size 2g = %d, %v; want %d", cfg.State.HomeSizeBytes, err, 2<<30)
	}
	if d := Defaults(); d.State.HomeSize != "" || d.State.HomeSizeBytes != 0 {
		t.Fatalf("default home_size = %q (%d), want no cap", d.State.HomeSize, d.State.HomeSizeBytes)
	}
}

func TestLoadErrorsNameKeyAndValue(t *testing.T) {
	cases := map[string]struct{ yaml, want string }{
		"unitless duration":               {"session:\n  grace_period: 60\n", `line 2 (session.grace_period): invalid duration "60"`},
		"bad duration":                    {"session:\n  max_lifetime: forever\n", `line 2 (session.max_lifetime): invalid duration "forever"`},
		"bad mode":                        {"session:\n  mode: sometimes\n", `invalid session.mode "sometimes"`},
		"unknown key":                     {"sesion:\n  mode: persistent\n", `line 1 (sesion): field sesion not found`},
		"bad memory":                      {"defaults:\n  memory: lots\n", `invalid defaults.memory "lots"`},
		"bad disk":                        {"defaults:\n  disk: lots\n", `invalid defaults.disk "lots"`},
		"bad disk_unsupported":            {"defaults:\n  disk_unsupported: ignore\n", `invalid defaults.disk_unsupported "ignore": must be refuse (sessions do not start where the storage driver cannot limit their size) or warn (they start without the limit)`},
		"not yaml":                        {"session: [\n", "did not find expected node content"},
		"bad home_size":                   {"state:\n  home_size: big\n", `invalid state.home_size "big": invalid size "big": use a number with an optional k, m or g suffix (e.g. 512m, 2g)`},
		"tiny home_size":                  {"state:\n  home_size: 1m\n", `invalid state.home_size "1m": below the smallest home image, 16m`},
		"relative db path":                {"state:\n  db_path: state.db\n", `invalid state.db_path "state.db"`},
		"negative max_services":           {"resources:\n  max_services_per_project: -1\n", `invalid resources.max_services_per_project -1: must be 0 (projects may have no services) or positive`},
		"negative max_volumes":            {"resources:\n  max_volumes_per_project: -2\n", `invalid resources.max_volumes_per_project -2: must be 0 (projects may have no named volumes) or positive`},
		"infinite cpus":                   {"defaults:\n  cpus: .inf\n", `invalid defaults.cpus +Inf`},
		"negative max_unplanned_removals": {"cleanup:\n  max_unplanned_removals: -1\n", `invalid cleanup.max_unplanned_removals -1`},
		"word max_unplanned_removals":     {"cleanup:\n  max_unplanned_removals: many\n", `cleanup.max_unplanned_removals`},
		"zero max restarts":               {"cleanup:\n  crash_loop_max_restarts: 0\n", `invalid cleanup.crash_loop_max_restarts 0: must be at least 1`},
		"word max restarts":               {"cleanup:\n  crash_loop_max_restarts: ten\n", `line 2 (cleanup.crash_loop_max_restarts): cannot unmarshal !!str`},
		"zero reset":                      {"cleanup:\n  crash_loop_reset_after: 0s\n", `invalid cleanup.crash_loop_reset_after "0s": must be positive`},
		"unitless reset":                  {"cleanup:\n  crash_loop_reset_after: 600\n", `line 2 (cleanup.crash_loop_reset_after): invalid duration "600"`},
		"negative backoff":                {"cleanup:\n  crash_loop_backoff: -1s\n", `invalid cleanup.crash_loop_backoff "-1s": must be positive`},
		"backoff max below":               {"cleanup:\n  crash_loop_backoff: 10s\n  crash_loop_backoff_max: 5s\n", `invalid cleanup.crash_loop_backoff_max "5s": must be at least cleanup.crash_loop_backoff (10s)`},
		"unknown crash key":               {"cleanup:\n  crash_loop_limit: 3\n", `line 2 (cleanup.crash_loop_limit): field crash_loop_limit not found`},
		"metrics addr without port":       {"cleanup:\n  metrics_addr: 127.0.0.1\n", `invalid cleanup.metrics_addr: "127.0.0.1" is not host:port`},
		"metrics addr port zero":          {"cleanup:\n  metrics_addr: 127.0.0.1:0\n", `invalid cleanup.metrics_addr: "127.0.0.1:0": port "0" must be a number from 1 to 65535`},
		"metrics addr port word":          {"cleanup:\n  metrics_addr: 127.0.0.1:http\n", `port "http" must be a number`},
		"metrics addr hostname":           {"cleanup:\n  metrics_addr: example.com:9464\n", `host "example.com" must be an IP address, localhost or empty`},
		"unknown metrics key":             {"cleanup:\n  metrics_address: 127.0.0.1:9464\n", `field metrics_address not found`},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "config.yaml")
			if err := os.WriteFile(p, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Load(p)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), p) {
				t.Fatalf("got %v, want an error naming %s and containing %q", err, p, tc.want)
			}
		})
	}
}

// An existing file that sets nothing is not taken for "all defaults":
// the administrator's hardening would be dropped without a word.
func TestLoadFileThatSetsNothingIsError(t *testing.T) {
	for name, body := range map[string]string{
		"empty":               "",
		"whitespace":          "\n  \n\r\n",
		"comments only":       "# podspawn config\n#defaults:\n#  runtime: runsc\n",
		"document marker":     "---\n# nothing\n",
		"null":                "~\n",
		"empty mapping":       "{}\n",
		"comments and marker": "---\n...\n",
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "config.yaml")
			if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			want := "config " + p + " exists but sets nothing (it is empty or holds only comments): uncomment or add the settings you mean, or delete the file to run on the built-in defaults"
			if _, err := Load(p); err == nil || err.Error() != want {
				t.Fatalf("got %v\nwant %s", err, want)
			}
		})
	}
	// One setting is enough; the rest are defaults.
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte("# mostly defaults\nsession:\n  mode: persistent\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if cfg, err := Load(p); err != nil || !cfg.Exists || cfg.Session.Mode != "persistent" || cfg.Defaults.Image != "ubuntu:24.04" {
		t.Fatalf("one setting: %+v, %v", cfg, err)
	}
}

func TestLoadUnreadableIsError(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(dir); err == nil {
		t.Fatal("a directory as config must be an error, not defaults")
	}
}

func TestOverlay(t *testing.T) {
	cfg, err := Parse([]byte("session:\n  grace_period: 5s\n  mode: persistent\ndefaults:\n  memory: 256m\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Session.GracePeriod.Duration != 5*time.Second || cfg.Session.Mode != "persistent" || cfg.Defaults.MemoryBytes != 256<<20 || cfg.Session.MaxLifetime.Duration != 8*time.Hour {
		t.Fatalf("overlay wrong: %+v", cfg)
	}
}

func TestParseMemory(t *testing.T) {
	for in, want := range map[string]int64{"": 0, "0": 0, "512m": 512 << 20, "2g": 2 << 30, "2GB": 2 << 30, "512mb": 512 << 20, "1.5k": 1536, "100": 100, "100b": 100} {
		if got, err := ParseMemory(in); err != nil || got != want {
			t.Errorf("ParseMemory(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	// ParseFloat takes these; no size is negative, infinite or beyond int64.
	for _, in := range []string{"lots", "-1g", "inf", "nan", "1e30g", "9223372036854775807k"} {
		if got, err := ParseMemory(in); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("invalid size %q", in)) {
			t.Errorf("ParseMemory(%q) = %d, %v; want an error quoting the input", in, got, err)
		}
	}
}

// The update keys default to no key and https only; a config sets both.
func TestUpdateKeys(t *testing.T) {
	if d := Defaults().Update; d.PublicKey != "" || d.AllowInsecureHTTP {
		t.Fatalf("defaults: %+v", d)
	}
	cfg, err := Parse([]byte("update:\n  public_key: RWQexample\n  allow_insecure_http: true\n"))
	if err != nil {
		t.Fatal(err)
	}
	if u := cfg.Update; u.PublicKey != "RWQexample" || !u.AllowInsecureHTTP || u.BaseURL != "https://api.github.com" {
		t.Fatalf("update: %+v", u)
	}
}

func TestCrashLoopKeys(t *testing.T) {
	d := Defaults().Cleanup
	if d.CrashLoopMaxRestarts != 10 || d.CrashLoopResetAfter.Duration != 10*time.Minute || d.CrashLoopBackoff.Duration != time.Second || d.CrashLoopBackoffMax.Duration != 5*time.Minute {
		t.Fatalf("crash-loop defaults = %+v, want 10 restarts, 10m, 1s, 5m", d)
	}
	cfg, err := Parse([]byte("cleanup:\n  crash_loop_max_restarts: 3\n  crash_loop_reset_after: 2m\n  crash_loop_backoff: 500ms\n  crash_loop_backoff_max: 30s\n"))
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Cleanup
	if c.CrashLoopMaxRestarts != 3 || c.CrashLoopResetAfter.Duration != 2*time.Minute || c.CrashLoopBackoff.Duration != 500*time.Millisecond || c.CrashLoopBackoffMax.Duration != 30*time.Second {
		t.Fatalf("crash-loop keys = %+v", c)
	}
	if c.OrphanMinAge.Duration != 30*time.Second {
		t.Fatalf("other cleanup keys lost their defaults: %+v", c)
	}
}

// The audit log is off by default and required once set; bad values are
// errors that name the key.
func TestAuditKeys(t *testing.T) {
	if d := Defaults().Log; d.AuditLog != "" || !d.AuditRequired {
		t.Fatalf("log defaults = %+v, want no audit log, audit_required true", d)
	}
	cfg, err := Parse([]byte("log:\n  audit_log: /var/log/podspawn/audit.log\n  audit_required: false\n"))
	if err != nil {
		t.Fatal(err)
	}
	if l := cfg.Log; l.AuditLog != "/var/log/podspawn/audit.log" || l.AuditRequired {
		t.Fatalf("log = %+v", l)
	}
	for name, tc := range map[string]struct{ yaml, want string }{
		"relative path":   {"log:\n  audit_log: audit.log\n", `invalid log.audit_log "audit.log": must be an absolute path`},
		"word required":   {"log:\n  audit_required: maybe\n", `line 2 (log.audit_required): cannot unmarshal !!str`},
		"unknown log key": {"log:\n  audit: /x\n", `line 2 (log.audit): field audit not found`},
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "config.yaml")
			if err := os.WriteFile(p, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := Load(p); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestMetricsAddr(t *testing.T) {
	if d := Defaults().Cleanup.MetricsAddr; d != "" {
		t.Fatalf("default cleanup.metrics_addr = %q, want empty (off)", d)
	}
	for _, addr := range []string{"127.0.0.1:9464", "[::1]:9464", ":9464", "localhost:9464"} {
		cfg, err := Parse([]byte("cleanup:\n  metrics_addr: \"" + addr + "\"\n"))
		if err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		if cfg.Cleanup.MetricsAddr != addr {
			t.Fatalf("cleanup.metrics_addr = %q, want %q", cfg.Cleanup.MetricsAddr, addr)
		}
	}
}

func TestRuntimeKeys(t *testing.T) {
	cfg, err := Parse([]byte("runtime: kubernetes\nkubernetes:\n  kubeconfig: /etc/podspawn/kubeconfig\n  node_selector: {pool: sessions}\n  runtime_class: gvisor\n  image_registry: 127.0.0.1:15000/podspawn\n  image_registry_auth: /etc/podspawn/registry/config.json\n  image_pull_secrets: [regcred, ghcr.io-token]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Runtime != RuntimeKubernetes || cfg.Kubernetes.Namespace != "podspawn" || cfg.Kubernetes.NodeSelector["pool"] != "sessions" || cfg.Kubernetes.RuntimeClass != "gvisor" ||
		len(cfg.Kubernetes.ImagePullSecrets) != 2 || cfg.Kubernetes.ImagePullSecrets[1] != "ghcr.io-token" || cfg.Kubernetes.ImageRegistryAuth != "/etc/podspawn/registry/config.json" {
		t.Fatalf("unexpected kubernetes section: %q %+v", cfg.Runtime, cfg.Kubernetes)
	}
	// Agent forwarding relays through a program in the Pod.
	if cfg, err := Parse([]byte("runtime: kubernetes\nssh:\n  allow_agent_forwarding: true\nkubernetes:\n  agent_relay: /opt/podspawn/relay\n")); err != nil ||
		!cfg.SSH.AllowAgentForwarding || cfg.Kubernetes.AgentRelay != "/opt/podspawn/relay" {
		t.Fatalf("agent forwarding on kubernetes: %v", err)
	}
	// Persistent homes are a claim per user there.
	if cfg, err := Parse([]byte("runtime: kubernetes\nsession:\n  mode: persistent\nstate:\n  home_size: 2g\n")); err != nil || cfg.Session.Mode != "persistent" {
		t.Fatalf("persistent mode on kubernetes: %v", err)
	}
	if d := Defaults(); d.Runtime != RuntimeDocker {
		t.Fatalf("default runtime %q, want docker", d.Runtime)
	}
	bad := map[string]struct{ yaml, want string }{
		"unknown runtime":                {"runtime: podman\n", `invalid runtime "podman"`},
		"unknown key":                    {"runtime: kubernetes\nkubernetes:\n  namspace: x\n", `field namspace not found`},
		"bad namespace":                  {"runtime: kubernetes\nkubernetes:\n  namespace: Pod_Spawn\n", `invalid kubernetes.namespace "Pod_Spawn"`},
		"relative kubeconfig":            {"runtime: kubernetes\nkubernetes:\n  kubeconfig: kube.yaml\n", `invalid kubernetes.kubeconfig "kube.yaml"`},
		"bad selector key":               {"runtime: kubernetes\nkubernetes:\n  node_selector: {\"a b\": x}\n", `invalid kubernetes.node_selector key "a b"`},
		"bad selector value":             {"runtime: kubernetes\nkubernetes:\n  node_selector: {pool: \"-x\"}\n", `invalid kubernetes.node_selector value "-x"`},
		"bad runtime class":              {"runtime: kubernetes\nkubernetes:\n  runtime_class: Run_Sc\n", `invalid kubernetes.runtime_class "Run_Sc"`},
		"registry scheme":                {"runtime: kubernetes\nkubernetes:\n  image_registry: http://r:5000\n", `invalid kubernetes.image_registry "http://r:5000"`},
		"bad pull secret":                {"runtime: kubernetes\nkubernetes:\n  image_pull_secrets: [regcred, Reg_Cred]\n", `invalid kubernetes.image_pull_secrets entry "Reg_Cred"`},
		"empty pull secret":              {"runtime: kubernetes\nkubernetes:\n  image_pull_secrets: [\"\"]\n", `invalid kubernetes.image_pull_secrets entry ""`},
		"relative registry auth":         {"runtime: kubernetes\nkubernetes:\n  image_registry: r:5000\n  image_registry_auth: docker/config.json\n", `invalid kubernetes.image_registry_auth "docker/config.json"`},
		"registry auth without registry": {"runtime: kubernetes\nkubernetes:\n  image_registry_auth: /root/.docker/config.json\n", "with kubernetes.image_registry set"},
		"bad volume size":                {"runtime: kubernetes\nkubernetes:\n  volume_size: lots\n", `invalid kubernetes.volume_size "lots"`},
		"zero volume size":               {"runtime: kubernetes\nkubernetes:\n  volume_size: \"0\"\n", `invalid kubernetes.volume_size "0"`},
		"relative agent relay":           {"runtime: kubernetes\nkubernetes:\n  agent_relay: bin/relay\n", `invalid kubernetes.agent_relay "bin/relay"`},
		"oci runtime on k8s":             {"runtime: kubernetes\nsecurity:\n  runtime: runsc\n", `invalid security.runtime "runsc" with runtime: kubernetes`},
	}
	for name, c := range bad {
		if _, err := Parse([]byte(c.yaml)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to contain %q", name, err, c.want)
		}
	}
}
