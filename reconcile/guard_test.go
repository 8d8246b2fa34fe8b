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

// fleet returns n running sessions user0..user{n-1} with their objects.
func fleet(n int) ([]*desired.Session, []observed.Object) {
	var ss []*desired.Session
	var objs []observed.Object
	for i := range n {
		s := builder.Session(fmt.Sprintf("user%02d", i), "").Leases(builder.Lease(int64(i+1), 1000+i)).Build()
		ss = append(ss, s)
		objs = append(objs, builder.ObjectsFor(s, builder.Instance)...)
	}
	return ss, objs
}

// userRemoved is the teardown of s for a missing key file, held or not.
func userRemoved(s *desired.Session, objs []observed.Object) []reconcile.Action {
	var mine []observed.Object
	for _, o := range objs {
		if k, _ := o.Key(); k == s.Key {
			mine = append(mine, o)
		}
	}
	// Teardown order: session container, then network.
	return teardown(s, true, reconcile.ReasonUserRemoved, "user "+s.Key.User+" has no key file", mine[1], mine[0])
}

func TestGuard(t *testing.T) {
	lim := reconcile.GuardLimits{MaxUnplannedRemovals: 5}
	massDetail := func(n, of int) string {
		return fmt.Sprintf("%d of %d session containers would be removed because their key file or session record is missing (more than cleanup.max_unplanned_removals = 5 and more than half); check auth.key_dir and state.db_path", n, of)
	}
	const youngDetail = "the state database was created after running podspawn containers that carry no podspawn.instance label; they may belong to another database, so they are not removed as orphans; check state.db_path"

	six, sixObjs := fleet(6)
	var sixTeardown []reconcile.Action
	var sixKeys []desired.SessionKey
	for _, s := range six {
		sixTeardown = append(sixTeardown, userRemoved(s, sixObjs)...)
		sixKeys = append(sixKeys, s.Key)
	}
	five, fiveObjs := fleet(5)
	var fiveTeardown []reconcile.Action
	for _, s := range five {
		fiveTeardown = append(fiveTeardown, userRemoved(s, fiveObjs)...)
	}
	// Twenty sessions, six of whose users lost their key files: more than
	// the limit, but not more than half.
	twenty, twentyObjs := fleet(20)
	var twentyUsers []string
	var sixOfTwenty []reconcile.Action
	for i, s := range twenty {
		if i < 6 {
			sixOfTwenty = append(sixOfTwenty, userRemoved(s, twentyObjs)...)
		} else {
			twentyUsers = append(twentyUsers, s.Key.User)
		}
	}

	// Seven users without key files, one of whose grace period is over:
	// the deadline goes ahead, the absences are held.
	seven, sevenObjs := fleet(7)
	graced := builder.Session("user00", "").Grace(now.Add(-time.Minute)).Build()
	seven[0] = graced
	var sevenHeld []reconcile.Action
	var sevenKeys []desired.SessionKey
	for _, s := range seven[1:] {
		sevenHeld = append(sevenHeld, userRemoved(s, sevenObjs)...)
		sevenKeys = append(sevenKeys, s.Key)
	}
	gracedDetail := "grace period ended 1m0s ago"
	// user00 has a key file: a grace expiry is a deadline, not an absence.
	gracedTeardown := teardown(graced, true, reconcile.ReasonGraceExpired, gracedDetail, sevenObjs[1], sevenObjs[0])

	// Stopped containers of users without key files (after a reboot, all
	// are stopped) still hold the users' files.
	stopped := make([]observed.Object, len(sixObjs))
	copy(stopped, sixObjs)
	var stoppedTeardown []reconcile.Action
	for i := range stopped {
		if stopped[i].Kind == observed.KindContainer {
			stopped[i] = builder.CloneObject(stopped[i])
			stopped[i].Running, stopped[i].State = false, "exited"
		}
	}
	for _, s := range six {
		stoppedTeardown = append(stoppedTeardown, userRemoved(s, stopped)...)
	}

	// An older podspawn's containers (no instance label), older than the database.
	dbBorn := now.Add(-time.Hour)
	legacy := builder.Container("olduser", "").Instance("").Session("").Created(dbBorn.Add(-time.Hour)).Build()
	legacyNet := builder.Network("olduser", "").Instance("").Session("").Created(dbBorn.Add(-time.Hour)).Build()
	legacyYoung := builder.Container("olduser", "").Instance("").Session("").Created(dbBorn.Add(time.Minute)).Build()
	// Listed to the second, in the database's own second: not older.
	legacySameSecond := builder.Container("olduser", "").Instance("").Session("").Created(dbBorn.Truncate(time.Second)).Build()
	legacyOrphans := []reconcile.Action{
		remove(key("olduser", ""), legacy, reconcile.ReasonOrphan, "no session record"),
		remove(key("olduser", ""), legacyNet, reconcile.ReasonOrphan, "no session record"),
	}
	ourOrphan := builder.Container("gone", "").Created(dbBorn.Add(time.Minute)).Build()
	ourOrphanRemoval := remove(key("gone", ""), ourOrphan, reconcile.ReasonOrphan, "no session record")

	cases := map[string]struct {
		desired  desired.State
		observed observed.State
		lim      reconcile.GuardLimits
		want     reconcile.Plan
	}{
		"no-op: every user has a key file": {
			desired:  builder.Desired(six...).Build(),
			observed: builder.Observed(sixObjs...).Build(),
			lim:      lim,
			want:     reconcile.Plan{Now: now, Unchanged: 6, Wake: defaultLifetime, Wakes: lifetimeWakes(six)},
		},
		"empty key directory, six sessions: every removal held": {
			desired:  builder.Desired(six...).Users().Build(),
			observed: builder.Observed(sixObjs...).Build(),
			lim:      lim,
			want: reconcile.Plan{Now: now, Held: sixTeardown,
				Holds: []reconcile.Hold{{Reason: reconcile.HoldMassRemoval, Keys: sixKeys, Detail: massDetail(6, 6)}}},
		},
		"empty key directory, confirmed: every removal goes ahead": {
			desired:  builder.Desired(six...).Users().Build(),
			observed: builder.Observed(sixObjs...).Build(),
			lim:      reconcile.GuardLimits{MaxUnplannedRemovals: 5, Allow: true},
			want:     reconcile.Plan{Now: now, Actions: sixTeardown},
		},
		"at the limit: five removals go ahead": {
			desired:  builder.Desired(five...).Users().Build(),
			observed: builder.Observed(fiveObjs...).Build(),
			lim:      lim,
			want:     reconcile.Plan{Now: now, Actions: fiveTeardown},
		},
		"limit zero: one removal of one session is held": {
			desired:  builder.Desired(five[0]).Users().Build(),
			observed: builder.Observed(fiveObjs[:2]...).Build(),
			lim:      reconcile.GuardLimits{},
			want: reconcile.Plan{Now: now, Held: userRemoved(five[0], fiveObjs),
				Holds: []reconcile.Hold{{Reason: reconcile.HoldMassRemoval, Keys: []desired.SessionKey{five[0].Key},
					Detail: "1 of 1 session containers would be removed because their key file or session record is missing (more than cleanup.max_unplanned_removals = 0 and more than half); check auth.key_dir and state.db_path"}}},
		},
		"above the limit but not above half of the sessions: removals go ahead": {
			desired:  builder.Desired(twenty...).Users(twentyUsers...).Build(),
			observed: builder.Observed(twentyObjs...).Build(),
			lim:      lim,
			want:     reconcile.Plan{Now: now, Actions: sixOfTwenty, Unchanged: 14, Wake: defaultLifetime, Wakes: lifetimeWakes(twenty[6:])},
		},
		"deadlines go ahead while absences are held": {
			desired:  builder.Desired(seven...).Users("user00").Build(),
			observed: builder.Observed(sevenObjs...).Build(),
			lim:      lim,
			want: reconcile.Plan{Now: now, Actions: gracedTeardown, Held: sevenHeld,
				Holds: []reconcile.Hold{{Reason: reconcile.HoldMassRemoval, Keys: sevenKeys, Detail: massDetail(6, 7)}}},
		},
		"stopped containers count too: every removal held": {
			desired:  builder.Desired(six...).Users().Build(),
			observed: builder.Observed(stopped...).Build(),
			lim:      lim,
			want: reconcile.Plan{Now: now, Held: stoppedTeardown,
				Holds: []reconcile.Hold{{Reason: reconcile.HoldMassRemoval, Keys: sixKeys, Detail: massDetail(6, 6)}}},
		},
		"young database: orphans without an instance label are held, our own orphan goes": {
			desired:  builder.Desired().DatabaseCreatedAt(dbBorn).Build(),
			observed: builder.Observed(legacy, legacyNet, ourOrphan).Build(),
			lim:      lim,
			want: reconcile.Plan{Now: now, Actions: []reconcile.Action{ourOrphanRemoval}, Held: legacyOrphans,
				Holds: []reconcile.Hold{{Reason: reconcile.HoldYoungDatabase, Keys: []desired.SessionKey{key("olduser", "")}, Detail: youngDetail}}},
		},
		"a container listed in the database's own second is not older": {
			desired:  builder.Desired().DatabaseCreatedAt(dbBorn.Add(300 * time.Millisecond)).Build(),
			observed: builder.Observed(legacySameSecond).Build(),
			lim:      lim,
			want: reconcile.Plan{Now: now, Actions: []reconcile.Action{
				remove(key("olduser", ""), legacySameSecond, reconcile.ReasonOrphan, "no session record")}},
		},
		"database older than the unlabelled containers: they are plain orphans": {
			desired:  builder.Desired().DatabaseCreatedAt(dbBorn).Build(),
			observed: builder.Observed(legacyYoung).Build(),
			lim:      lim,
			want: reconcile.Plan{Now: now, Actions: []reconcile.Action{
				remove(key("olduser", ""), legacyYoung, reconcile.ReasonOrphan, "no session record")}},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			p := reconcile.Compute(tc.desired, tc.observed, now, testOpt)
			got := reconcile.Guard(p, tc.desired, tc.observed, tc.lim)
			if diff := cmp.Diff(tc.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("plan mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func lifetimeWakes(ss []*desired.Session) []reconcile.KeyWake {
	var ws []reconcile.KeyWake
	for _, s := range ss {
		ws = append(ws, reconcile.KeyWake{Key: s.Key, At: defaultLifetime})
	}
	return ws
}

// A per-key plan takes the whole plan's decision: only the held keys'
// unplanned actions move, other actions of those keys stay.
func TestHoldKeys(t *testing.T) {
	k := key("alice", "")
	other := key("bob", "")
	keep := reconcile.Action{Kind: reconcile.KindReleaseLease, Key: k, Target: "session alice"}
	gone := reconcile.Action{Kind: reconcile.KindRemoveContainer, Key: k, Target: "podspawn-alice-old", Unplanned: true, NoInstance: true}
	otherGone := reconcile.Action{Kind: reconcile.KindRemoveContainer, Key: other, Target: "podspawn-bob", Unplanned: true, RemovesSession: true}
	hold := reconcile.Hold{Reason: reconcile.HoldYoungDatabase, Keys: []desired.SessionKey{k, key("carol", "")}, Detail: "d"}
	got := reconcile.HoldKeys(reconcile.Plan{Now: now, Actions: []reconcile.Action{keep, gone, otherGone}}, []reconcile.Hold{hold})
	want := reconcile.Plan{Now: now, Actions: []reconcile.Action{keep, otherGone}, Held: []reconcile.Action{gone},
		Holds: []reconcile.Hold{{Reason: reconcile.HoldYoungDatabase, Keys: []desired.SessionKey{k}, Detail: "d"}}}
	if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("plan mismatch (-want +got):\n%s", diff)
	}
	if got := reconcile.HoldKeys(reconcile.Plan{Now: now, Actions: []reconcile.Action{keep}}, []reconcile.Hold{hold}); len(got.Held) != 0 || len(got.Holds) != 0 {
		t.Errorf("a plan with nothing to hold got holds: %+v", got)
	}
}
