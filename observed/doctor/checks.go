package doctor

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/system"
	"golang.org/x/sys/unix"

	"github.com/podspawn/podspawn/desired/keys"
	"github.com/podspawn/podspawn/desired/lock"
	"github.com/podspawn/podspawn/desired/sqlstore"
	"github.com/podspawn/podspawn/reconcile"
)

const defaultDockerSocket = "/var/run/docker.sock"

func pass(detail string) Result { return Result{Status: Pass, Detail: detail} }
func warn(detail, fix string) Result {
	return Result{Status: Warn, Detail: detail, Fix: fix}
}
func fail(detail, fix string) Result {
	return Result{Status: Fail, Detail: detail, Fix: fix}
}

func dockerHostLabel(e *Env) string {
	if e.DockerHost != "" {
		return e.DockerHost
	}
	return "unix://" + defaultDockerSocket
}

func checkDockerDaemon(ctx context.Context, e *Env) Result {
	if e.Docker == nil {
		return fail(fmt.Sprintf("cannot create a Docker client: %v", e.DockerErr),
			"fix DOCKER_HOST (now "+strconv.Quote(e.DockerHost)+") or unset it to use "+defaultDockerSocket)
	}
	info, err := e.Docker.Info(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return Result{} // runOne reports the timeout
		}
		return fail(fmt.Sprintf("Docker is not reachable at %s: %v", dockerHostLabel(e), err),
			"install Docker and start it: sudo systemctl start docker")
	}
	return pass("server version " + info.ServerVersion)
}

// checkDockerSocket reflects podspawn's privilege model rather than the
// old "everyone needs the socket" advice: with ssh.use_sudo (the default)
// spawn runs as root through sudo, so podspawn users never touch the
// socket, and a root:docker 0660 socket is exactly right. A socket that
// every local account may use is a warning, since Docker access is root
// access. Only with use_sudo off do users need it (through group docker).
func checkDockerSocket(_ context.Context, e *Env) Result {
	path := defaultDockerSocket
	if e.DockerHost != "" {
		if !strings.HasPrefix(e.DockerHost, "unix://") {
			return pass("DOCKER_HOST is " + e.DockerHost + "; no local socket to check")
		}
		path = strings.TrimPrefix(e.DockerHost, "unix://")
	}
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fail(path+" not found", "start Docker (sudo systemctl start docker), or point DOCKER_HOST at its socket")
	}
	if err != nil {
		return fail(fmt.Sprintf("cannot stat %s: %v", path, err), "check the permissions of the directories above "+path)
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return fail(fmt.Sprintf("%s exists but is not a socket (mode %s)", path, fi.Mode()),
			"remove it and restart Docker: sudo systemctl restart docker")
	}
	perm := fi.Mode().Perm()
	if perm&0o006 != 0 {
		return warn(fmt.Sprintf("%s is accessible to every local account (mode %04o); Docker access is root access", path, perm),
			"sudo chmod 660 "+path+" (podspawn users do not need it: spawn runs as root through sudo)")
	}
	if e.ConfigErr == nil && !e.Config.SSH.UseSudo {
		return warn(fmt.Sprintf("%s not world-accessible (mode %04o); with ssh.use_sudo off, spawn runs as each SSH user, who needs docker group membership", path, perm),
			"set ssh.use_sudo: true (recommended), or add each podspawn user to the socket's group: sudo usermod -aG docker <user>")
	}
	return pass(fmt.Sprintf("%s mode %04o", path, perm))
}

var opensshVersionRE = regexp.MustCompile(`OpenSSH_(\d+)\.(\d+)`)

func checkOpenSSH(ctx context.Context, e *Env) Result {
	found := false
	var notOpenSSH string
	for _, name := range []string{"sshd", "ssh"} {
		bin, err := lookPath(name, e.Path)
		if err != nil {
			continue
		}
		found = true
		out, _ := runTool(ctx, bin, "-V")
		if ctx.Err() != nil {
			return Result{}
		}
		for _, line := range strings.Split(out, "\n") {
			if !strings.Contains(line, "OpenSSH") {
				continue
			}
			line = strings.TrimSpace(line)
			m := opensshVersionRE.FindStringSubmatch(line)
			if m == nil {
				return pass(line)
			}
			major, _ := strconv.Atoi(m[1])
			minor, _ := strconv.Atoi(m[2])
			if major < 7 || (major == 7 && minor < 4) {
				return fail(line+" is too old; podspawn needs OpenSSH 7.4+ for the restrict key option",
					"upgrade openssh-server: sudo apt-get install openssh-server")
			}
			return pass(line)
		}
		if notOpenSSH == "" {
			notOpenSSH = fmt.Sprintf("%s -V printed no OpenSSH version: %q", bin, truncate(strings.TrimSpace(out), 120))
		}
	}
	if !found {
		return fail("sshd not found in PATH; install openssh-server",
			"sudo apt-get install openssh-server (and make sure /usr/sbin is in PATH)")
	}
	return fail(notOpenSSH, "podspawn needs OpenSSH 7.4+: sudo apt-get install openssh-server")
}

func checkSSHDConfig(ctx context.Context, e *Env) Result {
	cfgPath := e.Config.SSH.SSHDConfig
	bin, err := lookPath("sshd", e.Path)
	if err != nil {
		return fail("sshd not found in PATH; cannot validate "+cfgPath,
			"sudo apt-get install openssh-server (and make sure /usr/sbin is in PATH)")
	}
	out, err := runTool(ctx, bin, "-t", "-f", cfgPath)
	if ctx.Err() != nil {
		return Result{}
	}
	if err == nil {
		return pass(cfgPath)
	}
	out = strings.TrimSpace(out)
	if e.Euid != 0 {
		for _, s := range []string{"Could not load host key", "no hostkeys available", "Permission denied", "bad permissions"} {
			if strings.Contains(out, s) {
				return warn("sshd -t needs root to read host keys; re-run with sudo to fully validate",
					"sudo podspawn doctor")
			}
		}
	}
	if out == "" {
		out = err.Error()
	}
	return fail(fmt.Sprintf("sshd -t -f %s failed: %s", cfgPath, truncate(oneLine(out), 300)),
		"correct the errors sshd -t reports in "+cfgPath+" (duplicate directives, unknown keywords, bad Match blocks)")
}

func checkConfigDir(_ context.Context, e *Env) Result {
	dir := filepath.Dir(e.ConfigPath)
	fi, r, ok := statDir(dir, "sudo podspawn server-setup (it creates every directory podspawn needs)")
	if !ok {
		return r
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return warn(fmt.Sprintf("%s is writable by group or others (mode %04o); whoever can write it decides images and keys", dir, perm),
			"sudo chmod 755 "+dir)
	}
	return pass(dir)
}

// checkKeyDir: root owns the key directory (0750) and its files (0640)
// and sshd's auth-keys account reads them through its group. An owner
// other than root is the older model, in which that account could plant
// links for root to follow; server-setup migrates it through handles.
func checkKeyDir(_ context.Context, e *Env) Result {
	dir := e.Config.Auth.KeyDir
	account := e.Config.SSH.AuthKeysUser
	const setupFix = "sudo podspawn server-setup (it gives the key directory and its files to root, readable by the auth-keys account's group, without following links)"
	fi, r, ok := statDir(dir, setupFix)
	if !ok {
		return r
	}
	var problems []string
	gid := -1
	if e.LookupAccount != nil {
		if _, g, err := e.LookupAccount(account); err != nil {
			problems = append(problems, fmt.Sprintf("account %s (ssh.auth_keys_user) does not exist, so sshd cannot run auth-keys", account))
		} else {
			gid = g
		}
	}
	uid, dgid := statOwner(fi)
	if uid != 0 {
		problems = append(problems, fmt.Sprintf("%s is owned by uid %d, not root: that account could plant links for root to follow", dir, uid))
	}
	if gid >= 0 && dgid != gid {
		problems = append(problems, fmt.Sprintf("%s has group %d, not the group of %s (gid %d) that sshd runs auth-keys as", dir, dgid, account, gid))
	}
	if m := modeBits(fi); m != keys.DirMode {
		problems = append(problems, fmt.Sprintf("%s has mode %s, should be %04o", dir, modeString(m), keys.DirMode))
	}
	// Listing needs root or the auth-keys group; without, only the
	// directory is checked.
	if users, err := keys.ListUsers(dir); err == nil {
		var bad []string
		for _, u := range users {
			p := filepath.Join(dir, u)
			fi, err := os.Lstat(p)
			switch {
			case err != nil:
				continue
			case fi.Mode()&fs.ModeSymlink != 0:
				bad = append(bad, u+" (a symbolic link)")
				continue
			case !fi.Mode().IsRegular():
				bad = append(bad, u+" (not a regular file)")
				continue
			}
			fuid, fgid := statOwner(fi)
			if m := modeBits(fi); fuid != 0 || (gid >= 0 && fgid != gid) || m != keys.FileMode {
				bad = append(bad, fmt.Sprintf("%s (%s %d:%d)", u, modeString(m), fuid, fgid))
			}
		}
		if len(bad) > 0 {
			const show = 5
			list := strings.Join(bad[:min(len(bad), show)], ", ")
			if len(bad) > show {
				list += fmt.Sprintf(" and %d more", len(bad)-show)
			}
			problems = append(problems, fmt.Sprintf("key files should be plain files, mode %04o, owner root and the group of %s: %s", keys.FileMode, account, list))
		}
	}
	if len(problems) > 0 {
		return warn(strings.Join(problems, "; "), setupFix)
	}
	return pass(dir)
}

func statOwner(fi fs.FileInfo) (uid, gid int) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid), int(st.Gid)
	}
	return -1, -1
}

// modeBits is the permission and special bits of fi.
func modeBits(fi fs.FileInfo) fs.FileMode {
	return fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
}

func modeString(m fs.FileMode) string {
	v := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		v |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		v |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		v |= 0o1000
	}
	return fmt.Sprintf("%04o", v)
}

func checkStateDir(_ context.Context, e *Env) Result {
	return checkWritableDir(e.Config.State.Dir())
}

func checkLockDir(_ context.Context, e *Env) Result {
	return checkWritableDir(e.Config.State.LockDir)
}

// checkWritableDir proves write access by creating and removing a file:
// permission bits do not tell (root, ACLs, read-only mounts).
func checkWritableDir(dir string) Result {
	fi, r, ok := statDir(dir, fmt.Sprintf("sudo mkdir -p -m 700 %s && sudo chown root:root %s", dir, dir))
	if !ok {
		return r
	}
	f, err := os.CreateTemp(dir, ".doctor-write-test-*")
	if err != nil {
		return fail(fmt.Sprintf("%s not writable: %v", dir, err),
			fmt.Sprintf("run doctor as root, or fix the mount or ownership: sudo chown root:root %s", dir))
	}
	f.Close()
	os.Remove(f.Name())
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return warn(fmt.Sprintf("%s is writable by group or others (mode %04o); other accounts could tamper with podspawn state", dir, perm),
			"sudo chmod 700 "+dir)
	}
	return pass(dir)
}

func checkDiskSpace(_ context.Context, e *Env) Result {
	statfs := e.Statfs
	if statfs == nil {
		statfs = Statfs
	}
	path := e.Config.State.Dir()
	free, err := statfs(path)
	if err != nil {
		path = "/"
		free, err = statfs(path)
	}
	if err != nil {
		return warn("could not check disk space: "+err.Error(), "check free space by hand: df -h "+e.Config.State.Dir())
	}
	gb := float64(free) / (1 << 30)
	fix := fmt.Sprintf("free space on the filesystem of %s; unused images are usually the largest: sudo docker image prune -a", path)
	switch {
	case gb < 1:
		return fail(fmt.Sprintf("%.1f GB free (need at least 1 GB for images)", gb), fix)
	case gb < 5:
		return warn(fmt.Sprintf("%.1f GB free (recommend 5+ GB for image cache)", gb), fix)
	}
	return pass(fmt.Sprintf("%.1f GB free", gb))
}

// Statfs returns the bytes available to unprivileged users on the
// filesystem holding path.
func Statfs(path string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	return st.Bavail * uint64(st.Bsize), nil
}

func checkDefaultImage(ctx context.Context, e *Env) Result {
	img := e.Config.Defaults.Image
	if e.Docker == nil {
		return fail(fmt.Sprintf("cannot check %s: no Docker client: %v", img, e.DockerErr), "fix the Docker daemon check first")
	}
	resp, err := e.Docker.ImageInspect(ctx, img)
	switch {
	case err == nil:
		id := strings.TrimPrefix(resp.ID, "sha256:")
		return pass(fmt.Sprintf("%s cached (%s)", img, truncateID(id)))
	case ctx.Err() != nil:
		return Result{}
	case errdefs.IsNotFound(err):
		return warn(img+" not cached; first connection will pull it (slow)", "sudo docker pull "+img)
	}
	return fail(fmt.Sprintf("cannot check %s: %v", img, err), "fix the Docker daemon check first")
}

// dockerDefaultPools are dockerd's built-in local address pools, in force
// when daemon.json sets no "default-address-pools" (Info then reports
// none): 172.17-172.31 as /16s and 192.168.0.0/16 as /20s, 31 networks.
var dockerDefaultPools = []system.NetworkAddressPool{
	{Base: "172.17.0.0/16", Size: 16},
	{Base: "172.18.0.0/16", Size: 16},
	{Base: "172.19.0.0/16", Size: 16},
	{Base: "172.20.0.0/14", Size: 16},
	{Base: "172.24.0.0/14", Size: 16},
	{Base: "172.28.0.0/14", Size: 16},
	{Base: "192.168.0.0/16", Size: 20},
}

// sessionNetworksFix: a /16 split into /24s is 256 networks.
const sessionNetworksFix = `add larger "default-address-pools" to /etc/docker/daemon.json, e.g. {"base":"10.200.0.0/16","size":24}, and restart Docker`

// sessionNetworksLow is the free-range count below which doctor warns.
const sessionNetworksLow = 50

// checkSessionNetworks reports how many more session networks Docker can
// create: every session has its own bridge network, and once the address
// pools are used up dockerd refuses new ones, so new sessions fail.
func checkSessionNetworks(ctx context.Context, e *Env) Result {
	if e.Docker == nil {
		return fail(fmt.Sprintf("cannot check Docker's address pools: no Docker client: %v", e.DockerErr), "fix the Docker daemon check first")
	}
	info, err := e.Docker.Info(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return Result{}
		}
		return fail(fmt.Sprintf("cannot check Docker's address pools: %v", err), "fix the Docker daemon check first")
	}
	configured := info.DefaultAddressPools
	if len(configured) == 0 {
		configured = dockerDefaultPools
	}
	pools, err := ipv4Pools(configured)
	if err != nil {
		return fail(err.Error(), `correct that entry of "default-address-pools" in /etc/docker/daemon.json and restart Docker`)
	}
	if len(pools) == 0 {
		return fail(`"default-address-pools" in Docker's daemon.json has no IPv4 pool; new sessions cannot get a network`, sessionNetworksFix)
	}
	nets, err := e.Docker.NetworkList(ctx, network.ListOptions{})
	if err != nil {
		if ctx.Err() != nil {
			return Result{}
		}
		return fail(fmt.Sprintf("cannot list Docker networks: %v", err), "fix the Docker daemon check first")
	}
	var capacity int64
	for _, p := range pools {
		capacity += p.ranges()
	}
	used := rangesInUse(pools, nets)
	free := max(capacity-used, 0)
	switch {
	case free == 0:
		return fail(fmt.Sprintf("no address range left for a session network (%d of %d in use); new sessions cannot start", capacity, capacity), sessionNetworksFix)
	case free < sessionNetworksLow:
		return warn(fmt.Sprintf("room for only %d more session networks (%d of %d address ranges in use); every session needs one", free, used, capacity), sessionNetworksFix)
	}
	return pass(fmt.Sprintf("room for %d more session networks (%d of %d address ranges in use)", free, used, capacity))
}

// addrPool is one IPv4 default address pool: base split into networks
// of prefix length size.
type addrPool struct {
	base netip.Prefix
	size int
}

func (p addrPool) ranges() int64 { return 1 << (p.size - p.base.Bits()) }

// ipv4Pools parses the pools as dockerd does: IPv6 pools are left out
// (session networks are IPv4 only), and a pool nested in another is
// dropped, since dockerd allocates from the outer one.
func ipv4Pools(in []system.NetworkAddressPool) ([]addrPool, error) {
	var pools []addrPool
	for _, p := range in {
		name := fmt.Sprintf(`{"base":%q,"size":%d}`, p.Base, p.Size)
		base, err := netip.ParsePrefix(p.Base)
		if err != nil {
			return nil, fmt.Errorf("address pool %s in Docker's \"default-address-pools\": base is not an address range: %v", name, err)
		}
		if !base.Addr().Is4() {
			continue
		}
		if p.Size < base.Bits() || p.Size > 32 {
			return nil, fmt.Errorf("address pool %s in Docker's \"default-address-pools\": size must be between %d (the base's prefix length) and 32", name, base.Bits())
		}
		pools = append(pools, addrPool{base: base.Masked(), size: p.Size})
	}
	slices.SortFunc(pools, func(a, b addrPool) int {
		if c := a.base.Addr().Compare(b.base.Addr()); c != 0 {
			return c
		}
		return a.base.Bits() - b.base.Bits()
	})
	kept := pools[:0]
	for _, p := range pools {
		if len(kept) > 0 && kept[len(kept)-1].base.Overlaps(p.base) {
			continue
		}
		kept = append(kept, p)
	}
	return kept, nil
}

// rangesInUse counts the pool ranges that existing networks' IPv4 subnets
// occupy. A network Docker allocated takes exactly one range; a subnet
// given by hand may share a range with another network or span several.
func rangesInUse(pools []addrPool, nets []network.Summary) int64 {
	spans := make([][][2]uint64, len(pools)) // per pool: first and last range index
	for _, n := range nets {
		for _, c := range n.IPAM.Config {
			sub, err := netip.ParsePrefix(c.Subnet)
			if err != nil || !sub.Addr().Is4() {
				continue
			}
			lo, hi := ipv4Span(sub)
			for i, p := range pools {
				plo, phi := ipv4Span(p.base)
				if hi < plo || lo > phi {
					continue
				}
				shift := 32 - p.size
				spans[i] = append(spans[i], [2]uint64{(max(lo, plo) - plo) >> shift, (min(hi, phi) - plo) >> shift})
			}
		}
	}
	var used int64
	for _, s := range spans {
		slices.SortFunc(s, func(a, b [2]uint64) int { return cmp.Compare(a[0], b[0]) })
		next := uint64(0) // first range index not yet counted
		for _, r := range s {
			lo := max(r[0], next)
			if r[1] >= lo {
				used += int64(r[1] - lo + 1)
				next = r[1] + 1
			}
		}
	}
	return used
}

// ipv4Span returns the first and last address of an IPv4 prefix.
func ipv4Span(p netip.Prefix) (uint64, uint64) {
	a := p.Masked().Addr().As4()
	lo := uint64(binary.BigEndian.Uint32(a[:]))
	return lo, lo + 1<<(32-p.Bits()) - 1
}

func checkConfigFile(_ context.Context, e *Env) Result {
	switch {
	case e.ConfigErr != nil:
		return fail(e.ConfigErr.Error(),
			"fix "+e.ConfigPath+" as the message above says; commands other than doctor refuse to run until it loads")
	case !e.Config.Exists:
		return warn(e.ConfigPath+" does not exist; using built-in defaults",
			"sudo podspawn server-setup writes one, or pass --config with the right path")
	}
	return pass(e.ConfigPath)
}

func checkStateDatabase(ctx context.Context, e *Env) Result {
	path := e.Config.State.DBPath
	h, err := sqlstore.CheckHealth(ctx, path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return warn(path+" does not exist yet; no session has been created",
			"nothing to do if this is a new server: the first connection (or sudo podspawn cleanup) creates it")
	case ctx.Err() != nil:
		return Result{}
	case errors.Is(err, fs.ErrPermission):
		return fail(err.Error(), "run doctor as root: sudo podspawn doctor")
	case err != nil:
		return fail(err.Error(), "stop podspawn cleanup, copy "+path+" and its -wal file aside, and restore a good backup")
	case len(h.Problems) > 0:
		p := h.Problems
		if len(p) > 3 {
			p = append(p[:3:3], fmt.Sprintf("and %d more", len(h.Problems)-3))
		}
		return fail("quick_check: "+strings.Join(p, "; "),
			"stop podspawn cleanup, copy "+path+" and its -wal file aside, and restore a good backup")
	case h.SchemaVersion > h.Supported:
		return fail(fmt.Sprintf("schema version %d is newer than this podspawn supports (%d)", h.SchemaVersion, h.Supported),
			"install the podspawn release that wrote it: sudo podspawn update")
	}
	return pass(fmt.Sprintf("%s: quick_check ok, schema version %d", path, h.SchemaVersion))
}

func checkCleanupDaemon(_ context.Context, e *Env) Result {
	// The probe is a non-blocking shared flock released at once and never
	// creates the file (controller.DaemonLockHolder).
	pid, running, err := lock.DaemonHolder(lock.DaemonPath(e.Config.State.Dir()))
	switch {
	case err != nil:
		return warn(fmt.Sprintf("cannot tell whether it runs: %v", err), "check: sudo systemctl status podspawn-cleanup")
	case !running:
		return warn("not running; grace periods are enforced only at connect time",
			"if the unit is not installed yet: sudo cp hack/systemd/podspawn-cleanup.service /etc/systemd/system/ (from the podspawn source); then sudo systemctl daemon-reload && sudo systemctl enable --now podspawn-cleanup.service")
	case pid > 0:
		return pass(fmt.Sprintf("running (pid %d)", pid))
	}
	return pass("running")
}

// checkRemovalGuard fails while the blast-radius guard holds removals
// (the daemon keeps holding them until someone looks), and warns about an
// empty key directory beside live sessions: the guard holds a mass
// removal, but a few sessions would still go.
func checkRemovalGuard(ctx context.Context, e *Env) Result {
	if e.GuardPlan == nil {
		return warn("not checked: no planner", "run podspawn doctor from the podspawn binary")
	}
	v, err := e.GuardPlan(ctx)
	switch {
	case ctx.Err() != nil:
		return Result{}
	case err != nil:
		return warn("cannot plan a cleanup pass: "+err.Error(), "fix the Docker daemon or state database checks above, then re-run podspawn doctor")
	case v.NoDatabase:
		return pass("no state database yet")
	case v.Held > 0:
		var why []string
		for _, h := range v.Holds {
			why = append(why, fmt.Sprintf("%s: %s", h.Reason, h.Detail))
		}
		return fail(fmt.Sprintf("%d removal(s) held: %s", v.Held, strings.Join(why, "; ")), reconcile.HoldFix)
	case v.Users == 0 && v.Sessions > 0:
		return warn(fmt.Sprintf("the key directory %s holds no key file while %d session(s) exist; a cleanup pass removes sessions whose user has no key file", e.Config.Auth.KeyDir, v.Sessions),
			"check that auth.key_dir is right and mounted; podspawn cleanup --dry-run shows what a pass would remove")
	}
	return pass(fmt.Sprintf("nothing held (%d session(s), %d user(s) with keys)", v.Sessions, v.Users))
}

// statDir reports a missing path or a non-directory as a failure.
func statDir(dir, createFix string) (fs.FileInfo, Result, bool) {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fail(dir+" does not exist; run 'podspawn server-setup'", createFix), false
	case err != nil:
		return nil, fail(fmt.Sprintf("cannot stat %s: %v", dir, err), "check the permissions of the directories above "+dir), false
	case !fi.IsDir():
		return nil, fail(dir+" exists but is not a directory", "move "+dir+" aside, then: "+createFix), false
	}
	return fi, Result{}, true
}

// lookPath is exec.LookPath over an explicit PATH value.
func lookPath(name, pathEnv string) (string, error) {
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" {
			continue
		}
		p := filepath.Join(dir, name)
		fi, err := os.Stat(p)
		if err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH", name)
}

// runTool runs a tool with the C locale and returns its combined output.
func runTool(ctx context.Context, bin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	// A grandchild holding the output pipe must not keep us waiting.
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

func truncateID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
