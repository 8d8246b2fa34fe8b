// Package hostfw_test checks the host access rules end to end: real
// sessions on the real Docker daemon, real listeners on the host's
// 0.0.0.0, and the host's real iptables, which the test puts back as it
// found them.
package hostfw_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/actions/hostfw"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/test/harness"
)

// listener is a service on the host's 0.0.0.0 that greets every
// connection with its token.
type listener struct {
	port  int
	token string
}

func listen(t *testing.T) listener {
	t.Helper()
	l, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	ls := listener{port: l.Addr().(*net.TCPAddr).Port}
	ls.token = fmt.Sprintf("host-service-%d", ls.port)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(c, ls.token)
			c.Close()
		}
	}()
	return ls
}

// hostAddrs are the host's own IPv4 addresses a container could try
// besides its gateway: those of the host's interfaces other than
// loopback and Docker's per-network bridges (eth0, docker0, ...).
func hostAddrs(t *testing.T) []string {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagLoopback != 0 || strings.HasPrefix(ifc.Name, "br-") || strings.HasPrefix(ifc.Name, hostfw.BridgePrefix) || strings.HasPrefix(ifc.Name, "veth") {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && ipn.IP.IsGlobalUnicast() {
				out = append(out, ipn.IP.String())
				break
			}
		}
	}
	if len(out) == 0 {
		t.Fatal("the host has no IPv4 address besides loopback")
	}
	return out
}

// touchedChains is what iptables-save prints of the chains podspawn
// writes: INPUT and PODSPAWN-INPUT, IPv4 and IPv6.
func touchedChains(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, f := range hostfw.DefaultFamilies() {
		save := strings.TrimSuffix(f.Restore, "-restore") + "-save"
		b, err := exec.Command(save, "-t", "filter").Output()
		if err != nil {
			t.Fatalf("%s: %v", save, err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "-A INPUT ") || strings.Contains(line, hostfw.Chain) {
				out = append(out, f.Name+" "+line)
			}
		}
	}
	return out
}

type env struct {
	*harness.Env
	t      *testing.T
	proxy  *harness.ScopeProxy
	config string // the harness's config, without a security section
}

func newEnv(t *testing.T) *env {
	t.Helper()
	// Registered first, so it runs last: after the harness has put the
	// rules back, the chains must read exactly as before.
	before := touchedChains(t)
	t.Cleanup(func() {
		if diff := cmp.Diff(before, touchedChains(t)); diff != "" {
			t.Errorf("the test left the host's INPUT and %s chains changed (-before +after):\n%s", hostfw.Chain, diff)
		}
	})
	e := &env{Env: harness.NewEnv(t, harness.Options{Session: "  grace_period: 30m\n  max_lifetime: 8h\n  mode: grace-period\n"}), t: t}
	cfg, err := os.ReadFile(e.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	e.config = string(cfg)
	st := e.OpenStore() // creates the database and its instance id
	id := st.InstanceID()
	st.Close()
	e.proxy = harness.NewScopeProxy(t)
	e.proxy.AddInstance(id)
	return e
}

// setSecurity rewrites the config with this security section.
func (e *env) setSecurity(section string) {
	e.t.Helper()
	if err := os.WriteFile(e.ConfigPath, []byte(e.config+"security:\n"+section), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

// cleanup runs one pass through the scope proxy and returns its report
// (stdout), which lists the changes to the rules.
func (e *env) cleanup() string {
	e.t.Helper()
	r := e.RunEnv([]string{"DOCKER_HOST=" + e.proxy.Host()}, "", "cleanup")
	if r.Code != 0 {
		e.t.Fatalf("podspawn cleanup: exit %d\nstdout:\n%s\nstderr:\n%s", r.Code, r.Stdout, r.Stderr)
	}
	return r.Stdout
}

// doctor returns the host access rules check of podspawn doctor.
func (e *env) doctor() (status, detail string) {
	e.t.Helper()
	r := e.RunEnv([]string{"DOCKER_HOST=" + e.proxy.Host()}, "", "doctor", "-o", "json")
	var rep struct {
		Checks []struct{ Name, Status, Detail string }
	}
	if err := json.Unmarshal([]byte(r.Stdout), &rep); err != nil {
		e.t.Fatalf("doctor -o json: %v\n%s\n%s", err, r.Stdout, r.Stderr)
	}
	for _, c := range rep.Checks {
		if c.Name == "host access rules" {
			return c.Status, c.Detail
		}
	}
	e.t.Fatalf("doctor has no host access rules check:\n%s", r.Stdout)
	return "", ""
}

// connect runs, as user inside the user's session (spawn creates it the
// first time, as a login would), nc to addr:port; "$gw" is the gateway of
// the session's network. It returns what the service said, or "" if the
// connection failed (nc gives up after 2 seconds).
func (e *env) connect(user, addr string, port int) string {
	e.t.Helper()
	cmd := fmt.Sprintf(`gw=$(ip route | awk '/^default/ {print $3}'); nc -w 2 %s %d </dev/null`, addr, port)
	r := e.RunEnv([]string{"SSH_ORIGINAL_COMMAND=" + cmd}, "", "spawn", "--user", user)
	out := strings.TrimSpace(r.Stdout)
	if r.Code == 0 && out == "" {
		e.t.Fatalf("nc %s %d connected and read nothing; stderr:\n%s", addr, port, r.Stderr)
	}
	if r.Code != 0 && (out != "" || strings.Contains(r.Stderr, "Error:")) {
		e.t.Fatalf("spawn (nc %s %d): exit %d\nstdout:\n%s\nstderr:\n%s", addr, port, r.Code, r.Stdout, r.Stderr)
	}
	return out
}

func (e *env) mustReach(user, addr string, ls listener) {
	e.t.Helper()
	if got := e.connect(user, addr, ls.port); got != ls.token {
		e.t.Errorf("from %s's session, %s:%d (a service on the host's 0.0.0.0) is unreachable; want it reachable (got %q)", user, addr, ls.port, got)
	}
}

func (e *env) mustNotReach(user, addr string, ls listener) {
	e.t.Helper()
	if got := e.connect(user, addr, ls.port); got != "" {
		e.t.Errorf("from %s's session, %s:%d (a service on the host's 0.0.0.0) answered %q; want it unreachable", user, addr, ls.port, got)
	}
}

func changes(report string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(report))
	for sc.Scan() {
		if c, ok := strings.CutPrefix(sc.Text(), "changed host access rules ("); ok {
			out = append(out, strings.TrimSuffix(c, ")"))
		}
	}
	return out
}

func families(what string) []string {
	var out []string
	for _, f := range hostfw.DefaultFamilies() {
		out = append(out, f.Name+": "+what+" "+hostfw.Chain)
	}
	return out
}

// A service listening on the host's 0.0.0.0 is out of reach of a session
// through the network's gateway and through every other address of the
// host; an allowed port is reachable; with block_host_access off,
// everything is. A session's own network still works, and other users'
// networks stay out of reach.
func TestHostServicesAndSessions(t *testing.T) {
	e := newEnv(t)
	harness.RemoveHostFirewall(t) // spawn must install them itself
	allowed, other := listen(t), listen(t)
	addrs := append([]string{"$gw"}, hostAddrs(t)...)
	user := harness.Uniq("fwa")
	e.AddUser(user)

	// The default config: blocked, no exception. The first login creates
	// the session, installing the rules before its network.
	for _, a := range addrs {
		e.mustNotReach(user, a, allowed)
	}
	if fw := harness.HostFirewallState(t); !slices.Contains(fw, "IPv4 INPUT rule 1: -A INPUT -i psp+ -j PODSPAWN-INPUT") {
		t.Errorf("spawn did not install the rules: %q", fw)
	}
	if st, d := e.doctor(); st != "pass" {
		t.Errorf("doctor: host access rules %s: %s", st, d)
	}

	// The session's network is named for the rules.
	dc := harness.Docker(t)
	ctx := context.Background()
	key := desired.SessionKey{User: user}
	netName := desired.NetworkName(key)
	n, err := dc.NetworkInspect(ctx, netName, network.InspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := n.Options[hostfw.BridgeNameOption]; got != hostfw.BridgeName(netName) {
		t.Errorf("network %s: bridge name option %q, want %q", netName, got, hostfw.BridgeName(netName))
	}

	// The session's own network is untouched: a container beside the
	// session (as a companion service would be) is reachable.
	peer := peerService(t, e, netName)
	if got := e.connect(user, peer.addr, peer.port); got != "peer-ok" {
		t.Errorf("the session cannot reach %s:%d on its own network (got %q)", peer.addr, peer.port, got)
	}
	// Another user's session cannot reach it (Docker's isolation of
	// networks, which the rules must not weaken).
	user2 := harness.Uniq("fwb")
	e.AddUser(user2)
	if got := e.connect(user2, peer.addr, peer.port); got != "" {
		t.Errorf("%s's session reached %s:%d on %s's network: %q", user2, peer.addr, peer.port, user, got)
	}

	// A firewall reload drops the jump: the host is exposed, doctor says
	// so, and the next cleanup pass puts it back.
	for _, f := range hostfw.DefaultFamilies() {
		if out, err := exec.Command(f.Command, append([]string{"-w", "-D", "INPUT"}, hostfw.JumpRule()...)...).CombinedOutput(); err != nil {
			t.Fatalf("%s -D INPUT: %v\n%s", f.Command, err, out)
		}
	}
	e.mustReach(user, "$gw", allowed)
	if st, d := e.doctor(); st != "fail" || !strings.Contains(d, "IPv4: INPUT does not send session traffic (-i psp+) to PODSPAWN-INPUT") {
		t.Errorf("doctor without the jump: %s: %s", st, d)
	}
	if got := changes(e.cleanup()); !cmp.Equal(got, families("updated")) {
		t.Errorf("cleanup after the jump was removed: changes %q, want %q", got, families("updated"))
	}
	e.mustNotReach(user, "$gw", allowed)

	// Allow one port: it is reachable at every address, the other is not.
	e.setSecurity(fmt.Sprintf("  allowed_host_ports: [%d]\n", allowed.port))
	if got := changes(e.cleanup()); !cmp.Equal(got, families("updated")) {
		t.Errorf("cleanup after allowing a port: changes %q, want %q", got, families("updated"))
	}
	for _, a := range addrs {
		e.mustReach(user, a, allowed)
	}
	e.mustNotReach(user, "$gw", other)
	if st, d := e.doctor(); st != "pass" || !strings.Contains(d, fmt.Sprintf("allowed ports: %d/tcp, %d/udp", allowed.port, allowed.port)) {
		t.Errorf("doctor with an allowed port: %s: %s", st, d)
	}
	// A pass with nothing to do changes nothing.
	if got := changes(e.cleanup()); len(got) != 0 {
		t.Errorf("a second cleanup pass changed the rules: %q", got)
	}

	// Off: the rules are removed and every port is reachable again.
	e.setSecurity("  block_host_access: false\n")
	if got := changes(e.cleanup()); !cmp.Equal(got, families("removed")) {
		t.Errorf("cleanup with block_host_access false: changes %q, want %q", got, families("removed"))
	}
	if fw := harness.HostFirewallState(t); len(fw) != 0 {
		t.Errorf("rules left with block_host_access false: %q", fw)
	}
	e.mustReach(user, "$gw", other)
	if st, d := e.doctor(); st != "warn" || !strings.Contains(d, "security.block_host_access is false") {
		t.Errorf("doctor with block_host_access false: %s: %s", st, d)
	}
}

type peerAddr struct {
	addr string
	port int
}

// peerService runs a busybox listener on the session network, removed
// when the test ends (before the network: cleanups run last-in first-out).
func peerService(t *testing.T, e *env, netName string) peerAddr {
	t.Helper()
	dc := harness.Docker(t)
	ctx := context.Background()
	const port = 7000
	c, err := dc.ContainerCreate(ctx, &container.Config{Image: harness.Image,
		Cmd: []string{"sh", "-c", fmt.Sprintf("while :; do echo peer-ok | nc -l -p %d; done", port)}},
		&container.HostConfig{NetworkMode: container.NetworkMode(netName)}, nil, nil, harness.Uniq("fwpeer"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dc.ContainerRemove(context.Background(), c.ID, container.RemoveOptions{Force: true}) })
	if err := dc.ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	in, err := dc.ContainerInspect(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	ep := in.NetworkSettings.Networks[netName]
	if ep == nil || ep.IPAddress == "" {
		t.Fatalf("peer container has no address on %s", netName)
	}
	p := peerAddr{addr: ep.IPAddress, port: port}
	// The listener is up once it accepts a connection from the host.
	harness.Eventually(t, 30*time.Second, "the peer listener", func() bool {
		conn, err := net.DialTimeout("tcp4", net.JoinHostPort(p.addr, fmt.Sprint(port)), time.Second)
		if err != nil {
			return false
		}
		defer conn.Close()
		line, _ := bufio.NewReader(conn).ReadString('\n')
		return strings.TrimSpace(line) == "peer-ok"
	})
	return p
}
