package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Host access is blocked by default, with no exception.
func TestHostAccessDefaults(t *testing.T) {
	d := Defaults().Security
	if !d.BlockHostAccess || len(d.AllowedHostPorts) != 0 || len(d.HostPorts) != 0 {
		t.Fatalf("defaults: block_host_access %v, allowed_host_ports %q, parsed %v", d.BlockHostAccess, d.AllowedHostPorts, d.HostPorts)
	}
	cfg, err := Parse([]byte("session:\n  mode: persistent\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Security.BlockHostAccess {
		t.Error("a config without the key turned block_host_access off")
	}
}

// Numbers and strings, with or without a protocol; sorted, one protocol
// per entry, duplicates dropped.
func TestAllowedHostPorts(t *testing.T) {
	cfg, err := Parse([]byte("security:\n  block_host_access: true\n  allowed_host_ports: [8080, \"53/udp\", 22/TCP, \"8080/tcp\", 65535, 1]\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []HostPort{{"tcp", 1}, {"udp", 1}, {"tcp", 22}, {"udp", 53}, {"tcp", 8080}, {"udp", 8080}, {"tcp", 65535}, {"udp", 65535}}
	if diff := cmp.Diff(want, cfg.Security.HostPorts); diff != "" {
		t.Errorf("HostPorts (-want +got):\n%s", diff)
	}
	if got := cfg.Security.HostPorts[3].String(); got != "53/udp" {
		t.Errorf("String() = %q", got)
	}
	cfg, err = Parse([]byte("security:\n  block_host_access: false\n  allowed_host_ports: []\n"))
	if err != nil || cfg.Security.BlockHostAccess || len(cfg.Security.HostPorts) != 0 {
		t.Fatalf("block_host_access false: %+v, %v", cfg.Security, err)
	}
}

func TestAllowedHostPortsErrorsNameKeyAndValue(t *testing.T) {
	hint := "must be a port from 1 to 65535, optionally followed by /tcp or /udp (e.g. 8080, 53/udp)"
	for yaml, want := range map[string]string{
		"[0]":           `invalid security.allowed_host_ports[0] "0": ` + hint,
		"[8080, 70000]": `invalid security.allowed_host_ports[1] "70000": ` + hint,
		"[-1]":          `invalid security.allowed_host_ports[0] "-1": ` + hint,
		"[http]":        `invalid security.allowed_host_ports[0] "http": ` + hint,
		`["80/sctp"]`:   `invalid security.allowed_host_ports[0] "80/sctp": the protocol must be tcp or udp (e.g. 8080, 8080/tcp, 53/udp)`,
		`["/tcp"]`:      `invalid security.allowed_host_ports[0] "/tcp": ` + hint,
		`["1-1024"]`:    `invalid security.allowed_host_ports[0] "1-1024": ` + hint,
		`[""]`:          `invalid security.allowed_host_ports[0] "": ` + hint,
		"8080":          `line 3 (security.allowed_host_ports): cannot unmarshal !!int ` + "`8080`" + ` into []string`,
		"{web: 8080}":   `line 3 (security.allowed_host_ports.web): cannot unmarshal !!map into []string`,
	} {
		t.Run(yaml, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "config.yaml")
			if err := os.WriteFile(p, []byte("security:\n  block_host_access: true\n  allowed_host_ports: "+yaml+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Load(p)
			if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), p) {
				t.Fatalf("got %v, want an error naming %s and containing %q", err, p, want)
			}
		})
	}
	_, err := Parse([]byte("security:\n  block_host_access: sometimes\n"))
	if err == nil || !strings.Contains(err.Error(), "line 2 (security.block_host_access): cannot unmarshal !!str `sometimes` into bool") {
		t.Errorf("block_host_access: sometimes: %v", err)
	}
}
