package reconcile

import (
	"slices"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/observed"
)

// keyGroup is everything Compute knows about one session key.
type keyGroup struct {
	key      desired.SessionKey
	sess     *desired.Session
	sessions int // more than one is a broken desired state: left alone
	hasUser  bool
	objects  []*item
}

// pair groups sessions and objects by key, in key order, and sets aside
// sessions whose names are not valid (a row edited by hand): no object can
// carry those names, and deciding them would guess.
func pair(d desired.State, o observed.State) (groups []*keyGroup, invalid []*desired.Session) {
	users := make(map[string]bool, len(d.Users))
	for _, u := range d.Users {
		users[u] = true
	}
	byKey := map[desired.SessionKey]*keyGroup{}
	group := func(k desired.SessionKey) *keyGroup {
		if byKey[k] == nil {
			byKey[k] = &keyGroup{key: k, hasUser: users[k.User]}
			groups = append(groups, byKey[k])
		}
		return byKey[k]
	}
	for _, s := range d.Sessions {
		switch {
		case s == nil:
		case !s.Key.Valid():
			invalid = append(invalid, s)
		default:
			g := group(s.Key)
			g.sess = s
			g.sessions++
		}
	}
	items := make([]item, len(o.Objects))
	for i := range o.Objects {
		items[i] = newItem(&o.Objects[i], d.InstanceID)
		g := group(items[i].key)
		g.objects = append(g.objects, &items[i])
	}
	slices.SortFunc(groups, func(a, b *keyGroup) int { return a.key.Compare(b.key) })
	slices.SortStableFunc(invalid, func(a, b *desired.Session) int { return a.Key.Compare(b.Key) })
	return groups, invalid
}

// item is an observed object with what its labels say, read once.
type item struct {
	*observed.Object
	key              desired.SessionKey
	session          string // generation label
	ours             bool   // the instance label is this database's
	noInstance       bool   // no instance label: an older podspawn made it
	sessionContainer bool   // a container that is not a companion service
	rank             int    // teardown order, see removalRank
	// untouchable says why podspawn must leave the object alone, if so:
	// not podspawn's, another state database's, or protected (which, unlike
	// the others, still counts for every decision).
	untouchable Reason
	why         string
}

// removalRank orders a key's objects for teardown: session containers,
// service containers, networks (Docker refuses to remove one with
// endpoints), then volumes (refused while a container uses them).
var removalRank = map[observed.Kind]int{observed.KindContainer: 0, observed.KindNetwork: 2, observed.KindVolume: 3}

func newItem(o *observed.Object, instanceID string) item {
	key, _ := o.Key() // desired.Unattributed when the labels name no valid key
	instance := o.Instance()
	it := item{Object: o, key: key, session: o.SessionID(), ours: instance == instanceID, noInstance: instance == "", rank: removalRank[o.Kind]}
	if o.Kind == observed.KindContainer && o.Role() == observed.RoleService {
		it.rank = 1
	} else if o.Kind == observed.KindContainer {
		it.sessionContainer = true
	}
	switch {
	case o.Labels[observed.LabelManagedBy] != observed.ManagedByValue:
		it.untouchable, it.why = ReasonUnmanaged, "not labelled "+observed.ManagedSelector
	case instance != "" && instance != instanceID:
		it.untouchable, it.why = ReasonForeignInstance, "created by another podspawn state database (instance "+instance+")"
	case o.Kept():
		it.untouchable, it.why = ReasonProtected, "labelled "+observed.LabelKeep+"=true"
	}
	return it
}

// visible: podspawn may act on it, or it is protected.
func (it *item) visible() bool { return it.untouchable == "" || it.untouchable == ReasonProtected }
