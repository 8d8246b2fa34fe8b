package reconcile_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/podspawn/podspawn/desired/spec"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/reconcile"
	"github.com/podspawn/podspawn/test/builder"
)

var (
	testOpt = reconcile.Options{OrphanMinAge: 30 * time.Second, PendingTimeout: 2 * time.Minute}
	now     = builder.Epoch
	// defaultLifetime is the max lifetime deadline of a default session.
	defaultLifetime = builder.Epoch.Add(-builder.DefaultAge + builder.DefaultMaxLifetime)
)

type computeCase struct {
	desired  desired.State
	observed observed.State
	now      time.Time
	want     reconcile.Plan
}

// runCases computes every case, compares the whole plan, and checks that
// Compute left its inputs exactly as it found them.
func runCases(t *testing.T, cases map[string]computeCase) {
	t.Helper()
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			d, o := builder.CloneDesired(tc.desired), builder.CloneObserved(tc.observed)
			got := reconcile.Compute(tc.desired, tc.observed, tc.now, testOpt)
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

func key(user, project string) desired.SessionKey {
	return desired.SessionKey{User: user, Project: project}
}

func sessionTarget(k desired.SessionKey) string { return "session " + k.String() }

func markTerminating(s *desired.Session, r reconcile.Reason, detail string) reconcile.Action {
	return reconcile.Action{Kind: reconcile.KindMarkTerminating, Key: s.Key, Target: sessionTarget(s.Key), SessionID: s.ID, Reason: r, Detail: detail}
}

func deleteSession(s *desired.Session, r reconcile.Reason, detail string) reconcile.Action {
	return reconcile.Action{Kind: reconcile.KindDeleteSession, Key: s.Key, Target: sessionTarget(s.Key), SessionID: s.ID, Reason: r, Detail: detail}
}

var removeKinds = map[observed.Kind]reconcile.Kind{
	observed.KindContainer: reconcile.KindRemoveContainer,
	observed.KindNetwork:   reconcile.KindRemoveNetwork,
	observed.KindVolume:    reconcile.KindRemoveVolume,
}

// remove is the removal of o. Orphans are unplanned (decided from a
// missing row); the guard's flags are read off the object.
func remove(k desired.SessionKey, o observed.Object, r reconcile.Reason, detail string) reconcile.Action {
	return reconcile.Action{Kind: removeKinds[o.Kind], Key: k, Target: o.Name, TargetID: o.ID, SessionID: o.SessionID(), Reason: r, Detail: detail,
		Unplanned:      r == reconcile.ReasonOrphan,
		RemovesSession: o.Kind == observed.KindContainer && o.Labels[observed.LabelRole] != observed.RoleService,
		NoInstance:     o.Instance() == ""}
}

// teardown is mark-terminating (when mark), the removal of objs in the
// order given, and delete-session.
func teardown(s *desired.Session, mark bool, r reconcile.Reason, detail string, objs ...observed.Object) []reconcile.Action {
	var as []reconcile.Action
	if mark {
		as = append(as, markTerminating(s, r, detail))
	}
	for _, o := range objs {
		as = append(as, remove(s.Key, o, r, detail))
	}
	as = append(as, deleteSession(s, r, detail))
	// A missing key file is the teardown that comes from absence.
	if r == reconcile.ReasonUserRemoved && s.Status != desired.StatusTerminating {
		for i := range as {
			as[i].Unplanned = true
		}
	}
	return as
}

func releaseLease(s *desired.Session, l desired.Lease) reconcile.Action {
	return reconcile.Action{Kind: reconcile.KindReleaseLease, Key: s.Key, Target: sessionTarget(s.Key), SessionID: s.ID, LeaseID: l.ID,
		Reason: reconcile.ReasonLeaseDead, Detail: fmt.Sprintf("connection process %d is gone", l.PID)}
}

func startGrace(s *desired.Session, at time.Time) reconcile.Action {
	return reconcile.Action{Kind: reconcile.KindStartGrace, Key: s.Key, Target: sessionTarget(s.Key), SessionID: s.ID, At: at,
		Reason: reconcile.ReasonDisconnected, Detail: fmt.Sprintf("no live connections; grace period of %s ends at %s", s.GracePeriod, at.Format(time.RFC3339))}
}

// restartSession starts the stopped session container of s again.
func restartSession(s *desired.Session, state string) reconcile.Action {
	return reconcile.Action{Kind: reconcile.KindCreateContainer, Key: s.Key, Target: s.Spec.ContainerName, SessionID: s.ID,
		Reason: reconcile.ReasonContainerStopped, Detail: "container is " + state + "; starting it again", Labels: sessionLabels(s, "session", ""),
		Container: &spec.Container{Role: "session", Image: "podspawn-test:busybox", Cmd: []string{"sleep", "infinity"},
			Network: s.Spec.NetworkName, Aliases: []string{s.Spec.ContainerName}, User: s.Key.User, Shell: "/bin/sh"}}
}

// wakes lists key, time pairs in key order.
func wakes(kv ...any) []reconcile.KeyWake {
	var ws []reconcile.KeyWake
	for i := 0; i < len(kv); i += 2 {
		ws = append(ws, reconcile.KeyWake{Key: kv[i].(desired.SessionKey), At: kv[i+1].(time.Time)})
	}
	return ws
}

// sessionLabels is what Compute puts on the objects of s, written out
// independently in TestCompute's creation case.
func sessionLabels(s *desired.Session, role, svc string) map[string]string {
	l := map[string]string{
		observed.LabelManagedBy: observed.ManagedByValue,
		observed.LabelUser:      s.Key.User,
		observed.LabelProject:   s.Key.Project,
		observed.LabelSession:   s.ID,
		observed.LabelInstance:  builder.Instance,
		observed.LabelRole:      role,
	}
	if svc != "" {
		l[observed.LabelService] = svc
	}
	return l
}

func TestCompute(t *testing.T) {
	kAW := key("alice", "web")
	lease := builder.Lease(1, 4242)
	dbData := desired.VolumeMount{Name: "data", Target: "/var/lib/postgresql/data"}

	healthy := builder.Session("alice", "web").Service("db", "postgres:16", dbData).Leases(lease).Build()
	// healthyObjs: network, volume, service container, session container.
	healthyObjs := builder.ObjectsFor(healthy, builder.Instance)
	hNet, hVol, hSvc, hCtr := healthyObjs[0], healthyObjs[1], healthyObjs[2], healthyObjs[3]

	plain := builder.Session("alice", "web").Leases(lease).Build()
	plainObjs := builder.ObjectsFor(plain, builder.Instance)
	pNet, pCtr := plainObjs[0], plainObjs[1]
	idle := builder.Session("alice", "web").Build()
	// dupNet is a second network of the same name, created after pNet.
	dupNet := builder.Network("alice", "web").ID("net-dup").Created(pNet.Created.Add(time.Second)).Build()

	creating := builder.Session("alice", "web").Creating().Leases(lease).
		Service("db", "postgres:16", dbData).
		ExtraLabels(map[string]string{"team": "infra", observed.LabelManagedBy: "someone-else"}).
		Spec(func(sp *desired.Spec) {
			sp.CPUs, sp.MemoryBytes, sp.Env, sp.Hostname = 2, 1<<30, []string{"A=1"}, "dev"
			sp.Security = desired.Security{CapDrop: []string{"ALL"}, NoNewPrivileges: true, PidsLimit: 256}
			sp.Mounts = []desired.Mount{{Source: "/srv/homes/alice", Target: "/home/alice"}}
		}).Build()

	creatingLabels := func(role, svc string) map[string]string {
		l := map[string]string{
			"managed-by": "podspawn", "podspawn.user": "alice", "podspawn.project": "web", "podspawn.session": "sess-alice-web",
			"podspawn.instance": "inst-test", "podspawn.role": role, "team": "infra",
		}
		if svc != "" {
			l["podspawn.service"] = svc
		}
		return l
	}
	security := desired.Security{CapDrop: []string{"ALL"}, NoNewPrivileges: true, PidsLimit: 256}

	persistentIdle := builder.Session("alice", "web").Mode(desired.ModePersistent).
		Grace(now.Add(-time.Hour)).MaxLifetimeAt(now.Add(-time.Hour)).Build()
	persistentDead := builder.Session("alice", "web").Mode(desired.ModePersistent).Leases(lease).Build()
	lastDead := builder.Session("alice", "web").Leases(lease).Build()
	twoLeases := builder.Session("alice", "web").Leases(lease, builder.Lease(2, 4343)).Build()
	dod := builder.Session("alice", "web").Mode(desired.ModeDestroyOnDisconnect).Leases(lease).Build()
	zeroGrace := builder.Session("alice", "web").GracePeriod(0).Leases(lease).Build()
	reconnected := builder.Session("alice", "web").Grace(now.Add(30 * time.Second)).Leases(lease).Build()

	removedUser := builder.Session("alice", "web").Mode(desired.ModePersistent).Service("db", "postgres:16", dbData).Leases(lease).Build()
	staleCtr := builder.Container("alice", "web").Name("podspawn-alice-web-old").Session("old").Stopped().Build()
	youngLoose := builder.Network("alice", "web").Name("podspawn-alice-web-net2").Session("").Created(now).Build()

	gone := builder.Session("alice", "web").Service("db", "postgres:16", dbData).Build()
	stoppedCtr := builder.Container("alice", "web").Stopped().Build()

	stopped := builder.Session("alice", "web").Terminating("project-removed").Leases(lease).Build()
	stoppedNoReason := builder.Session("alice", "web").Terminating("").Build()

	svcMissing := builder.Session("alice", "web").Service("cache", "redis:7").Leases(lease).Build()
	svcMissingNoNet := builder.Session("alice", "web").Service("cache", "redis:7").Leases(lease).Build()
	cacheSpec := &spec.Container{Role: "service", Image: "redis:7", Hostname: "cache", Network: "podspawn-alice-web-net",
		Aliases: []string{"cache"}, Volumes: []desired.VolumeMount{}}

	staleSvc := builder.ServiceContainer("alice", "web", "cache").Session("old").Stopped().Build()
	staleVol := builder.Volume("alice", "web", "cache", "data").Session("old").Build()

	regen := builder.Session("alice", "web").ID("sess-2").Creating().Leases(lease).Build()
	oldNet, oldCtr := builder.Network("alice", "web").Build(), builder.Container("alice", "web").Stopped().Build()

	foreignCtr := builder.Container("alice", "web").Name("podspawn-alice-web-old").Instance("other").Session("zzz").Build()
	foreignNet := builder.Network("fred", "").Instance("other").Build()

	keptCtr := builder.Container("alice", "web").Keep().Build()
	keptSvc := builder.ServiceContainer("alice", "web", "db").Keep().Build()
	keptOrphan := builder.Network("olga", "").Keep().Build()
	keptUser := builder.Session("alice", "web").Service("db", "postgres:16", dbData).Build()

	noUser := builder.Container("x", "").Name("mystery-a").Label(observed.LabelUser, "").Label(observed.LabelProject, "").Build()
	badUser := builder.Container("x", "").Name("mystery-b").Label(observed.LabelUser, "Root").Label(observed.LabelProject, "").Created(now).Build()
	badProject := builder.Network("alice", "").Name("mystery-c").Label(observed.LabelProject, "Web!").Build()
	legacy := builder.Container("alice", "web").Name("podspawn-alice-web-legacy").Instance("").Session("").Build()
	legacySameGen := builder.Container("alice", "web").Name("podspawn-alice-web-legacy2").Instance("").Build()
	legacyOrphan := builder.Network("gus", "").Instance("").Build()
	unmanaged := builder.Container("bob", "").Label(observed.LabelManagedBy, "").Build()

	cases := map[string]computeCase{
		"no-op: running, every object present, live lease": {
			desired:  builder.Desired(healthy).Build(),
			observed: builder.Observed(healthyObjs...).Alive(lease).Build(),
			now:      now,
			want:     reconcile.Plan{Now: now, Unchanged: 1, Wake: defaultLifetime, Wakes: wakes(kAW, defaultLifetime)},
		},
		"no-op: lease not checked counts as alive": {
			desired:  builder.Desired(plain).Build(),
			observed: builder.Observed(plainObjs...).Build(),
			now:      now,
			want:     reconcile.Plan{Now: now, Unchanged: 1, Wake: defaultLifetime, Wakes: wakes(kAW, defaultLifetime)},
		},
		"empty world": {
			desired:  builder.Desired().Build(),
			observed: builder.Observed().Build(),
			now:      now,
			want:     reconcile.Plan{Now: now},
		},
		"creating: network, volumes, services, session container, then mark-running": {
			desired:  builder.Desired(creating).Build(),
			observed: builder.Observed().Alive(lease).Build(),
			now:      now,
			want: reconcile.Plan{Now: now, Wake: defaultLifetime, Wakes: wakes(kAW, defaultLifetime), Actions: []reconcile.Action{
				{Kind: reconcile.KindCreateNetwork, Key: kAW, Target: "podspawn-alice-web-net", SessionID: "sess-alice-web",
					Reason: reconcile.ReasonSessionCreating, Detail: "session network", Labels: creatingLabels("session", "")},
				{Kind: reconcile.KindCreateVolume, Key: kAW, Target: "podspawn-alice-web-db-data", SessionID: "sess-alice-web",
					Reason: reconcile.ReasonSessionCreating, Detail: "volume data of service db", Labels: creatingLabels("service", "db")},
				{Kind: reconcile.KindCreateContainer, Key: kAW, Target: "podspawn-alice-web-db", SessionID: "sess-alice-web",
					Reason: reconcile.ReasonSessionCreating, Detail: "service db", Labels: creatingLabels("service", "db"),
					Container: &spec.Container{
						Role: "service", Image: "postgres:16", Hostname: "db", Network: "podspawn-alice-web-net", Aliases: []string{"db"},
						MemoryBytes: 1 << 30, Security: security,
						Volumes: []desired.VolumeMount{{Name: "podspawn-alice-web-db-data", Target: "/var/lib/postgresql/data"}},
					}},
				{Kind: reconcile.KindCreateContainer, Key: kAW, Target: "podspawn-alice-web", SessionID: "sess-alice-web",
					Reason: reconcile.ReasonSessionCreating, Detail: "session container", Labels: creatingLabels("session", ""),
					Container: &spec.Container{
						Role: "session", Image: "podspawn-test:busybox", Cmd: []string{"sleep", "infinity"}, Env: []string{"A=1"},
						Hostname: "dev", Network: "podspawn-alice-web-net", Aliases: []string{"podspawn-alice-web"},
						CPUs: 2, MemoryBytes: 1 << 30, Security: security,
						Mounts: []desired.Mount{{Source: "/srv/homes/alice", Target: "/home/alice"}},
						User:   "alice", Shell: "/bin/sh",
					}},
				{Kind: reconcile.KindMarkRunning, Key: kAW, Target: "session alice@web", SessionID: "sess-alice-web",
					Reason: reconcile.ReasonSessionCreating, Detail: "all objects exist"},
			}},
		},
		"creating: objects that exist are not created again": {
			desired:  builder.Desired(builder.Session("alice", "web").Creating().Leases(lease).Build()).Build(),
			observed: builder.Observed(pNet, builder.Container("alice", "web").Stopped().Build()).Alive(lease).Build(),
			now:      now,
			want: reconcile.Plan{Now: now, Wake: defaultLifetime, Wakes: wakes(kAW, defaultLifetime), Actions: []reconcile.Action{
				{Kind: reconcile.KindCreateContainer, Key: kAW, Target: "podspawn-alice-web", SessionID: "sess-alice-web",
					Reason: reconcile.ReasonSessionCreating, Detail: "session container", Labels: sessionLabels(plain, "session", ""),
					Container: &spec.Container{Role: "session", Image: "podspawn-test:busybox", Cmd: []string{"sleep", "infinity"},
						Network: "podspawn-alice-web-net", Aliases: []string{"podspawn-alice-web"}, User: "alice", Shell: "/bin/sh"}},
				{Kind: reconcile.KindMarkRunning, Key: kAW, Target: "session alice@web", SessionID: "sess-alice-web",
					Reason: reconcile.ReasonSessionCreating, Detail: "all objects exist"},
			}},
		},
		"creating: a new generation replaces the leftovers of the old one first": {
			desired:  builder.Desired(regen).Build(),
			observed: builder.Observed(oldNet, oldCtr).Alive(lease).Build(),
			now:      now,
			want: reconcile.Plan{Now: now, Wake: defaultLifetime, Wakes: wakes(kAW, defaultLifetime), Actions: []reconcile.Action{
				remove(kAW, oldCtr, reconcile.ReasonStaleGeneration, "left by an earlier generation of this session"),
				remove(kAW, oldNet, reconcile.ReasonStaleGeneration, "left by an earlier generation of this session"),
				{Kind: reconcile.KindCreateNetwork, Key: kAW, Target: "podspawn-alice-web-net", SessionID: "sess-2",
					Reason: reconcile.ReasonSessionCreating, Detail: "session network", Labels: sessionLabels(regen, "session", "")},
				{Kind: reconcile.KindCreateContainer, Key: kAW, Target: "podspawn-alice-web", SessionID: "sess-2",
					Reason: reconcile.ReasonSessionCreating, Detail: "session container", Labels: sessionLabels(regen, "session", ""),
					Container: &spec.Container{Role: "session", Image: "podspawn-test:busybox", Cmd: []string{"sleep", "infinity"},
						Network: "podspawn-alice-web-net", Aliases: []string{"podspawn-alice-web"}, User: "alice", Shell: "/bin/sh"}},
				{Kind: reconcile.KindMarkRunning, Key: kAW, Target: "session alice@web", SessionID: "sess-2",
					Reason: reconcile.ReasonSessionCreating, Detail: "all objects exist"},
			}},
		},
		"running: a missing service container is recreated": {
			desired:  builder.Desired(svcMissing).Build(),
			observed: builder.Observed(builder.ObjectsFor(svcMissing, builder.Instance)[0], builder.ObjectsFor(svcMissing, builder.Instance)[2]).Alive(lease).Build(),
			now:      now,
			want: reconcile.Plan{Now: now, Wake: defaultLifetime, Wakes: wakes(kAW, defaultLifetime), Actions: []reconcile.Action{
				{Kind: reconcile.KindCreateContainer, Key: kAW, Target: "podspawn-alice-web-cache", SessionID: "sess-alice-web",
					Reason: reconcile.ReasonServiceMissing, Detail: "service cache", Labels: sessionLabels(svcMissing, "service", "cache"), Container: cacheSpec},
			}},
		},
		"running: a service is never created on a missing network": {
			desired:  builder.Desired(svcMissingNoNet).Build(),
			observed: builder.Observed(builder.ObjectsFor(svcMissingNoNet, builder.Instance)[2]).Alive(lease).Build(),
			now:      now,
			want: reconcile.Plan{Now: now, Wake: defaultLifetime, Wakes: wakes(kAW, defaultLifetime), Actions: []reconcile.Action{
				{Kind: reconcile.KindCreateNetwork, Key: kAW, Target: "podspawn-alice-web-net", SessionID: "sess-alice-web",
					Reason: reconcile.ReasonServiceMissing, Detail: "session network", Labels: sessionLabels(svcMissingNoNet, "session", "")},
				{Kind: reconcile.KindCreateContainer, Key: kAW, Target: "podspawn-alice-web-cache", SessionID: "sess-alice-web",
					Reason: reconcile.ReasonServiceMissing, Detail: "service cache", Labels: sessionLabels(svcMissingNoNet, "service", "cache"), Container: cacheSpec},
			}},
		},
		"last lease dead, grace-period mode: kill its processes, release, then start grace": {
			desired:  builder.Desired(lastDead).Build(),
			observed: builder.Observed(plainObjs...).Dead(lease).Build(),
			now:      now,
			want: reconcile.Plan{Now: now, Wake: now.Add(time.Minute), Wakes: wakes(kAW, now.Add(time.Minute)), Actions: []reconcile.Action{
				killLeaseProcs(lastDead, pCtr, lease), releaseLease(lastDead, lease), startGrace(lastDead, now.Add(time.Minute)),
			}},
		},
		"one of two leases dead: kill its processes and release it only": {
			desired:  builder.Desired(twoLeases).Build(),
			observed: builder.Observed(plainObjs...).Dead(lease).Alive(builder.Lease(2, 4343)).Build(),
			now:      now,
			want: reconcile.Plan{Now: now, Wake: defaultLifetime, Wakes: wakes(kAW, defaultLifetime), Actions: []reconcile.Action{
				killLeaseProcs(twoLeases, pCtr, lease), releaseLease(twoLeases, lease),
			}},
		},
		"last lease dead, destroy-on-disconnect: destroy": {
			desired:  builder.Desired(dod).Build(),
			observed: builder.Observed(plainObjs...).Dead(lease).Build(),
			now:      now,
			want: reconcile.Plan{Now: now, Actions: teardown(dod, true, reconcile.ReasonDisconnected,
				"last connection ended (mode destroy-on-disconnect, grace period 1m0s)", pCtr, pNet)},
		},
		"last lease dead, zero grace period: destroy": {
			desired:  builder.Desired(zeroGrace).Build(),
			observed: builder.Observed(plainObjs...).Dead(lease).Build(),
			now:      now,
			want: reconcile.Plan{Now: now, Actions: teardown(zeroGrace, true, reconcile.ReasonDisconnected,
				"last connection ended (mode grace-period, grace period 0s)", pCtr, pNet)},
		},
		"last lease dead, persistent: kill its processes and release, no grace": {
			desired:  builder.Desired(persistentDead).Build(),
			observed: builder.Observed(plainObjs...).Dead(lease).Build(),
			now:      now,
			want:     reconcile.Plan{Now: now, Actions: []reconcile.Action{killLeaseProcs(persistentDead, pCtr, lease), releaseLease(persistentDead, lease)}},
		},
		"idle running session without leases starts its grace period": {
			desired:  builder.Desired(idle).Build(),
			observed: builder.Observed(plainObjs...).Build(),
			now:      now,
			want: reconcile.Plan{Now: now, Wake: now.Add(time.Minute), Wakes: wakes(kAW, now.Add(time.Minute)),
				Actions: []reconcile.Action{startGrace(idle, now.Add(time.Minute))}},
		},
		"reconnected during grace: cancel grace": {
			desired:  builder.Desired(reconnected).Build(),
			observed: builder.Observed(plainObjs...).Alive(lease).Build(),
			now:      now,
			want: reconcile.Plan{Now: now, Wake: now.Add(30 * time.Second), Wakes: wakes(kAW, now.Add(30*time.Second)), Actions: []reconcile.Action{
				{Kind: reconcile.KindCancelGrace, Key: kAW, Target: "session alice@web", SessionID: "sess-alice-web",
					Reason: reconcile.ReasonReconnected, Detail: "1 live connection(s)"},
			}},
		},
		"persistent: expired grace and lifetime are exempt": {
			desired:  builder.Desired(persistentIdle).Build(),
			observed: builder.Observed(plainObjs...).Build(),
			now:      now,
			want:     reconcile.Plan{Now: now, Unchanged: 1},
		},
		"two sessions for one key in a hand-built state: the key is left alone": {
			desired: desired.State{InstanceID: builder.Instance, Users: []string{"alice"}, Sessions: []*desired.Session{
				plain, builder.Session("alice", "web").ID("sess-other").Leases(lease).Build()}},
			observed: builder.Observed(plainObjs...).Alive(lease).Build(),
			now:      now,
			want: reconcile.Plan{Now: now, Skipped: []reconcile.Skip{{Key: kAW, ObjectKind: "session", Target: "session alice@web", Reason: reconcile.ReasonDuplicateSession,
				Detail: "the desired state holds 2 sessions for this key; nothing is done until it holds one"}}},
		},
		"a row whose names are not valid is reported, and the rest goes on": {
			desired: desired.State{InstanceID: builder.Instance, Users: []string{"alice"}, Sessions: []*desired.Session{
				{Key: desired.SessionKey{User: "a\x00web"}, ID: "sess-bad", Mode: desired.ModeGracePeriod, Status: desired.StatusRunning}, plain}},
			observed: builder.Observed(plainObjs...).Alive(lease).Build(),
			now:      now,
			want: reconcile.Plan{Now: now, Unchanged: 1, Wake: defaultLifetime, Wakes: wakes(kAW, defaultLifetime), Skipped: []reconcile.Skip{{
				Key: desired.SessionKey{User: "a\x00web"}, ObjectKind: "session", Target: `session "a\x00web"`, Reason: reconcile.ReasonInvalidKey,
				Detail: "the user or project name of this row is not valid; fix or delete the row (podspawn never creates it)"}}},
		},
		"user removed: destroy even persistent and connected; teardown order, row last": {
			desired:  builder.Desired(removedUser).Users("bob").Build(),
			observed: builder.Observed(youngLoose, hVol, hCtr, staleCtr, hNet, hSvc).Alive(lease).Build(),
			now:      now,
			want: reconcile.Plan{Now: now, Actions: teardown(removedUser, true, reconcile.ReasonUserRemoved, "user alice has no key file",
				hCtr, staleCtr, hSvc, hNet, youngLoose, hVol)},
		},
		"container missing, no connection: remains removed, row deleted": {
			desired:  builder.Desired(gone).Build(),
			observed: builder.Observed(hNet, hVol, hSvc).Build(),
			now:      now,
			want: reconcile.Plan{Now: now, Actions: teardown(gone, true, reconcile.ReasonContainerGone,
				"container podspawn-alice-web is missing", hSvc, hNet, hVol)},
		},
		"container stopped, no connection: started again, never replaced": {
			desired:  builder.Desired(gone).Build(),
			observed: builder.Observed(hNet, hVol, hSvc, stoppedCtr).Build(),
			now:      now,
			want: reconcile.Plan{Now: now, Wake: defaultLifetime, Wakes: wakes(kAW, defaultLifetime), Actions: []reconcile.Action{
				restartSession(gone, "exited"),
			}},
		},
		"container stopped with a live connection: started again": {
			desired:  builder.Desired(plain).Build(),
			observed: builder.Observed(pNet, stoppedCtr).Alive(lease).Build(),
			now:      now,
			want: reconcile.Plan{Now: now, Wake: defaultLifetime, Wakes: wakes(kAW, defaultLifetime), Actions: []reconcile.Action{
				restartSession(plain, "exited"),
			}},
		},
		"container missing with a live connection: left to the next connection": {
			desired:  builder.Desired(plain).Build(),
			observed: builder.Observed(pNet).Alive(lease).Build(),
			now:      now,
			want: reconcile.Plan{Now: now, Unchanged: 1, Wake: defaultLifetime, Wakes: wakes(kAW, defaultLifetime), Skipped: []reconcile.Skip{
				{Key: kAW, ObjectKind: observed.KindContainer, Target: "podspawn-alice-web", Reason: reconcile.ReasonContainerDownBusy,
					Detail: "container is missing with 1 live connection(s); the next connection replaces it"},
			}},
		},
		"terminating: the recorded reason, no second mark": {
			desired:  builder.Desired(stopped).Build(),
			observed: builder.Observed(plainObjs...).Alive(lease).Build(),
			now:      now,
			want:     reconcile.Plan{Now: now, Actions: teardown(stopped, false, reconcile.ReasonProjectRemoved, "marked for removal", pCtr, pNet)},
		},
		"terminating without a reason, nothing left: delete the row": {
			desired:  builder.Desired(stoppedNoReason).Build(),
			observed: builder.Observed().Build(),
			now:      now,
			want:     reconcile.Plan{Now: now, Actions: teardown(stoppedNoReason, false, reconcile.ReasonUserRequested, "marked for removal")},
		},
		"a duplicate session network: the younger one is removed": {
			desired:  builder.Desired(plain).Build(),
			observed: builder.Observed(pCtr, pNet, dupNet).Alive(lease).Build(),
			now:      now,
			want: reconcile.Plan{Now: now, Wake: defaultLifetime, Wakes: wakes(kAW, defaultLifetime), Actions: []reconcile.Action{
				remove(kAW, dupNet, reconcile.ReasonDuplicate, "a second network with the name of the session network"),
			}},
		},
		"stale generation objects are removed, the live generation kept": {
			desired:  builder.Desired(plain).Build(),
			observed: builder.Observed(staleVol, pCtr, staleSvc, pNet).Alive(lease).Build(),
			now:      now,
			want: reconcile.Plan{Now: now, Wake: defaultLifetime, Wakes: wakes(kAW, defaultLifetime), Actions: []reconcile.Action{
				remove(kAW, staleSvc, reconcile.ReasonStaleGeneration, "left by an earlier generation of this session"),
				remove(kAW, staleVol, reconcile.ReasonStaleGeneration, "left by an earlier generation of this session"),
			}},
		},
		"foreign instance objects are skipped, in a session and as orphans": {
			desired:  builder.Desired(plain).Build(),
			observed: builder.Observed(foreignNet, pNet, foreignCtr, pCtr).Alive(lease).Build(),
			now:      now,
			want: reconcile.Plan{Now: now, Unchanged: 1, Wake: defaultLifetime, Wakes: wakes(kAW, defaultLifetime), Skipped: []reconcile.Skip{
				{Key: kAW, ObjectKind: observed.KindContainer, Target: "podspawn-alice-web-old", Reason: reconcile.ReasonForeignInstance,
					Detail: "created by another podspawn state database (instance other)"},
				{Key: key("fred", ""), ObjectKind: observed.KindNetwork, Target: "podspawn-fred-net", Reason: reconcile.ReasonForeignInstance,
					Detail: "created by another podspawn state database (instance other)"},
			}},
		},
		"foreign instance objects survive a teardown": {
			desired:  builder.Desired(plain).Users().Build(),
			observed: builder.Observed(foreignCtr, pNet, pCtr).Alive(lease).Build(),
			now:      now,
			want: reconcile.Plan{Now: now,
				Actions: teardown(plain, true, reconcile.ReasonUserRemoved, "user alice has no key file", pCtr, pNet),
				Skipped: []reconcile.Skip{{Key: kAW, ObjectKind: observed.KindContainer, Target: "podspawn-alice-web-old", Reason: reconcile.ReasonForeignInstance,
					Detail: "created by another podspawn state database (instance other)"}},
			},
		},
		"keep: a protected orphan is skipped": {
			desired:  builder.Desired().Build(),
			observed: builder.Observed(keptOrphan).Build(),
			now:      now,
			want: reconcile.Plan{Now: now, Skipped: []reconcile.Skip{{Key: key("olga", ""), ObjectKind: observed.KindNetwork,
				Target: "podspawn-olga-net", Reason: reconcile.ReasonProtected, Detail: "labelled podspawn.keep=true"}}},
		},
		"keep: a protected session container still counts as present": {
			desired:  builder.Desired(idle).Build(),
			observed: builder.Observed(pNet, keptCtr).Build(),
			now:      now,
			want: reconcile.Plan{Now: now, Wake: now.Add(time.Minute), Wakes: wakes(kAW, now.Add(time.Minute)),
				Actions: []reconcile.Action{startGrace(idle, now.Add(time.Minute))},
				Skipped: []reconcile.Skip{{Key: kAW, ObjectKind: observed.KindContainer, Target: "podspawn-alice-web",
					Reason: reconcile.ReasonProtected, Detail: "labelled podspawn.keep=true"}},
			},
		},
		"keep: a protected service container is neither recreated nor removed in a teardown": {
			desired:  builder.Desired(keptUser).Users().Build(),
			observed: builder.Observed(hNet, hVol, keptSvc, hCtr).Build(),
			now:      now,
			want: reconcile.Plan{Now: now,
				Actions: teardown(keptUser, true, reconcile.ReasonUserRemoved, "user alice has no key file", hCtr, hNet, hVol),
				Skipped: []reconcile.Skip{{Key: kAW, ObjectKind: observed.KindContainer, Target: "podspawn-alice-web-db",
					Reason: reconcile.ReasonProtected, Detail: "labelled podspawn.keep=true"}},
			},
		},
		"unattributed objects are orphans under the empty key": {
			desired:  builder.Desired().Build(),
			observed: builder.Observed(badUser, badProject, noUser).Build(),
			now:      now,
			want: reconcile.Plan{Now: now, Wake: now.Add(30 * time.Second), Wakes: wakes(desired.Unattributed, now.Add(30*time.Second)),
				Actions: []reconcile.Action{
					remove(desired.Unattributed, noUser, reconcile.ReasonOrphan, "no session record and no podspawn.user label"),
					remove(desired.Unattributed, badProject, reconcile.ReasonOrphan, "no session record and no podspawn.user label"),
				},
				Skipped: []reconcile.Skip{{Key: desired.Unattributed, ObjectKind: observed.KindContainer, Target: "mystery-b",
					Reason: reconcile.ReasonOrphanTooYoung, Detail: "no session record; removable in 30s"}},
			},
		},
		"managed-by without an instance id is an orphan": {
			desired:  builder.Desired(plain).Build(),
			observed: builder.Observed(pNet, legacySameGen, legacy, pCtr, legacyOrphan).Alive(lease).Build(),
			now:      now,
			want: reconcile.Plan{Now: now, Wake: defaultLifetime, Wakes: wakes(kAW, defaultLifetime), Actions: []reconcile.Action{
				remove(kAW, legacy, reconcile.ReasonOrphan, "no session record"),
				remove(kAW, legacySameGen, reconcile.ReasonOrphan, "no session record"),
				remove(key("gus", ""), legacyOrphan, reconcile.ReasonOrphan, "no session record"),
			}},
		},
		"an object without managed-by=podspawn is never touched": {
			desired:  builder.Desired().Build(),
			observed: builder.Observed(unmanaged).Build(),
			now:      now,
			want: reconcile.Plan{Now: now, Skipped: []reconcile.Skip{{Key: key("bob", ""), ObjectKind: observed.KindContainer,
				Target: "podspawn-bob", Reason: reconcile.ReasonUnmanaged, Detail: "not labelled managed-by=podspawn"}}},
		},
	}
	runCases(t, cases)
}

// TestComputeDeadlines checks every deadline 1ns before, at and 1ns after
// it: a deadline is reached at its instant.
func TestComputeDeadlines(t *testing.T) {
	kAW := key("alice", "web")
	lease := builder.Lease(1, 4242)
	offsets := []struct {
		name    string
		d       time.Duration
		reached bool
	}{{"1ns before", -1, false}, {"at", 0, true}, {"1ns after", 1, true}}
	cases := map[string]computeCase{}

	graceAt := now.Add(time.Minute)
	inGrace := builder.Session("alice", "web").Grace(graceAt).Build()
	objs := builder.ObjectsFor(inGrace, builder.Instance)
	for _, off := range offsets {
		at := graceAt.Add(off.d)
		want := reconcile.Plan{Now: at, Unchanged: 1, Wake: graceAt, Wakes: wakes(kAW, graceAt)}
		if off.reached {
			want = reconcile.Plan{Now: at, Actions: teardown(inGrace, true, reconcile.ReasonGraceExpired, "grace period ended 0s ago", objs[1], objs[0])}
		}
		cases["grace expiry "+off.name] = computeCase{builder.Desired(inGrace).Build(), builder.Observed(objs...).Build(), at, want}
	}

	lifeAt := now.Add(time.Hour)
	connected := builder.Session("alice", "web").MaxLifetimeAt(lifeAt).Leases(lease).Build()
	for _, off := range offsets {
		at := lifeAt.Add(off.d)
		want := reconcile.Plan{Now: at, Unchanged: 1, Wake: lifeAt, Wakes: wakes(kAW, lifeAt)}
		if off.reached {
			want = reconcile.Plan{Now: at, Actions: teardown(connected, true, reconcile.ReasonLifetimeExceeded,
				"max lifetime reached 0s ago, with 1 live connection(s)", objs[1], objs[0])}
		}
		cases["max lifetime "+off.name] = computeCase{builder.Desired(connected).Build(), builder.Observed(objs...).Alive(lease).Build(), at, want}
	}

	orphan := builder.Network("olga", "").Created(now.Add(-testOpt.OrphanMinAge)).Build()
	for _, off := range offsets {
		at := now.Add(off.d)
		want := reconcile.Plan{Now: at, Wake: now, Wakes: wakes(key("olga", ""), now), Skipped: []reconcile.Skip{{Key: key("olga", ""),
			ObjectKind: observed.KindNetwork, Target: "podspawn-olga-net", Reason: reconcile.ReasonOrphanTooYoung, Detail: "no session record; removable in 0s"}}}
		if off.reached {
			want = reconcile.Plan{Now: at, Actions: []reconcile.Action{remove(key("olga", ""), orphan, reconcile.ReasonOrphan, "no session record")}}
		}
		cases["orphan min age "+off.name] = computeCase{builder.Desired().Build(), builder.Observed(orphan).Build(), at, want}
	}

	pending := builder.Session("alice", "web").Creating().Build()
	pendingAt := pending.CreatedAt.Add(testOpt.PendingTimeout)
	for _, off := range offsets {
		at := pendingAt.Add(off.d)
		want := reconcile.Plan{Now: at, Wake: pendingAt, Wakes: wakes(kAW, pendingAt), Actions: []reconcile.Action{
			{Kind: reconcile.KindCreateNetwork, Key: kAW, Target: "podspawn-alice-web-net", SessionID: "sess-alice-web",
				Reason: reconcile.ReasonSessionCreating, Detail: "session network", Labels: sessionLabels(pending, "session", "")},
			{Kind: reconcile.KindCreateContainer, Key: kAW, Target: "podspawn-alice-web", SessionID: "sess-alice-web",
				Reason: reconcile.ReasonSessionCreating, Detail: "session container", Labels: sessionLabels(pending, "session", ""),
				Container: &spec.Container{Role: "session", Image: "podspawn-test:busybox", Cmd: []string{"sleep", "infinity"},
					Network: "podspawn-alice-web-net", Aliases: []string{"podspawn-alice-web"}, User: "alice", Shell: "/bin/sh"}},
			{Kind: reconcile.KindMarkRunning, Key: kAW, Target: "session alice@web", SessionID: "sess-alice-web",
				Reason: reconcile.ReasonSessionCreating, Detail: "all objects exist"},
		}}
		if off.reached {
			want = reconcile.Plan{Now: at, Actions: teardown(pending, true, reconcile.ReasonCreationAbandoned,
				"still creating after 2m0s with no live connection")}
		}
		cases["pending timeout "+off.name] = computeCase{builder.Desired(pending).Build(), builder.Observed().Build(), at, want}
	}
	runCases(t, cases)
}

// TestComputePhaseOrder: bookkeeping first, then grace expiries, max
// lifetimes, other teardowns and orphans, keys sorted within a phase, and
// one destroy per session even when several deadlines passed.
func TestComputePhaseOrder(t *testing.T) {
	amyLease, catLease, danLease, abeLease := builder.Lease(1, 101), builder.Lease(2, 102), builder.Lease(3, 103), builder.Lease(4, 104)
	amy := builder.Session("amy", "").Leases(amyLease).Build()
	bea := builder.Session("bea", "").Grace(now.Add(-time.Second)).MaxLifetimeAt(now.Add(-time.Minute)).Build()
	bob := builder.Session("bob", "").Grace(now.Add(-time.Minute)).Build()
	cat := builder.Session("cat", "").MaxLifetimeAt(now.Add(-2 * time.Hour)).Leases(catLease).Build()
	dan := builder.Session("dan", "").Leases(danLease).Build()
	abe := builder.Session("abe", "").Leases(abeLease).Build()
	abeStale := builder.Container("abe", "").Name("podspawn-abe-old").Session("old").Build()
	eveOrphan := builder.Network("eve", "").Build()

	var objs []observed.Object
	for _, s := range []*desired.Session{dan, cat, bob, bea, amy, abe} {
		objs = append(objs, builder.ObjectsFor(s, builder.Instance)...)
	}
	objs = append(objs, eveOrphan, abeStale)
	ob := func(s *desired.Session) []observed.Object { return builder.ObjectsFor(s, builder.Instance) }

	var want []reconcile.Action
	want = append(want, killLeaseProcs(amy, ob(amy)[1], amyLease), releaseLease(amy, amyLease), startGrace(amy, now.Add(time.Minute)))
	want = append(want, teardown(bea, true, reconcile.ReasonGraceExpired, "grace period ended 1s ago", ob(bea)[1], ob(bea)[0])...)
	want = append(want, teardown(bob, true, reconcile.ReasonGraceExpired, "grace period ended 1m0s ago", ob(bob)[1], ob(bob)[0])...)
	want = append(want, teardown(cat, true, reconcile.ReasonLifetimeExceeded, "max lifetime reached 2h0m0s ago, with 1 live connection(s)", ob(cat)[1], ob(cat)[0])...)
	want = append(want, teardown(dan, true, reconcile.ReasonUserRemoved, "user dan has no key file", ob(dan)[1], ob(dan)[0])...)
	want = append(want, remove(key("abe", ""), abeStale, reconcile.ReasonStaleGeneration, "left by an earlier generation of this session"))
	want = append(want, remove(key("eve", ""), eveOrphan, reconcile.ReasonOrphan, "no session record"))

	runCases(t, map[string]computeCase{"phases across keys": {
		desired:  builder.Desired(amy, bea, bob, cat, dan, abe).Users("amy", "bea", "bob", "cat", "abe", "eve").Build(),
		observed: builder.Observed(objs...).Dead(amyLease).Alive(catLease, danLease, abeLease).Build(),
		now:      now,
		want: reconcile.Plan{Now: now, Actions: want, Wake: now.Add(time.Minute),
			Wakes: wakes(key("abe", ""), defaultLifetime, key("amy", ""), now.Add(time.Minute))},
	}})
}

// detWorld is a mixed world with work of every kind, for determinism checks.
func detWorld() (desired.State, observed.State) {
	db := builder.Desired()
	ob := builder.Observed()
	for i := range 40 {
		user := fmt.Sprintf("u%02d", i)
		l := builder.Lease(int64(i+1), 1000+i)
		sb := builder.Session(user, []string{"", "web"}[i%2]).Service("db", "postgres:16", desired.VolumeMount{Name: "data", Target: "/data"})
		switch i % 8 {
		case 1:
			sb.Grace(now.Add(-time.Second))
		case 2:
			sb.MaxLifetimeAt(now.Add(-time.Second)).Leases(l)
		case 3:
			sb.Creating().Leases(l)
		case 4:
			sb.Leases(l)
			ob.Dead(l)
		default:
			sb.Leases(l)
			ob.Alive(l)
		}
		s := sb.Build()
		db.Sessions(s)
		if i%8 != 3 {
			ob.Objects(builder.ObjectsFor(s, builder.Instance)...)
		}
		ob.Objects(builder.Network(user, "gone").Created(now.Add(-time.Duration(i)*time.Second)).Build(),
			builder.Container(user, "x").Instance("other").Build(),
			builder.Network(user, "x").Instance("other").Build(),
			builder.Container(user, "x").Name(fmt.Sprintf("podspawn-%s-x2", user)).Instance("other").Build(),
			builder.Volume(user, "y", "db", "data").Keep().Build())
	}
	return db.Build(), ob.Build()
}

// TestComputeDeterministic: the same world, with its maps rebuilt in other
// insertion orders and its object list shuffled, plans byte for byte the same.
func TestComputeDeterministic(t *testing.T) {
	d, o := detWorld()
	first := reconcile.Compute(d, o, now, testOpt)
	firstJSON, err := json.Marshal(first)
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Actions) == 0 || len(first.Skipped) == 0 {
		t.Fatalf("the determinism world should plan work and skips, got %d actions and %d skips", len(first.Actions), len(first.Skipped))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 20 {
		d2, o2 := reorder(d, o, rng)
		got := reconcile.Compute(d2, o2, now, testOpt)
		gotJSON, err := json.Marshal(got)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(first, got); diff != "" {
			t.Fatalf("round %d: plan differs (-first +got):\n%s", i, diff)
		}
		if string(gotJSON) != string(firstJSON) {
			t.Fatalf("round %d: JSON plan differs (%d bytes, first had %d)", i, len(gotJSON), len(firstJSON))
		}
	}
}

// reorder shuffles the sessions, users and objects and rebuilds the map
// in a random insertion order: none of it may change the plan, even though
// loaders hand over sessions and users sorted.
func reorder(d desired.State, o observed.State, rng *rand.Rand) (desired.State, observed.State) {
	d2 := builder.CloneDesired(d)
	rng.Shuffle(len(d2.Sessions), func(i, j int) { d2.Sessions[i], d2.Sessions[j] = d2.Sessions[j], d2.Sessions[i] })
	rng.Shuffle(len(d2.Users), func(i, j int) { d2.Users[i], d2.Users[j] = d2.Users[j], d2.Users[i] })
	o2 := builder.CloneObserved(o)
	rng.Shuffle(len(o2.Objects), func(i, j int) { o2.Objects[i], o2.Objects[j] = o2.Objects[j], o2.Objects[i] })
	refs := make([]observed.ProcessRef, 0, len(o.Exited))
	for r := range o.Exited {
		refs = append(refs, r)
	}
	rng.Shuffle(len(refs), func(i, j int) { refs[i], refs[j] = refs[j], refs[i] })
	o2.Exited = map[observed.ProcessRef]struct{}{}
	for _, r := range refs {
		o2.Exited[r] = struct{}{}
	}
	return d2, o2
}

// TestComputeOutputSharesNothingWithInputs: scribbling over every slice and
// map of a plan must not reach the desired or observed state (the executor
// and renderers own the plan).
func TestComputeOutputSharesNothingWithInputs(t *testing.T) {
	s := builder.Session("alice", "web").Creating().Leases(builder.Lease(1, 1)).
		Service("db", "postgres:16", desired.VolumeMount{Name: "data", Target: "/data"}).
		ExtraLabels(map[string]string{"team": "infra"}).
		Spec(func(sp *desired.Spec) {
			sp.Env = []string{"A=1"}
			sp.Services[0].Env, sp.Services[0].Command = []string{"B=2"}, []string{"postgres"}
			sp.Mounts = []desired.Mount{{Source: "/a", Target: "/b"}}
			sp.Security = desired.Security{CapDrop: []string{"ALL"}, CapAdd: []string{"CHOWN"}, Tmpfs: map[string]string{"/tmp": "rw"}}
		}).Build()
	d := builder.Desired(s).Build()
	o := builder.Observed().Alive(builder.Lease(1, 1)).Build()
	before := builder.CloneDesired(d)

	p := reconcile.Compute(d, o, now, testOpt)
	if len(p.Actions) != 5 {
		t.Fatalf("want 5 creation actions, got %d", len(p.Actions))
	}
	for _, a := range p.Actions {
		for k := range a.Labels {
			a.Labels[k] = "scribbled"
		}
		if c := a.Container; c != nil {
			for _, ss := range [][]string{c.Cmd, c.Env, c.Aliases, c.Security.CapDrop, c.Security.CapAdd} {
				for i := range ss {
					ss[i] = "scribbled"
				}
			}
			for k := range c.Security.Tmpfs {
				c.Security.Tmpfs[k] = "scribbled"
			}
			for i := range c.Mounts {
				c.Mounts[i].Source = "scribbled"
			}
			for i := range c.Volumes {
				c.Volumes[i].Name = "scribbled"
			}
		}
	}
	if diff := cmp.Diff(before, d); diff != "" {
		t.Errorf("changing the plan changed the desired state (-before +after):\n%s", diff)
	}
}
