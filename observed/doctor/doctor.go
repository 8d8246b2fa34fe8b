// Package doctor runs podspawn's preflight checks. Every input (config,
// DOCKER_HOST, PATH, the Docker client, statfs, account lookup) comes in
// through Env, so every check can run against a temporary root in tests.
package doctor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/system"
	"github.com/docker/docker/client"

	"github.com/podspawn/podspawn/desired/config"
	"github.com/podspawn/podspawn/reconcile"
)

// Status of one check.
type Status string

const (
	Pass Status = "pass"
	Warn Status = "warn"
	Fail Status = "fail"
)

// Result is the outcome of one check. Detail and Fix are single lines.
type Result struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	Detail string `json:"detail,omitempty"`
	Fix    string `json:"fix,omitempty"`
}

// Docker is the part of the Docker client doctor uses.
type Docker interface {
	Info(ctx context.Context) (system.Info, error)
	ImageInspect(ctx context.Context, ref string, opts ...client.ImageInspectOption) (image.InspectResponse, error)
	NetworkList(ctx context.Context, options network.ListOptions) ([]network.Summary, error)
}

// DefaultTimeout bounds each check, so a hung daemon or mount never hangs
// doctor.
const DefaultTimeout = 5 * time.Second

// Env is everything the checks read.
type Env struct {
	// ConfigPath is --config; Config is what loaded from it, valid only
	// when ConfigErr is nil.
	ConfigPath string
	Config     config.Config
	ConfigErr  error

	// Docker is nil when the client could not be built (DockerErr says
	// why); DockerHost is $DOCKER_HOST.
	Docker     Docker
	DockerErr  error
	DockerHost string

	// Path is $PATH, searched for sshd and ssh.
	Path string
	// Binary is this podspawn executable, used in suggested fixes.
	Binary string
	// Euid is the effective user id doctor runs as.
	Euid int

	// Statfs returns the bytes available to unprivileged users on the
	// filesystem holding path.
	Statfs func(path string) (uint64, error)
	// LookupAccount resolves a host account name to its uid and gid.
	LookupAccount func(name string) (uid, gid int, err error)

	// LoopControl is the loop devices' control file; empty means
	// DefaultLoopControl.
	LoopControl string

	// Timeout overrides DefaultTimeout (tests).
	Timeout time.Duration

	// GuardPlan computes the cleanup plan without changing anything and
	// says what the blast-radius guard holds; nil skips the check.
	GuardPlan func(ctx context.Context) (GuardView, error)

	// HostFirewall reads the host access rules (firewall.go).
	HostFirewall HostFirewall

	// Kube is the cluster of runtime: kubernetes (kubernetes.go).
	Kube Kube
}

// GuardView is what the removal guard check needs from a plan.
type GuardView struct {
	// NoDatabase: there is no state database yet.
	NoDatabase bool
	Held       int
	Holds      []reconcile.Hold
	// Sessions and Users count session rows and users with a key file.
	Sessions, Users int
}

type check struct {
	name string
	// needsConfig checks are not run on a config that failed to load:
	// checking the defaults instead would describe a server that does not
	// exist (the old G20 asymmetry).
	needsConfig bool
	// timeout overrides Env.Timeout for slow checks (quick_check).
	timeout time.Duration
	// hangFix is the advice when the check does not answer in time.
	hangFix string
	run     func(ctx context.Context, e *Env) Result
}

// checks in the order of the admin-commands page, then podspawn's own.
func checks() []check {
	dockerHang := "Docker accepted the connection but did not answer; check it with: sudo systemctl status docker"
	return []check{
		{name: "Docker daemon", run: checkDockerDaemon, hangFix: dockerHang},
		{name: "Docker socket", run: checkDockerSocket},
		{name: "OpenSSH version", run: checkOpenSSH},
		{name: "sshd config valid", needsConfig: true, run: checkSSHDConfig},
		{name: "AuthorizedKeysCommand", needsConfig: true, run: checkAuthorizedKeysCommand},
		{name: "podspawn config dir", run: checkConfigDir},
		{name: "key directory", needsConfig: true, run: checkKeyDir},
		{name: "state directory", needsConfig: true, run: checkStateDir},
		{name: "lock directory", needsConfig: true, run: checkLockDir},
		{name: "disk space", needsConfig: true, run: checkDiskSpace},
		{name: "disk limit", needsConfig: true, run: checkDiskLimit, hangFix: dockerHang},
		{name: "home size", needsConfig: true, run: checkHomeSize},
		{name: "default image", needsConfig: true, run: checkDefaultImage, hangFix: dockerHang},
		{name: "session networks", run: checkSessionNetworks, hangFix: dockerHang},
		{name: "host access rules", needsConfig: true, run: checkHostFirewall},
		{name: "config file", run: checkConfigFile},
		{name: "state database", needsConfig: true, run: checkStateDatabase, timeout: 30 * time.Second},
		{name: "cleanup daemon", needsConfig: true, run: checkCleanupDaemon},
		{name: "removal guard", needsConfig: true, run: checkRemovalGuard, hangFix: dockerHang, timeout: 30 * time.Second},
		{name: "audit log", needsConfig: true, run: checkAuditLog},
	}
}

// Run runs every check concurrently (each bounded by its timeout) and
// returns the results in output order.
func Run(ctx context.Context, e Env) []Result {
	if e.Timeout <= 0 {
		e.Timeout = DefaultTimeout
	}
	cs := checks()
	if runsOnKubernetes(&e) {
		cs = append(cs, kubeChecks()...)
	}
	results := make([]Result, len(cs))
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = runOne(ctx, &e, c)
		}()
	}
	wg.Wait()
	return results
}

func runOne(ctx context.Context, e *Env, c check) Result {
	if c.needsConfig && e.ConfigErr != nil {
		return Result{Name: c.name, Status: Fail,
			Detail: "not checked: the config file does not load (see the config file check)",
			Fix:    "fix " + e.ConfigPath + ", then re-run podspawn doctor"}
	}
	timeout := e.Timeout
	if c.timeout > timeout {
		timeout = c.timeout
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	done := make(chan Result, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- Result{Status: Fail, Detail: fmt.Sprintf("internal error: %v", p),
					Fix: "report this as a podspawn bug"}
			}
		}()
		done <- c.run(cctx, e)
	}()
	var r Result
	select {
	case r = <-done:
	case <-cctx.Done():
		// The check ignored its context (a stuck syscall on a hung mount):
		// report it and leave the goroutine behind; doctor exits soon.
	}
	if err := cctx.Err(); err != nil {
		r = Result{Status: Fail, Detail: fmt.Sprintf("no answer within %s", timeout), Fix: c.hangFix}
		if errors.Is(ctx.Err(), context.Canceled) {
			r.Detail = "interrupted"
		}
		if r.Fix == "" {
			r.Fix = "look for a hung mount or process; this check ran longer than " + timeout.String()
		}
	}
	r.Name = c.name
	r.Detail = oneLine(r.Detail)
	r.Fix = oneLine(r.Fix)
	return r
}

// oneLine keeps multi-line tool output from breaking the line format.
func oneLine(s string) string {
	fields := strings.FieldsFunc(strings.TrimSpace(s), func(r rune) bool { return r == '\n' || r == '\r' })
	for i := range fields {
		fields[i] = strings.TrimSpace(fields[i])
	}
	return strings.Join(fields, "; ")
}

// Summary counts the results by status.
func Summary(rs []Result) (passed, warned, failed int) {
	for _, r := range rs {
		switch r.Status {
		case Pass:
			passed++
		case Warn:
			warned++
		default:
			failed++
		}
	}
	return passed, warned, failed
}

// RenderText writes the admin-commands format: one line per check (the
// detail is not shown on pass), an indented fix line under each warning
// or failure, a blank line and the summary.
func RenderText(w io.Writer, rs []Result) {
	for _, r := range rs {
		switch r.Status {
		case Pass:
			fmt.Fprintf(w, "  [pass] %s\n", r.Name)
		case Warn:
			fmt.Fprintf(w, "  [warn] %s: %s\n", r.Name, r.Detail)
		default:
			fmt.Fprintf(w, "  [FAIL] %s: %s\n", r.Name, r.Detail)
		}
		if r.Status != Pass && r.Fix != "" {
			fmt.Fprintf(w, "        fix: %s\n", r.Fix)
		}
	}
	p, wn, f := Summary(rs)
	fmt.Fprintf(w, "\n%d passed, %d warned, %d failed\n", p, wn, f)
}

// JSONReport is the machine-readable form (-o json).
type JSONReport struct {
	FormatVersion string   `json:"format_version"`
	Checks        []Result `json:"checks"`
	Summary       struct {
		Passed int `json:"passed"`
		Warned int `json:"warned"`
		Failed int `json:"failed"`
	} `json:"summary"`
}

// RenderJSON writes the results as one JSON document, pass details
// included.
func RenderJSON(w io.Writer, rs []Result) error {
	rep := JSONReport{FormatVersion: "1", Checks: rs}
	rep.Summary.Passed, rep.Summary.Warned, rep.Summary.Failed = Summary(rs)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}
