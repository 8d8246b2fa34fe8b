package harness

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
)

// contractLint is what promtool reports about the documented names of
// `status --prometheus` (two gauges named _total, kept for the dashboards
// built on them); anything else it says fails PromtoolCheck. The unit
// test of controller/metrics has the same list.
var contractLint = map[string]bool{
	`podspawn_connections_total non-counter metrics should not have "_total" suffix`: true,
	`podspawn_sessions_total non-counter metrics should not have "_total" suffix`:    true,
}

// PromtoolCheck runs `promtool check metrics` (Debian's prometheus
// package, installed by hack/ensure-packages.sh) on an exposition: it must
// parse and lint clean apart from contractLint.
func PromtoolCheck(t testing.TB, what, text string) {
	t.Helper()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool is not installed: run hack/ensure-packages.sh (%v)", err)
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	// Exit status 3 is lint findings only, checked below.
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 3) {
		t.Fatalf("promtool check metrics on %s: %v\n%s\n--- input\n%s", what, err, out, text)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line = strings.TrimSpace(line); line != "" && !contractLint[line] {
			t.Errorf("promtool check metrics on %s: %s", what, line)
		}
	}
}
