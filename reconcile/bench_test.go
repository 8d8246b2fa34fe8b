package reconcile_test

import (
	"cmp"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/reconcile"
	"github.com/podspawn/podspawn/test/builder"
)

// benchWorld is a steady state of n sessions, each running with all its
// objects and a live lease (every tenth with a service and a volume), plus
// about 5% with work to do, spread over the kinds of work a pass meets.
// Sessions come in key order, as the store reads them, and objects in
// Docker's listing order (by kind, then name).
func benchWorld(n int) (desired.State, observed.State) {
	return benchWorldNamed(n, func(i int) (string, string) { return fmt.Sprintf("u%06d", i), "" })
}

// benchWorldNamed is benchWorld with the keys name(i) gives, in key order.
func benchWorldNamed(n int, name func(int) (user, project string)) (desired.State, observed.State) {
	d := desired.State{InstanceID: builder.Instance, Sessions: make([]*desired.Session, 0, n), Users: make([]string, 0, n)}
	ob := builder.Observed()
	var objs []observed.Object
	now := builder.Epoch
	for i := range n {
		user, project := name(i)
		sb := builder.Session(user, project)
		if i%10 == 0 {
			sb.Service("db", "postgres:16", desired.VolumeMount{Name: "data", Target: "/var/lib/postgresql/data"})
		}
		lease := builder.Lease(int64(i+1), 10000+i)
		sb.Leases(lease)
		alive := true
		if i%20 == 7 { // ~5% with work
			switch (i / 20) % 5 {
			case 0: // last connection died: release and start grace
				alive = false
			case 1: // grace expired: tear down
				sb.Leases().Grace(now.Add(-time.Second))
			case 2: // max lifetime passed with a live connection
				sb.MaxLifetimeAt(now.Add(-time.Minute))
			case 3: // a leftover of an earlier generation
				objs = append(objs, builder.Container(user, project).Name("podspawn-"+user+project+"-old").Session("old").Stopped().Build())
			case 4: // an orphan with no session record
				objs = append(objs, builder.Network(user, project+"gone").Build())
			}
		}
		s := sb.Build()
		d.Sessions = append(d.Sessions, s) // in key order, as the store reads them
		if len(d.Users) == 0 || d.Users[len(d.Users)-1] != user {
			d.Users = append(d.Users, user)
		}
		objs = append(objs, builder.ObjectsFor(s, builder.Instance)...)
		if alive {
			ob.Alive(lease)
		} else {
			ob.Dead(lease)
		}
	}
	slices.SortFunc(objs, func(a, b observed.Object) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Name, b.Name))
	})
	return d, ob.Objects(objs...).Build()
}

func BenchmarkCompute(b *testing.B) {
	opt := reconcile.Options{OrphanMinAge: 30 * time.Second, PendingTimeout: 2 * time.Minute}
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("sessions=%d", n), func(b *testing.B) {
			d, o := benchWorld(n)
			runtime.GC() // the world's construction garbage is not Compute's cost
			b.ReportAllocs()
			var p reconcile.Plan
			for b.Loop() {
				p = reconcile.Compute(d, o, builder.Epoch, opt)
			}
			// A steady state that planned nothing would measure nothing.
			if want := n - n/20; p.Unchanged < want-1 || len(p.Actions) == 0 {
				b.Fatalf("unexpected plan: %d unchanged (want about %d), %d actions", p.Unchanged, want, len(p.Actions))
			}
		})
	}
}

// BenchmarkComputeLongKeys is BenchmarkCompute at 10k with project
// sessions whose users share a long prefix.
func BenchmarkComputeLongKeys(b *testing.B) {
	opt := reconcile.Options{OrphanMinAge: 30 * time.Second, PendingTimeout: 2 * time.Minute}
	n := 10000
	d, o := benchWorldNamed(n, func(i int) (string, string) {
		return fmt.Sprintf("student%05d", i/2), [...]string{"backend-api", "frontend-web"}[i%2]
	})
	runtime.GC()
	b.ReportAllocs()
	for b.Loop() {
		reconcile.Compute(d, o, builder.Epoch, opt)
	}
}
