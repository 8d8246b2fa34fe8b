package reconcile

import (
	"slices"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/observed"
)

// keyGroup is everything Compute knows about one session key: its
// session (nil if none), whether its user has a key file, and its objects.
type keyGroup struct {
	key     desired.SessionKey
	sess    *desired.Session
	hasUser bool
	// sessions counts the key's sessions; more than one is a broken
	// desired state, and the key is left alone.
	sessions int
	objects  []*item
}

// pair groups sessions and objects by key, in key order, and sets aside
// sessions whose names are not valid (a row edited by hand): no object
// can carry those names, and deciding them would guess.
func pair(d desired.State, o observed.State) (groups []*keyGroup, invalid []*desired.Session) {
	users := make(map[string]bool, len(d.Users))
	for _, u := range d.Users {
		users[u] = true
	}
	byKey := map[desired.SessionKey]*keyGroup{}
	group := func(k desired.SessionKey) *keyGroup {
		g, ok := byKey[k]
		if !ok {
			g = &keyGroup{key: k, hasUser: users[k.User]}
			byKey[k] = g
			groups = append(groups, g)
		}
		return g
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
	key     desired.SessionKey
	session string // generation label
	ours    bool   // the instance label is this database's
	rank    int8   // teardown order, see sortForRemoval
	class   int8
	// noInstance: no podspawn.instance label (an older podspawn made it).
	noInstance bool
	// sessionContainer: a container that is not a companion service.
	sessionContainer bool
}

// Classes of items: what podspawn may do with the object.
const (
	classRemovable int8 = iota
	classProtected      // present, never removed
	classUnmanaged      // not podspawn's: invisible
	classForeign        // another state database's: invisible
)

func newItem(o *observed.Object, instanceID string) item {
	key, _ := o.Key() // desired.Unattributed when the labels name no valid key
	it := item{Object: o, key: key, session: o.SessionID()}
	instance := o.Instance()
	it.ours, it.noInstance = instance == instanceID, instance == ""
	switch o.Kind {
	case observed.KindContainer:
		if o.Labels[observed.LabelRole] == observed.RoleService {
			it.rank = 1
		} else {
			it.sessionContainer = true
		}
	case observed.KindNetwork:
		it.rank = 2
	default:
		it.rank = 3
	}
	switch {
	case o.Labels[observed.LabelManagedBy] != observed.ManagedByValue:
		it.class = classUnmanaged
	case instance != "" && instance != instanceID:
		it.class = classForeign
	case o.Kept():
		it.class = classProtected
	}
	return it
}
