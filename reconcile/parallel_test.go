package reconcile

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/test/builder"
)

// mixedWorld mixes what pairing must get right: users sharing a long
// prefix, long keys, projects, users without a key file, orphans, foreign
// and unlabelled objects, and work of every kind.
func mixedWorld(rng *rand.Rand) (desired.State, observed.State) {
	now := builder.Epoch
	var sessions []*desired.Session
	var users []string
	var objs []observed.Object
	ob := builder.Observed()
	for i := range 3 * 2000 {
		user := fmt.Sprintf("student%05d", i/3) // three keys per user
		project := [...]string{"", "web", "a-very-long-project-name"}[i%3]
		if i%3 == 0 && i%7 != 0 {
			users = append(users, user) // every 7th user has no key file
		}
		if i%11 == 5 {
			objs = append(objs, builder.Network(user, project).Created(now.Add(-time.Duration(rng.IntN(60))*time.Second)).Build())
			continue // an orphan, old or young
		}
		sb := builder.Session(user, project)
		if i%13 == 0 {
			sb.Service("db", "postgres:16", desired.VolumeMount{Name: "data", Target: "/data"})
		}
		lease := builder.Lease(int64(i+1), 10000+i)
		sb.Leases(lease)
		switch i % 17 {
		case 1:
			ob.Dead(lease)
		case 2:
			sb.Leases().Grace(now.Add(time.Duration(rng.IntN(5)-2) * time.Second))
		case 3:
			sb.MaxLifetimeAt(now.Add(time.Duration(rng.IntN(5)-2) * time.Second))
		case 4:
			objs = append(objs, builder.Container(user, project).Name("old-"+user+project).Session("old").Build())
		}
		s := sb.Build()
		sessions = append(sessions, s)
		for _, o := range builder.ObjectsFor(s, builder.Instance) {
			switch {
			case i%19 == 0 && o.Kind == observed.KindNetwork:
				o.Labels[observed.LabelInstance] = "another-instance"
			case i%23 == 0 && o.Kind == observed.KindNetwork:
				delete(o.Labels, observed.LabelManagedBy)
			}
			objs = append(objs, o)
		}
	}
	rng.Shuffle(len(objs), func(i, j int) { objs[i], objs[j] = objs[j], objs[i] })
	return desired.NewState(builder.Instance, sessions, users), ob.Objects(objs...).Build()
}

// TestComputeSameForAnyInputOrder: handing over sessions, users and
// objects out of order changes nothing.
func TestComputeSameForAnyInputOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	d, o := mixedWorld(rng)
	opt := Options{OrphanMinAge: 30 * time.Second, PendingTimeout: 2 * time.Minute}
	want := Compute(d, o, builder.Epoch, opt)
	if len(want.Actions) == 0 || len(want.Skipped) == 0 || want.Unchanged == 0 {
		t.Fatalf("the world must need work, skips and nothing: %d actions, %d skips, %d unchanged", len(want.Actions), len(want.Skipped), want.Unchanged)
	}
	shuffled := builder.CloneDesired(d)
	rng.Shuffle(len(shuffled.Sessions), func(i, j int) {
		shuffled.Sessions[i], shuffled.Sessions[j] = shuffled.Sessions[j], shuffled.Sessions[i]
	})
	rng.Shuffle(len(shuffled.Users), func(i, j int) { shuffled.Users[i], shuffled.Users[j] = shuffled.Users[j], shuffled.Users[i] })
	objs := builder.CloneObserved(o)
	rng.Shuffle(len(objs.Objects), func(i, j int) { objs.Objects[i], objs.Objects[j] = objs.Objects[j], objs.Objects[i] })
	if diff := cmp.Diff(want, Compute(shuffled, objs, builder.Epoch, opt)); diff != "" {
		t.Fatalf("unsorted input: plan differs (-sorted +unsorted):\n%s", diff)
	}
}
