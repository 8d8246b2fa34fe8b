package desired_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/test/builder"
)

func TestFutureRows(t *testing.T) {
	now := builder.Epoch
	key := func(user, project string) desired.SessionKey { return desired.SessionKey{User: user, Project: project} }
	future := now.Add(3 * time.Hour)
	l := builder.Lease(1, 4242)
	l.StartedAt = future.Add(time.Minute)
	d := builder.Desired(
		builder.Session("alice", "").CreatedAt(future).Leases(l).Build(),
		builder.Session("bob", "").CreatedAt(now.Add(desired.ClockStepThreshold)).Build(), // within the slack
		builder.Session("carol", "").CreatedAt(now.Add(-time.Hour)).Restarts(1, future, future.Add(time.Hour)).Build(),
	).Build()
	want := []desired.FutureRow{
		{Key: key("alice", ""), Field: "lease.started_at", At: future.Add(time.Minute)},
		{Key: key("alice", ""), Field: "created_at", At: future},
		{Key: key("carol", ""), Field: "last_restart_at", At: future},
	}
	if diff := cmp.Diff(want, desired.FutureRows(d, now)); diff != "" {
		t.Fatalf("FutureRows (-want +got):\n%s", diff)
	}
	if got := desired.FutureRows(builder.Desired(builder.Session("dan", "").Build()).Build(), now); len(got) != 0 {
		t.Fatalf("FutureRows of a present row = %v, want none", got)
	}
}
