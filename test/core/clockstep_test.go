package core_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/test/harness"
)

// TestOneShotCleanupHoldsAfterAForwardClockStep runs the real binary. A
// test cannot step this host's wall clock or its boot clock (the host is
// shared, and Go reads clocks through the vDSO, out of libfaketime's
// reach), so it moves the other side: the clock sample the last pass
// recorded. A sample two hours earlier by the wall clock and as early by
// boot time as it was is a forward step of two hours since that pass; a
// sample moved back a minute on both clocks is a minute of boot time passed
// without a step.
func TestOneShotCleanupHoldsAfterAForwardClockStep(t *testing.T) {
	e := newCoreEnv(t, harness.Options{})
	key := desired.SessionKey{User: harness.Uniq("ctcs")}
	e.AddUser(key.User)
	id := e.startSession(key, harness.SeedOptions{}) // a pass: records the clocks
	objs := e.objects()

	e.ExecSQL(`UPDATE sessions SET max_lifetime_at = ? WHERE id = ?`, time.Now().Add(-time.Second).UnixNano(), id)
	e.ExecSQL(`UPDATE clock_sample SET wall = wall - ?`, int64(2*time.Hour))
	r := e.cleanup()
	if r.Code != 1 {
		t.Fatalf("cleanup after the step: exit %d, want 1 (held)\n%s", r.Code, fmtResult(r))
	}
	mustContain(t, "cleanup output", r.Stdout, "Held after a forward step of the wall clock (not done):",
		"teardown  "+key.String()+"  session "+key.String()+"  clock-step: max lifetime reached", "with 1 live connection(s), but the wall clock just stepped forward",
		"; 1 held; 0 failed.")
	mustContain(t, "cleanup stderr", r.Stderr, "Wall clock stepped forward since the last pass", "1 teardown held after a forward step of the wall clock")
	if got := e.Row(key); got == nil || got.Status != desired.StatusRunning {
		t.Fatalf("row after the held pass: %+v, want running", got)
	}
	if got := e.objects(); len(got) != len(objs) {
		t.Fatalf("objects after the held pass: %v, want %v", harness.ObjectNames(got), harness.ObjectNames(objs))
	}
	p := parsePlan(t, e.mustCleanup("--dry-run", "-o", "json").Stdout)
	if diff := cmp.Diff([]step{{"session", key.String(), "session " + key.String(), "clock-step"}}, p.skips()); diff != "" {
		t.Fatalf("dry run during the hold: skipped (-want +got):\n%s", diff)
	}

	// A minute of boot time later, on a clock that did not step again.
	e.ExecSQL(`UPDATE clock_sample SET wall = wall - ?, boot_ns = boot_ns - ?, hold_until_ns = hold_until_ns - ?`,
		int64(desired.ClockStepConfirm), int64(desired.ClockStepConfirm), int64(desired.ClockStepConfirm))
	r = e.mustCleanup()
	mustContain(t, "cleanup output", r.Stdout, "lifetime-exceeded", "deleted session record "+key.String())
	if got := e.objects(); len(got) != 0 {
		t.Errorf("objects left after the confirming pass: %v", harness.ObjectNames(got))
	}
}
