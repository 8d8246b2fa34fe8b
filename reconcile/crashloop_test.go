package reconcile_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/reconcile"
	"github.com/podspawn/podspawn/test/builder"
)

// crashOpt is testOpt with crash-loop handling: at most 3 restarts without
// 10 minutes of uptime, waits of 1s doubling to 5m between them.
var crashOpt = func() reconcile.Options {
	o := testOpt
	o.CrashLoop = reconcile.CrashLoop{MaxRestarts: 3, ResetAfter: 10 * time.Minute, BackoffBase: time.Second, BackoffMax: 5 * time.Minute}
	return o
}()

func TestCrashLoopBackoff(t *testing.T) {
	p := reconcile.CrashLoop{MaxRestarts: 10, ResetAfter: 10 * time.Minute, BackoffBase: time.Second, BackoffMax: 5 * time.Minute}
	var got []time.Duration
	for n := 1; n <= 12; n++ {
		got = append(got, p.Backoff(n))
	}
	s := time.Second
	want := []time.Duration{s, 2 * s, 4 * s, 8 * s, 16 * s, 32 * s, 64 * s, 128 * s, 256 * s, 300 * s, 300 * s, 300 * s}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("waits after restart 1..12 (-want +got):\n%s", diff)
	}
}

// TestComputeCrashLoop compares whole plans of a stopped (or restarted)
// session container under crash-loop handling.
func TestComputeCrashLoop(t *testing.T) {
	kAW := key("alice", "web")
	lease := builder.Lease(1, 4242)
	base := builder.Session("alice", "web").Leases(lease)
	net := builder.Network("alice", "web").Build()
	started := now.Add(-3 * time.Second)
	// exited is the session container, started 3s ago, exited 1s ago with code 3.
	exited := builder.Container("alice", "web").Exited(3, started, now.Add(-time.Second)).Build()
	running := builder.Container("alice", "web").Build()

	restart := func(s *desired.Session, count int, detail string) reconcile.Action {
		a := restartSession(s, "exited")
		a.Detail = detail
		a.Restart = &reconcile.Restart{Count: count, NextAt: now.Add(crashOpt.CrashLoop.Backoff(count))}
		return a
	}
	restartDetail := func(count int) string {
		return fmt.Sprintf("container is exited (exit code 3); starting it again (restart %d of 3; the next is not allowed before %s)",
			count, now.Add(crashOpt.CrashLoop.Backoff(count)).Format(time.RFC3339))
	}

	first := base.Build()
	waiting := base.Restarts(2, now.Add(-time.Second), now.Add(time.Second)).Build()
	boundary := base.Restarts(2, now.Add(-2*time.Second), now).Build()
	waitingNoNet := base.Restarts(1, now.Add(-time.Second/2), now.Add(time.Second/2)).Build()
	limit := base.Restarts(3, now.Add(-5*time.Second), now.Add(-time.Second)).Build()
	limitGrace := builder.Session("alice", "web").Grace(now.Add(time.Minute)).Restarts(3, now.Add(-5*time.Second), now.Add(-time.Second)).Build()
	// stayedUp was restarted 20m ago and ran 15m before it stopped: its
	// count starts over although no pass recorded the reset.
	stayedUp := base.Restarts(3, now.Add(-20*time.Minute), now.Add(-20*time.Minute+4*time.Second)).Build()
	stayedUpCtr := builder.Container("alice", "web").Exited(137, now.Add(-20*time.Minute), now.Add(-5*time.Minute)).Build()
	upShort := base.Restarts(2, now.Add(-5*time.Minute), now.Add(-5*time.Minute+2*time.Second)).Build()
	upLong := base.Restarts(2, now.Add(-10*time.Minute), now.Add(-10*time.Minute+2*time.Second)).Build()

	crashDetail := "container is exited (exit code 3) again after 3 restarts, none of which stayed up for 10m0s; its last 20 log lines are logged as it is removed"
	crashTeardown := func(s *desired.Session) []reconcile.Action {
		as := teardown(s, true, reconcile.ReasonCrashLoop, crashDetail, exited, net)
		as[1].LogTail = reconcile.CrashLoopLogLines
		return as
	}

	cases := map[string]computeCase{
		"first stop: started again at once, restart 1 recorded with a 1s back-off": {
			desired:  builder.Desired(first).Build(),
			observed: builder.Observed(net, exited).Alive(lease).Build(),
			now:      now,
			want: reconcile.Plan{Now: now, Wake: defaultLifetime, Wakes: wakes(kAW, defaultLifetime), Actions: []reconcile.Action{
				restart(first, 1, restartDetail(1)),
			}},
		},
		"back-off not over: no restart, a skip and a wake when it ends": {
			desired:  builder.Desired(waiting).Build(),
			observed: builder.Observed(net, exited).Alive(lease).Build(),
			now:      now,
			want: reconcile.Plan{Now: now, Unchanged: 1, Wake: now.Add(time.Second), Wakes: wakes(kAW, now.Add(time.Second)),
				Skipped: []reconcile.Skip{{Key: kAW, ObjectKind: observed.KindContainer, Target: "podspawn-alice-web", Reason: reconcile.ReasonCrashLoopBackOff,
					Detail: "container is exited (exit code 3) after 2 restarts; restart 3 of 3 is allowed at " + now.Add(time.Second).Format(time.RFC3339) + ", in 1s"}}},
		},
		"back-off not over: a missing network is not created while waiting": {
			desired:  builder.Desired(waitingNoNet).Build(),
			observed: builder.Observed(exited).Alive(lease).Build(),
			now:      now,
			want: reconcile.Plan{Now: now, Unchanged: 1, Wake: now.Add(time.Second / 2), Wakes: wakes(kAW, now.Add(time.Second/2)),
				Skipped: []reconcile.Skip{{Key: kAW, ObjectKind: observed.KindContainer, Target: "podspawn-alice-web", Reason: reconcile.ReasonCrashLoopBackOff,
					Detail: "container is exited (exit code 3) after 1 restart; restart 2 of 3 is allowed at " + now.Add(time.Second/2).Format(time.RFC3339) + ", in 0s"}}},
		},
		"back-off ends exactly now: restart 3, with the next back-off": {
			desired:  builder.Desired(boundary).Build(),
			observed: builder.Observed(net, exited).Alive(lease).Build(),
			now:      now,
			want: reconcile.Plan{Now: now, Wake: defaultLifetime, Wakes: wakes(kAW, defaultLifetime), Actions: []reconcile.Action{
				restart(boundary, 3, restartDetail(3)),
			}},
		},
		"back-off over a nanosecond ago: restart": {
			desired:  builder.Desired(boundary).Build(),
			observed: builder.Observed(net, exited).Alive(lease).Build(),
			now:      now.Add(time.Nanosecond),
			want: func() reconcile.Plan {
				at := now.Add(time.Nanosecond)
				a := restartSession(boundary, "exited")
				a.Restart = &reconcile.Restart{Count: 3, NextAt: at.Add(4 * time.Second)}
				a.Detail = "container is exited (exit code 3); starting it again (restart 3 of 3; the next is not allowed before " + at.Add(4*time.Second).Format(time.RFC3339) + ")"
				return reconcile.Plan{Now: at, Wake: defaultLifetime, Wakes: wakes(kAW, defaultLifetime), Actions: []reconcile.Action{a}}
			}(),
		},
		"limit reached: torn down with reason crash-loop, the container's log tail asked for": {
			desired:  builder.Desired(limit).Build(),
			observed: builder.Observed(net, exited).Alive(lease).Build(),
			now:      now,
			want:     reconcile.Plan{Now: now, Actions: crashTeardown(limit)},
		},
		"the runtime restarts it itself (the kubelet): no restart, no crash-loop teardown, a skip that says so": {
			desired: builder.Desired(limit).Build(),
			observed: builder.Observed(net, func() observed.Object {
				o := builder.Container("alice", "web").Exited(3, started, now.Add(-time.Second)).State(observed.StateRestarting).Build()
				o.ExitCode, o.RuntimeRestarts, o.RuntimeReason = 3, 7, "CrashLoopBackOff"
				return o
			}()).Alive(lease).Build(),
			now: now,
			want: reconcile.Plan{Now: now, Unchanged: 1, Wake: defaultLifetime, Wakes: wakes(kAW, defaultLifetime),
				Skipped: []reconcile.Skip{{Key: kAW, ObjectKind: observed.KindContainer, Target: "podspawn-alice-web", Reason: reconcile.ReasonRuntimeRestarting,
					Detail: "container stopped (exit code 3); the runtime restarts it itself (CrashLoopBackOff, 7 restarts so far)"}}},
		},
		"limit reached in the grace period: torn down all the same": {
			desired:  builder.Desired(limitGrace).Build(),
			observed: builder.Observed(net, exited).Build(),
			now:      now,
			want:     reconcile.Plan{Now: now, Actions: crashTeardown(limitGrace)},
		},
		"limit reached but the last run stayed up long enough: the count starts over": {
			desired:  builder.Desired(stayedUp).Build(),
			observed: builder.Observed(net, stayedUpCtr).Alive(lease).Build(),
			now:      now,
			want: func() reconcile.Plan {
				a := restartSession(stayedUp, "exited")
				a.Restart = &reconcile.Restart{Count: 1, NextAt: now.Add(time.Second)}
				a.Detail = "container is exited (exit code 137); starting it again (restart 1 of 3; the next is not allowed before " + now.Add(time.Second).Format(time.RFC3339) + ")"
				return reconcile.Plan{Now: now, Wake: defaultLifetime, Wakes: wakes(kAW, defaultLifetime), Actions: []reconcile.Action{a}}
			}(),
		},
		"being removed by an operator: not started again, not torn down for crash-looping": {
			desired:  builder.Desired(limit).Build(),
			observed: builder.Observed(net, builder.Container("alice", "web").Exited(137, started, now).State(observed.StateRemoving).Build()).Alive(lease).Build(),
			now:      now,
			want:     reconcile.Plan{Now: now, Unchanged: 1, Wake: defaultLifetime, Wakes: wakes(kAW, defaultLifetime)},
		},
		"paused at the limit: unpaused, which is no restart (nothing recorded, no teardown)": {
			desired:  builder.Desired(limit).Build(),
			observed: builder.Observed(net, builder.Container("alice", "web").State(observed.StatePaused).Build()).Alive(lease).Build(),
			now:      now,
			want: reconcile.Plan{Now: now, Wake: defaultLifetime, Wakes: wakes(kAW, defaultLifetime), Actions: []reconcile.Action{
				restartSession(limit, observed.StatePaused),
			}},
		},
		"running, up for less than the reset time: a wake when it is reached": {
			desired:  builder.Desired(upShort).Build(),
			observed: builder.Observed(net, running).Alive(lease).Build(),
			now:      now,
			want:     reconcile.Plan{Now: now, Unchanged: 1, Wake: now.Add(5 * time.Minute), Wakes: wakes(kAW, now.Add(5*time.Minute))},
		},
		"running, up for exactly the reset time: the count starts over": {
			desired:  builder.Desired(upLong).Build(),
			observed: builder.Observed(net, running).Alive(lease).Build(),
			now:      now,
			want: reconcile.Plan{Now: now, Wake: defaultLifetime, Wakes: wakes(kAW, defaultLifetime), Actions: []reconcile.Action{
				{Kind: reconcile.KindResetRestarts, Key: kAW, Target: "session alice@web", SessionID: upLong.ID, Reason: reconcile.ReasonStayedUp,
					Detail: "container stayed up for 10m0s after restart 2; the restart count starts over"},
			}},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			d, o := builder.CloneDesired(tc.desired), builder.CloneObserved(tc.observed)
			got := reconcile.Compute(tc.desired, tc.observed, tc.now, crashOpt)
			if diff := cmp.Diff(tc.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("plan mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(d, tc.desired); diff != "" {
				t.Errorf("Compute mutated desired state (-before +after):\n%s", diff)
			}
			if diff := cmp.Diff(o, tc.observed); diff != "" {
				t.Errorf("Compute mutated observed state (-before +after):\n%s", diff)
			}
		})
	}
}

// With crash-loop handling off (the zero value), a stopped container is
// started again whatever the row records, and nothing is recorded.
func TestComputeCrashLoopOff(t *testing.T) {
	lease := builder.Lease(1, 4242)
	s := builder.Session("alice", "web").Leases(lease).Restarts(50, now.Add(-time.Second), now.Add(time.Hour)).Build()
	exited := builder.Container("alice", "web").Exited(3, now.Add(-3*time.Second), now.Add(-time.Second)).Build()
	got := reconcile.Compute(builder.Desired(s).Build(), builder.Observed(builder.Network("alice", "web").Build(), exited).Alive(lease).Build(), now, testOpt)
	if diff := cmp.Diff([]reconcile.Action{restartSession(s, "exited")}, got.Actions); diff != "" {
		t.Errorf("actions (-want +got):\n%s", diff)
	}
}
