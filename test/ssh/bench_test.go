package ssh

import (
	"fmt"
	"os"
	"os/exec"
	"sort"
	"testing"
	"time"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/test/harness"
)

// BenchmarkSSHConnect measures "ssh user@host true" from start to exit:
// for a new session (the container is created) and for a re-attach to a
// running one, against the floors of a bare "docker exec <container> true"
// and of "ssh true" to an account sshd serves without podspawn, and spawn
// run directly (no sshd, no sudo), and a bare "docker run --rm" of the
// session image, 20 runs each, measured in the same run, one of each per
// round. hack/bench-ssh.sh runs it; the medians are the figures, compared
// with the goals.
func BenchmarkSSHConnect(b *testing.B) {
	const runs = 20
	s := newServer(b, serverOptions{Users: []string{"ssa"}, PlainUser: true})
	u := s.user("ssa")
	name := desired.ContainerName(desired.SessionKey{User: u.Name})

	timeIt := func(what string, cmd *exec.Cmd) time.Duration { return timeCmd(b, what, cmd) }
	var fresh, reattach, direct, floor, run, plain []time.Duration
	// One round measures each once, so that a load that changes during
	// the run (other processes on the host) weighs on the figures and
	// their floors alike rather than on whichever was measured then.
	for i := 0; i < runs; i++ {
		if s.session(u, "") != nil {
			s.Env.MustRun("stop", u.Name)
		}
		fresh = append(fresh, timeIt("new session", s.ssh(u, nil, "true")))
		reattach = append(reattach, timeIt("re-attach", s.ssh(u, nil, "true")))
		cmd := exec.Command(s.Env.Bin, "--config", s.Env.ConfigPath, "spawn", "--user", u.Name)
		cmd.Env = append(os.Environ(), "SSH_ORIGINAL_COMMAND=true")
		direct = append(direct, timeIt("spawn without sshd", cmd))
		floor = append(floor, timeIt("docker exec", exec.Command("docker", "exec", name, "true")))
		run = append(run, timeIt("docker run --rm", exec.Command("docker", "run", "--rm", "--network", "none", harness.Image, "true")))
		plain = append(plain, timeIt("ssh without podspawn", s.ssh(s.Plain, nil, "true")))
	}
	report := func(label, unit string, ds []time.Duration) time.Duration {
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		med := ds[len(ds)/2-1]/2 + ds[len(ds)/2]/2
		b.ReportMetric(float64(med.Microseconds())/1000, unit)
		b.Logf("%-38s median %7.1f ms  min %7.1f ms  max %7.1f ms  (n=%d)", label,
			ms(med), ms(ds[0]), ms(ds[len(ds)-1]), len(ds))
		return med
	}
	newMed := report("ssh true, new session", "new-ms", fresh)
	reMed := report("ssh true, re-attach", "reattach-ms", reattach)
	report("spawn true (root, no sshd/sudo)", "spawn-ms", direct)
	execMed := report("docker exec true (floor)", "docker-exec-ms", floor)
	runMed := report("docker run --rm true (floor)", "docker-run-ms", run)
	plainMed := report("ssh true, plain account (sshd floor)", "plain-ssh-ms", plain)
	// The goals of a new session and a re-attach: their medians above the
	// floors they cannot go below, measured in this run.
	compare := func(label string, got, floor, goal time.Duration) {
		over := got - floor
		verdict := "met"
		if over > goal {
			verdict = "NOT met"
		}
		b.Logf("%-38s %7.1f ms = floor %7.1f ms + %7.1f ms (ratio %.2f; goal: at most +%.0f ms: %s)",
			label, ms(got), ms(floor), ms(over), float64(got)/float64(floor), ms(goal), verdict)
	}
	compare("new session vs ssh plain + docker run", newMed, plainMed+runMed, 350*time.Millisecond)
	compare("re-attach vs ssh plain + docker exec", reMed, plainMed+execMed, 120*time.Millisecond)
	fmt.Fprintln(os.Stderr)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// timeCmd runs cmd to its end and returns how long it took; a failure
// ends the benchmark with cmd's output.
func timeCmd(b *testing.B, what string, cmd *exec.Cmd) time.Duration {
	b.Helper()
	start := time.Now()
	out, err := cmd.CombinedOutput()
	d := time.Since(start)
	if err != nil {
		b.Fatalf("%s: %v\n%s", what, err, out)
	}
	return d
}
