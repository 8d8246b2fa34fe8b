package reconcile

import (
	"cmp"
	"encoding/binary"
	"slices"
	"sort"
	"sync"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/observed"
)

// The join pairs users, sessions and objects by session key. Users and
// sessions arrive sorted (see desired.State); objects are sorted here, by a
// radix sort on their encoded key; one merge then walks all three. At 100k
// sessions every hash-map probe is a cache and TLB miss, while a sort and a
// merge stream through memory, and yield the keys in order, so the plan
// needs no sort of its own.

// encoded is a key's first 16 bytes of user + "\x00" + project, big-endian
// and zero-padded. Names hold no NUL, so these bytes order keys by user and
// then project, and a key of at most 16 bytes is fully determined by them;
// a longer key (long) compares its strings on a tie.
type encoded struct {
	k0, k1 uint64
	long   bool
}

func encode(user, project string) encoded {
	var b [16]byte
	// Loops, not copy: the names are short, and memmove's call costs more.
	for i := 0; i < len(user) && i < 16; i++ {
		b[i] = user[i]
	}
	for i := 0; i < len(project) && len(user)+1+i < 16; i++ {
		b[len(user)+1+i] = project[i]
	}
	return encoded{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:]), len(user)+1+len(project) > 16}
}

// compare orders the encoded bytes only: 0 is "equal or a tie to break".
func (e encoded) compare(o encoded) int {
	return cmp.Or(cmp.Compare(e.k0, o.k0), cmp.Compare(e.k1, o.k1))
}

// record is one object under its encoded key.
type record struct {
	encoded
	idx int32 // into joiner.items and observed.State.Objects
}

// keyGroup is one key's session (nil if none), whether its user has a key
// file, and its objects.
type keyGroup struct {
	key     desired.SessionKey
	sess    *desired.Session
	hasUser bool
	// sessions counts the key's sessions; more than one is a broken
	// desired state, and the key is left alone.
	sessions     int
	sessionIndex int     // of the session in joiner.sessions
	objects      []int32 // into joiner.items
	warmth       int     // the warm-up loads' sum, kept so they are not optimised away
}

type joiner struct {
	sessions []*desired.Session // in key order
	invalid  []*desired.Session // with names that are not valid
	users    []string           // sorted
	items    []item
	recs     []record // objects, in key order, then listing order
}

// compareRecs is the total order of object records: key, then the listing
// order (which sortForRemoval discards).
func (j *joiner) compareRecs(a, b *record) int {
	if c := a.compare(b.encoded); c != 0 {
		return c
	}
	if a.long || b.long {
		if c := j.items[a.idx].key.Compare(j.items[b.idx].key); c != 0 {
			return c
		}
	}
	return cmp.Compare(a.idx, b.idx)
}

// compareKeyRec orders key k, encoded as e, against object record r.
func (j *joiner) compareKeyRec(k desired.SessionKey, e encoded, r *record) int {
	if c := e.compare(r.encoded); c != 0 {
		return c
	}
	if e.long || r.long {
		return k.Compare(j.items[r.idx].key)
	}
	return 0
}

// newJoiner reads every input once, in parallel, and sorts the objects.
func newJoiner(d desired.State, o observed.State, workers int) *joiner {
	j := &joiner{
		items: make([]item, len(o.Objects)),
		recs:  make([]record, len(o.Objects)),
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		j.sessions, j.invalid = sortedSessions(d.Sessions)
		j.users = d.Users
		if !slices.IsSorted(j.users) {
			j.users = slices.Sorted(slices.Values(d.Users))
		}
	})
	parallel(len(o.Objects), workers, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			it := newItem(&o.Objects[i], d.InstanceID)
			j.recs[i] = record{encode(it.key.User, it.key.Project), int32(i)}
			j.items[i] = it
		}
	})
	wg.Wait()
	j.sort(workers)
	return j
}

// sortedSessions returns ss if it is in strict key order with valid
// names, as loaders provide it, or else a sorted copy without nils
// (duplicates stay, for the walk to report). Sessions whose names are not
// valid (a row edited by hand) are returned apart: the key encoding relies
// on valid names, and no object can carry them anyway.
func sortedSessions(ss []*desired.Session) (sorted, invalid []*desired.Session) {
	ok := true
	for i, s := range ss {
		if s == nil || !validKey(s.Key) || (i > 0 && ss[i-1].Key.Compare(s.Key) >= 0) {
			ok = false
			break
		}
	}
	if ok {
		return ss, nil
	}
	sorted = make([]*desired.Session, 0, len(ss))
	for _, s := range ss {
		switch {
		case s == nil:
		case !validKey(s.Key):
			invalid = append(invalid, s)
		default:
			sorted = append(sorted, s)
		}
	}
	cmpKey := func(a, b *desired.Session) int { return a.Key.Compare(b.Key) }
	slices.SortStableFunc(sorted, cmpKey)
	slices.SortStableFunc(invalid, cmpKey)
	return sorted, invalid
}

func validKey(k desired.SessionKey) bool {
	return validName(k.User, 32) && (k.Project == "" || validName(k.Project, 64))
}

// radixMin is the size from which the radix sort beats a comparison sort.
const radixMin = 256

// sort orders the records by compareRecs: a radix sort on the first 8
// encoded bytes, then each run that shares them (names with a common
// prefix, a user's projects) by the next 8 (a radix sort again if the run
// is long) and, where long keys tie on all 16, by their strings.
func (j *joiner) sort(workers int) {
	cmpRec := func(a, b record) int { return j.compareRecs(&a, &b) }
	if len(j.recs) < radixMin {
		slices.SortFunc(j.recs, cmpRec)
		return
	}
	spare := make([]record, len(j.recs))
	j.recs, spare = radixSort(j.recs, spare, workers, true)
	recs := j.recs
	var long [][2]int
	for lo := 0; lo < len(recs); {
		hi, same := lo+1, !recs[lo].long
		for hi < len(recs) && recs[hi].k0 == recs[lo].k0 {
			same = same && recs[hi].k1 == recs[lo].k1 && !recs[hi].long
			hi++
		}
		// The radix sort is stable, so records of one short key are in
		// listing order, and other runs are often in order too.
		switch run := recs[lo:hi]; {
		case same || slices.IsSortedFunc(run, cmpRec):
		case len(run) >= radixMin:
			long = append(long, [2]int{lo, hi})
		default:
			slices.SortFunc(run, cmpRec)
		}
		lo = hi
	}
	parallel(len(long), workers, func(lo, hi int) {
		for _, r := range long[lo:hi] {
			// Runs are disjoint, so each sorts through its own part of spare.
			run := recs[r[0]:r[1]]
			if sorted, _ := radixSort(run, spare[r[0]:r[1]], 1, false); &sorted[0] != &run[0] {
				copy(run, sorted)
			}
			if !slices.IsSortedFunc(run, cmpRec) {
				j.sortTies(run, cmpRec)
			}
		}
	})
}

// sortTies sorts the runs of records, ordered by their encoded bytes,
// that share all 16: long keys that differ further on.
func (j *joiner) sortTies(recs []record, cmpRec func(a, b record) int) {
	for lo := 0; lo < len(recs); {
		hi := lo + 1
		for hi < len(recs) && recs[hi].compare(recs[lo].encoded) == 0 {
			hi++
		}
		slices.SortFunc(recs[lo:hi], cmpRec)
		lo = hi
	}
}

const (
	digitBits     = 8
	digitsPerWord = 64 / digitBits
	buckets       = 1 << digitBits
)

func (r *record) digit(hi bool, shift uint) int {
	k := r.k1
	if hi {
		k = r.k0
	}
	return int(k >> shift & (buckets - 1))
}

// radixSort is a least-significant-digit radix sort on one of the words
// of the encoded bytes (k0 if high, else k1), through tmp (as long as a),
// returning whichever of the two holds the result. Each pass is split across
// workers: each counts its share of the records, then writes them at
// offsets that keep the sort stable. Digits that all records share (the
// zero padding of short names, a common prefix) cost no pass. Byte digits
// keep the scatter's write streams few enough for the caches.
func radixSort(a, tmp []record, workers int, high bool) (sorted, spare []record) {
	workers = max(1, min(workers, len(a)/chunkMin))
	bound := func(w int) int { return len(a) * w / workers }
	// A digit varies if some record differs from the first in it.
	diffs := make([]encoded, workers)
	parallel(workers, workers, func(wlo, whi int) {
		for w := wlo; w < whi; w++ {
			for i := bound(w); i < bound(w+1); i++ {
				diffs[w].k0 |= a[i].k0 ^ a[0].k0
				diffs[w].k1 |= a[i].k1 ^ a[0].k1
			}
		}
	})
	var varying record
	for _, d := range diffs {
		varying.k0 |= d.k0
		varying.k1 |= d.k1
	}

	counts := make([][buckets]int32, workers)
	for d := range digitsPerWord {
		hi, shift := high, uint(d)*digitBits
		if varying.digit(hi, shift) == 0 {
			continue
		}
		parallel(workers, workers, func(wlo, whi int) {
			for w := wlo; w < whi; w++ {
				c := &counts[w]
				*c = [buckets]int32{}
				for i := bound(w); i < bound(w+1); i++ {
					c[a[i].digit(hi, shift)]++
				}
			}
		})
		// Worker w's records of digit v go after every record of a smaller
		// digit and after those of digit v of the workers before w.
		var sum int32
		for v := range buckets {
			for w := range counts {
				n := counts[w][v]
				counts[w][v] = sum
				sum += n
			}
		}
		parallel(workers, workers, func(wlo, whi int) {
			for w := wlo; w < whi; w++ {
				off := &counts[w]
				for i := bound(w); i < bound(w+1); i++ {
					v := a[i].digit(hi, shift)
					tmp[off[v]] = a[i]
					off[v]++
				}
			}
		})
		a, tmp = tmp, a
	}
	return a, tmp
}

// span is a share of the join: sessions, object records and users, each a
// half-open range, holding whole users (so each share knows whether its
// users have key files).
type span struct{ s0, s1, o0, o1, u0, u1 int }

// split cuts the join into at most n spans at user boundaries, by session
// count.
func (j *joiner) split(n int) []span {
	all := span{0, len(j.sessions), 0, len(j.recs), 0, len(j.users)}
	if n <= 1 || len(j.sessions) < 2*chunkMin {
		return []span{all}
	}
	var out []span
	cur := all
	for w := 1; w < n; w++ {
		user := j.sessions[len(j.sessions)*w/n].Key.User
		// The first key of user is (user, ""): cut before it everywhere.
		first := desired.SessionKey{User: user}
		e := encode(first.User, first.Project)
		s, _ := slices.BinarySearchFunc(j.sessions, first, func(s *desired.Session, k desired.SessionKey) int { return s.Key.Compare(k) })
		o := sort.Search(len(j.recs), func(i int) bool { return j.compareKeyRec(first, e, &j.recs[i]) <= 0 })
		u, _ := slices.BinarySearch(j.users, user)
		if s <= cur.s0 {
			continue
		}
		out = append(out, span{cur.s0, s, cur.o0, o, cur.u0, u})
		cur.s0, cur.o0, cur.u0 = s, o, u
	}
	return append(out, cur)
}

// walk calls fn with each key of span sp, in key order. The group's
// objects slice is reused between calls.
func (j *joiner) walk(sp span, fn func(*keyGroup)) {
	si, oi, ui := sp.s0, sp.o0, sp.u0
	warmS, warmO, warmth := si, oi, 0
	var g keyGroup
	for si < sp.s1 || oi < sp.o1 {
		// Touch the memory of the next keys in a tight loop before deciding
		// them: these loads do not depend on each other, so their cache
		// misses overlap, where deciding one key at a time would wait for
		// each in turn.
		if si >= warmS && si < sp.s1 {
			warmS = min(si+warmAhead, sp.s1)
			warmth += j.warmSessions(si, warmS)
		}
		if oi >= warmO && oi < sp.o1 {
			warmO = min(oi+2*warmAhead, sp.o1)
			warmth += j.warmObjects(oi, warmO)
		}
		g = keyGroup{objects: g.objects[:0], warmth: warmth}
		var e encoded
		if si < sp.s1 {
			g.key = j.sessions[si].Key
			e = encode(g.key.User, g.key.Project)
		}
		if oi < sp.o1 && (si == sp.s1 || j.compareKeyRec(g.key, e, &j.recs[oi]) > 0) {
			// An object's key comes first: a key with no session.
			r := &j.recs[oi]
			g.key, e = j.items[r.idx].key, r.encoded
		}
		for ; si < sp.s1 && j.sessions[si].Key == g.key; si++ {
			g.sess, g.sessionIndex = j.sessions[si], si
			g.sessions++
		}
		for ; oi < sp.o1 && j.compareKeyRec(g.key, e, &j.recs[oi]) == 0; oi++ {
			g.objects = append(g.objects, j.recs[oi].idx)
		}
		for ui < sp.u1 && j.users[ui] < g.key.User {
			ui++
		}
		g.hasUser = ui < sp.u1 && j.users[ui] == g.key.User
		fn(&g)
	}
}

// warmAhead is how many sessions warmSessions touches at once: enough
// misses in flight to cover the latency, few enough to stay in L1.
const warmAhead = 32

// warmSessions reads what deciding sessions [lo, hi) reads first: each
// session, its leases and the bytes of its names. The sum only keeps the
// loads from being optimised away.
func (j *joiner) warmSessions(lo, hi int) int {
	x := 0
	ss := j.sessions[lo:hi]
	for _, s := range ss {
		x += len(s.ID) + len(s.Spec.ContainerName) + len(s.Leases) + len(s.Status)
	}
	for _, s := range ss {
		if len(s.Leases) > 0 {
			x += s.Leases[0].PID
		}
		if len(s.ID) > 0 && len(s.Spec.ContainerName) > 0 {
			x += int(s.ID[0]) + int(s.Spec.ContainerName[0])
		}
	}
	return x
}

// warmObjects does the same for the items of object records [lo, hi).
func (j *joiner) warmObjects(lo, hi int) int {
	x := 0
	rs := j.recs[lo:hi]
	for _, r := range rs {
		it := &j.items[r.idx]
		x += len(it.session) + len(it.Name)
	}
	for _, r := range rs {
		it := &j.items[r.idx]
		if len(it.session) > 0 && len(it.Name) > 0 {
			x += int(it.session[0]) + int(it.Name[0])
		}
	}
	return x
}

// parallel runs fn over [0, n) split into at most workers contiguous
// ranges, and waits.
func parallel(n, workers int, fn func(lo, hi int)) {
	if workers <= 1 || n < 2 {
		fn(0, n)
		return
	}
	workers = min(workers, n)
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := n*w/workers, n*(w+1)/workers
		wg.Go(func() { fn(lo, hi) })
	}
	wg.Wait()
}

// chunkMin is the least work worth a goroutine.
const chunkMin = 4096

// item is an observed object (the caller's, never modified) with the
// labels Compute consults, read once.

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

// newItem reads the labels in one pass over the map (cheaper than a
// lookup per label).
func newItem(o *observed.Object, instanceID string) item {
	it := item{Object: o}
	var user, project, role, instance string
	var managed, keep bool
	for k, v := range o.Labels {
		switch k {
		case observed.LabelUser:
			user = v
		case observed.LabelProject:
			project = v
		case observed.LabelSession:
			it.session = v
		case observed.LabelInstance:
			instance = v
		case observed.LabelRole:
			role = v
		case observed.LabelManagedBy:
			managed = v == observed.ManagedByValue
		case observed.LabelKeep:
			keep = v == "true"
		}
	}
	it.ours = instance == instanceID
	it.noInstance = instance == ""
	switch o.Kind {
	case observed.KindContainer:
		if role == observed.RoleService {
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
	case !managed:
		it.class = classUnmanaged
	case instance != "" && instance != instanceID:
		it.class = classForeign
	case keep:
		it.class = classProtected
	}
	it.key = labelKey(user, project)
	return it
}

// labelKey is observed.Object.Key from the user and project labels,
// without its regexps, which dominated Compute at 100k sessions.
// TestObjectKeyMatchesObserved holds the two equal.
func labelKey(user, project string) desired.SessionKey {
	if !validName(user, 32) || (project != "" && !validName(project, 64)) {
		return desired.Unattributed
	}
	return desired.SessionKey{User: user, Project: project}
}

// validName matches ^[a-z][a-z0-9_-]{0,max-1}$.
func validName(s string, maxLen int) bool {
	if len(s) == 0 || len(s) > maxLen || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		if b := s[i]; (b < 'a' || b > 'z') && (b < '0' || b > '9') && b != '_' && b != '-' {
			return false
		}
	}
	return true
}
