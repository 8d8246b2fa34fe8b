package config

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// HostPort is a port on the host that session containers may reach
// although security.block_host_access is on.
type HostPort struct {
	Protocol string // "tcp" or "udp"
	Port     int
}

func (p HostPort) String() string { return fmt.Sprintf("%d/%s", p.Port, p.Protocol) }

// parseHostPorts parses security.allowed_host_ports: each entry is a port
// from 1 to 65535, for TCP and UDP, or the port with /tcp or /udp.
func parseHostPorts(entries []string) ([]HostPort, error) {
	var out []HostPort
	for i, e := range entries {
		num, proto, hasProto := strings.Cut(strings.TrimSpace(e), "/")
		protos := []string{"tcp", "udp"}
		if hasProto {
			proto = strings.ToLower(proto)
			if proto != "tcp" && proto != "udp" {
				return nil, fmt.Errorf("invalid security.allowed_host_ports[%d] %q: the protocol must be tcp or udp (e.g. 8080, 8080/tcp, 53/udp)", i, e)
			}
			protos = []string{proto}
		}
		n, err := strconv.Atoi(num)
		if err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("invalid security.allowed_host_ports[%d] %q: must be a port from 1 to 65535, optionally followed by /tcp or /udp (e.g. 8080, 53/udp)", i, e)
		}
		for _, p := range protos {
			out = append(out, HostPort{Protocol: p, Port: n})
		}
	}
	slices.SortFunc(out, func(a, b HostPort) int {
		if a.Port != b.Port {
			return a.Port - b.Port
		}
		return strings.Compare(a.Protocol, b.Protocol)
	})
	return slices.Compact(out), nil
}
