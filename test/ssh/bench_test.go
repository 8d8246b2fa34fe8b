package ssh

import (
	"fmt"
	"os"
	"os/exec"
	"sort"
	"testing"
	"time"

	"github.com/podspawn/podspawn/desired"
)

// BenchmarkSSHConnect measures "ssh user@host true" from start to exit:
// for a new session (the container is created) and for a re-attach to a
// running one, against the floors of a bare "docker exec <container> true"
// and of "ssh true" to an account sshd serves without podspawn, and spawn
// run directly (no sshd, no sudo), 20 runs each, measured in the same run. hack/bench-ssh.sh runs it; the medians are the figures.
func BenchmarkSSHConnect(b *testing.B) {
	const runs = 20
	s := newServer(b, serverOptions{Users: []string{"ssa"}, PlainUser: true})
	u := s.user("ssa")
	name := desired.ContainerName(desired.SessionKey{User: u.Name})

	timeIt := func(what string, cmd *exec.Cmd) time.Duration {
		start := time.Now()
		out, err := cmd.CombinedOutput()
		d := time.Since(start)
		if err != nil {
			b.Fatalf("%s: %v\n%s", what, err, out)
		}
		return d
	}
	var fresh, reattach, direct, floor, plain []time.Duration
	for i := 0; i < runs; i++ {
		if s.session(u, "") != nil {
			s.Env.MustRun("stop", u.Name)
		}
		fresh = append(fresh, timeIt("new session", s.ssh(u, nil, "true")))
	}
	for i := 0; i < runs; i++ {
		reattach = append(reattach, timeIt("re-attach", s.ssh(u, nil, "true")))
	}
	for i := 0; i < runs; i++ {
		cmd := exec.Command(s.Env.Bin, "--config", s.Env.ConfigPath, "spawn", "--user", u.Name)
		cmd.Env = append(os.Environ(), "SSH_ORIGINAL_COMMAND=true")
		direct = append(direct, timeIt("spawn without sshd", cmd))
	}
	for i := 0; i < runs; i++ {
		floor = append(floor, timeIt("docker exec", exec.Command("docker", "exec", name, "true")))
	}
	for i := 0; i < runs; i++ {
		plain = append(plain, timeIt("ssh without podspawn", s.ssh(s.Plain, nil, "true")))
	}
	report := func(label, unit string, ds []time.Duration) {
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		med := ds[len(ds)/2-1]/2 + ds[len(ds)/2]/2
		b.ReportMetric(float64(med.Microseconds())/1000, unit)
		b.Logf("%-34s median %7.1f ms  min %7.1f ms  max %7.1f ms  (n=%d)", label,
			ms(med), ms(ds[0]), ms(ds[len(ds)-1]), len(ds))
	}
	report("ssh true, new session", "new-ms", fresh)
	report("ssh true, re-attach", "reattach-ms", reattach)
	report("spawn true (root, no sshd/sudo)", "spawn-ms", direct)
	report("docker exec true (floor)", "docker-exec-ms", floor)
	report("ssh true, plain account (sshd floor)", "plain-ssh-ms", plain)
	fmt.Fprintln(os.Stderr)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
