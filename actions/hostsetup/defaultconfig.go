package hostsetup

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/podspawn/podspawn/desired/config"
)

// DefaultConfig renders cfg (normally config.Defaults()) as a commented
// config.yaml, so the operator sees every common setting with its value.
func DefaultConfig(cfg config.Config) []byte {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	list := func(xs []string) string {
		q := make([]string, len(xs))
		for i, x := range xs {
			q[i] = strconv.Quote(x)
		}
		return "[" + strings.Join(q, ", ") + "]"
	}
	p("# podspawn server configuration, written by 'podspawn server-setup' with the defaults.")
	p("# A key left out keeps its default. After editing, re-run 'podspawn server-setup' when you")
	p("# change the ssh section (it rewrites the sshd_config block and the sudoers rule).")
	p("")
	p("auth:")
	p("  # One authorized_keys file per user (managed with 'podspawn add-user'). Owned by root,")
	p("  # readable by the group of ssh.auth_keys_user (directory 0750, files 0640).")
	p("  key_dir: %s", cfg.Auth.KeyDir)
	p("")
	p("defaults:")
	p("  # Image and shell of a user's default (non-project) session container, and the limits")
	p("  # of every container: ceilings that a project's Podfile may only tighten.")
	p("  image: %s", cfg.Defaults.Image)
	p("  shell: %s", cfg.Defaults.Shell)
	p("  # CPUs per container; 0 means no limit.")
	p("  cpus: %s", strconv.FormatFloat(cfg.Defaults.CPUs, 'f', -1, 64))
	p("  # Memory per container (k, m or g suffix); 0 means no limit.")
	p("  memory: %s", cfg.Defaults.Memory)
	p("  # Writable layer per container, through the storage driver's size option (overlay2:")
	p("  # only on xfs mounted with pquota); \"\" or 0 means no limit.")
	p("  disk: %q", cfg.Defaults.Disk)
	p("  # Where the storage driver cannot limit a container's size: refuse (sessions do not")
	p("  # start) or warn (they start without the limit). 'podspawn doctor' says which applies.")
	p("  disk_unsupported: %s", cfg.Defaults.DiskUnsupported)
	p("")
	p("session:")
	p("  # What happens when a user's last SSH connection to a session closes:")
	p("  #   grace-period          keep the container for grace_period, then remove it")
	p("  #   destroy-on-disconnect remove it right away")
	p("  #   persistent            keep it until max_lifetime or 'podspawn stop'")
	p("  mode: %s", cfg.Session.Mode)
	p("  grace_period: %s", duration(cfg.Session.GracePeriod.Duration))
	p("  # No session lives longer than this, connected or not.")
	p("  max_lifetime: %s", duration(cfg.Session.MaxLifetime.Duration))
	p("  # Warn every connection with a terminal this long before max_lifetime ends it.")
	p("  warn_before: %s", durations(cfg.Session.WarnBefore))
	p("")
	p("state:")
	p("  # Root-only (0700) state: the session database, per-user locks, persistent homes.")
	p("  db_path: %s", cfg.State.DBPath)
	p("  lock_dir: %s", cfg.State.LockDir)
	p("  homes_dir: %s", cfg.State.HomesDir)
	p("  # Cap per user on persistent homes (a loop-mounted ext4 image each, e.g. 2g); empty: no cap.")
	p("  home_size: %q", cfg.State.HomeSize)
	p("  # Forwarded ssh-agent sockets, one directory per session (root-only; see ssh below).")
	p("  agent_dir: %s", cfg.State.AgentDir)
	p("  projects_dir: %s", cfg.State.ProjectsDir)
	p("")
	p("resources:")
	p("  # Sessions (default plus projects) one user may have at once; 0 means no limit.")
	p("  max_per_user: %d", cfg.Resources.MaxPerUser)
	p("  # Companion services a project's Podfile may declare; 0 allows none.")
	p("  max_services_per_project: %d", cfg.Resources.MaxServicesPerProject)
	p("  max_volumes_per_project: %d", cfg.Resources.MaxVolumesPerProject)
	p("")
	p("security:")
	p("  cap_drop: %s", list(cfg.Security.CapDrop))
	p("  cap_add: %s", list(cfg.Security.CapAdd))
	p("  no_new_privileges: %t", cfg.Security.NoNewPrivileges)
	p("  pids_limit: %d", cfg.Security.PidsLimit)
	p("  readonly_rootfs: %t", cfg.Security.ReadonlyRootfs)
	if len(cfg.Security.Tmpfs) == 0 {
		p("  tmpfs: {}")
	} else {
		p("  tmpfs:")
		keys := make([]string, 0, len(cfg.Security.Tmpfs))
		for k := range cfg.Security.Tmpfs {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			p("    %s: %s", strconv.Quote(k), strconv.Quote(cfg.Security.Tmpfs[k]))
		}
	}
	p("  # Container runtime, e.g. runsc for gVisor; empty means Docker's default.")
	p("  runtime: %s", strconv.Quote(cfg.Security.Runtime))
	p("  # Keep session containers away from the host's own services (anything listening on")
	p("  # 0.0.0.0, reached through their network's gateway or the host's addresses): podspawn")
	p("  # keeps iptables rules (the PODSPAWN-INPUT chain) that drop it, except the ports below")
	p("  # (8080 for TCP and UDP, \"8080/tcp\", \"53/udp\"). false removes the rules.")
	p("  block_host_access: %t", cfg.Security.BlockHostAccess)
	p("  allowed_host_ports: %s", list(cfg.Security.AllowedHostPorts))
	p("")
	p("cleanup:")
	p("  # Labelled Docker objects without a session are removed only once this old, so")
	p("  # cleanup never races a login that is creating them.")
	p("  orphan_min_age: %s", duration(cfg.Cleanup.OrphanMinAge.Duration))
	p("  # A session stuck in 'creating' with no live connection is abandoned after this.")
	p("  pending_timeout: %s", duration(cfg.Cleanup.PendingTimeout.Duration))
	p("  # A stopped session container is started again at once, then after waits of")
	p("  # crash_loop_backoff doubling up to crash_loop_backoff_max; one that stops again after")
	p("  # crash_loop_max_restarts restarts, none of which stayed up for crash_loop_reset_after,")
	p("  # is torn down (reason crash-loop; its last output is logged).")
	p("  crash_loop_max_restarts: %d", cfg.Cleanup.CrashLoopMaxRestarts)
	p("  crash_loop_reset_after: %s", duration(cfg.Cleanup.CrashLoopResetAfter.Duration))
	p("  crash_loop_backoff: %s", duration(cfg.Cleanup.CrashLoopBackoff.Duration))
	p("  crash_loop_backoff_max: %s", duration(cfg.Cleanup.CrashLoopBackoffMax.Duration))
	p("")
	p("ssh:")
	p("  # TCP port forwarding (ssh -L) for podspawn users. Off by default. RISK: sshd opens a")
	p("  # forwarded port from the HOST, so a user can reach every service listening on the host's")
	p("  # loopback (databases, admin UIs, a Docker API on tcp://127.0.0.1) and the ports other")
	p("  # users' containers publish. Unix-socket forwarding (the Docker socket) stays off anyway.")
	p("  allow_tcp_forwarding: %t", cfg.SSH.AllowTCPForwarding)
	p("  # Forward the client's ssh-agent (ssh -A) into the session container: each such")
	p("  # connection gets its own socket there (SSH_AUTH_SOCK), usable only by the user, gone at")
	p("  # disconnect. Whoever runs as the user in the container can then sign with the keys.")
	p("  allow_agent_forwarding: %t", cfg.SSH.AllowAgentForwarding)
	p("  # Run spawn as root through sudo (users need no Docker or database access).")
	p("  use_sudo: %t", cfg.SSH.UseSudo)
	p("  # Host group of podspawn users (sshd's Match block and the sudoers rule name it).")
	p("  group: %s", cfg.SSH.Group)
	p("  # Unprivileged account sshd runs 'podspawn auth-keys' as; it reads auth.key_dir through")
	p("  # its primary group, which should be its own.")
	p("  auth_keys_user: %s", cfg.SSH.AuthKeysUser)
	p("  sshd_config: %s", cfg.SSH.SSHDConfig)
	p("  # sftp-server inside session containers.")
	p("  sftp_server: %s", cfg.SSH.SFTPServer)
	p("")
	p("projects_file: %s", cfg.ProjectsFile)
	return []byte(b.String())
}

// duration renders 60s as "60s" and 8h as "8h" rather than "1m0s", "8h0m0s".
func duration(d time.Duration) string {
	switch {
	case d == 0:
		return "0s"
	case d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d%time.Minute == 0 && d >= 2*time.Minute:
		return fmt.Sprintf("%dm", d/time.Minute)
	case d%time.Second == 0:
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return d.String()
}

// durations renders a list of durations as a YAML flow sequence.
func durations(ds []config.Duration) string {
	parts := make([]string, 0, len(ds))
	for _, d := range ds {
		parts = append(parts, duration(d.Duration))
	}
	return "[" + strings.Join(parts, ", ") + "]"
}
