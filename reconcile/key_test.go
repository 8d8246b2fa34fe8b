package reconcile

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"pgregory.net/rapid"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/observed"
)

func labelled(user, project *string) *observed.Object {
	l := map[string]string{}
	if user != nil {
		l[observed.LabelUser] = *user
	}
	if project != nil {
		l[observed.LabelProject] = *project
	}
	return &observed.Object{Labels: l}
}

// TestObjectKeyMatchesObserved holds the key Compute's fast label parser
// finds equal to observed.Object.Key and its regexps.
func TestObjectKeyMatchesObserved(t *testing.T) {
	s := func(v string) *string { return &v }
	long := func(n int) string { return "a" + strings.Repeat("b", n-1) }
	for _, tc := range []struct{ user, project *string }{
		{nil, nil}, {s(""), nil}, {s("alice"), nil}, {s("alice"), s("")}, {s("alice"), s("web")},
		{s(long(32)), nil}, {s(long(33)), nil}, {s("alice"), s(long(64))}, {s("alice"), s(long(65))},
		{s("Alice"), nil}, {s("1alice"), nil}, {s("-alice"), nil}, {s("al ice"), nil}, {s("alice\n"), nil},
		{s("a_b-c9"), s("p_q-r0")}, {s("alice"), s("Web")}, {s("alice"), s("we.b")}, {s("alicé"), nil},
		{s("alice"), s("_web")}, {nil, s("web")},
	} {
		o := labelled(tc.user, tc.project)
		want, _ := o.Key()
		if got := newItem(o, "").key; got != want {
			t.Errorf("labels %v: newItem's key = %+v, Object.Key = %+v", o.Labels, got, want)
		}
	}
}

func TestObjectKeyMatchesObservedProperty(t *testing.T) {
	// Letters from every class the regexps distinguish, plus bytes of a
	// multi-byte rune.
	alphabet := []rune("az09_-AZ.@ \n/é")
	name := rapid.OneOf(
		rapid.StringMatching(`[a-z][a-z0-9_-]{0,70}`), // valid up to a length limit
		rapid.StringMatching(`[a-z][a-z0-9_-]{0,70}[^a-z0-9_-][a-z]?`),
		rapid.Custom(func(t *rapid.T) string {
			return string(rapid.SliceOfN(rapid.SampledFrom(alphabet), 0, 70).Draw(t, "runes"))
		}),
	)
	rapid.Check(t, func(t *rapid.T) {
		u, p := name.Draw(t, "user"), name.Draw(t, "project")
		o := labelled(&u, &p)
		want, _ := o.Key()
		if got := newItem(o, "").key; got != want {
			t.Fatalf("labels %q %q: newItem's key = %+v, Object.Key = %+v", u, p, got, want)
		}
		if got, want := validName(u, 32), desired.ValidateUserName(u) == nil; got != want {
			t.Fatalf("validName(%q, 32) = %v, ValidateUserName says %v", u, got, want)
		}
	})
}

// TestJoinOrdersLikeKeys: encoded keys order records as their session keys
// order, whether the encoding decides (short keys) or the strings do
// (long ones), for object records and for a key against a record.
func TestJoinOrdersLikeKeys(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		name := rapid.StringMatching(`[a-c][a-c0_-]{0,18}`)
		key := func(label string) desired.SessionKey {
			k := desired.SessionKey{User: name.Draw(t, label+" user")}
			if rapid.Bool().Draw(t, label+" has project") {
				k.Project = name.Draw(t, label+" project")
			}
			return k
		}
		a, b := key("a"), key("b")
		j := &joiner{items: []item{{key: a}, {key: b}}}
		ra, rb := record{encode(a.User, a.Project), 0}, record{encode(b.User, b.Project), 1}
		want := a.Compare(b)
		if got := j.compareKeyRec(a, ra.encoded, &rb); got != want {
			t.Fatalf("compareKeyRec(%v, %v) = %d, want %d", a, b, got, want)
		}
		if want == 0 {
			want = -1 // equal keys fall back to the listing order
		}
		if got := j.compareRecs(&ra, &rb); got != want {
			t.Fatalf("compareRecs(%v, %v) = %d, want %d", a, b, got, want)
		}
	})
}

// TestRadixSortMatchesSort: the radix sort is stable and orders a word of
// the encoded bytes as a comparison sort does.
func TestRadixSortMatchesSort(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		// Few distinct values per digit, so that ties and skipped digits
		// occur; sizes up to three workers' shares.
		rng := rand.New(rand.NewPCG(rapid.Uint64().Draw(t, "seed"), 0))
		digitValues := []uint64{0, 1, 0x80, 0xff}
		varying := rapid.Uint64().Draw(t, "varying digits")
		word := func(shift int) uint64 {
			var k uint64
			for d := range 8 {
				if varying>>(shift+d)&1 == 1 {
					k |= digitValues[rng.IntN(len(digitValues))] << (8 * d)
				}
			}
			return k
		}
		n := rapid.IntRange(1, 3*chunkMin).Draw(t, "n")
		recs := make([]record, n)
		for i := range recs {
			recs[i] = record{encoded: encoded{k0: word(0), k1: word(8)}, idx: int32(i)}
		}
		high := rapid.Bool().Draw(t, "high")
		want := slices.Clone(recs)
		slices.SortStableFunc(want, func(a, b record) int {
			if high {
				return cmp.Compare(a.k0, b.k0)
			}
			return cmp.Compare(a.k1, b.k1)
		})
		workers := rapid.IntRange(1, 4).Draw(t, "workers")
		if got, _ := radixSort(slices.Clone(recs), make([]record, n), workers, high); !slices.Equal(got, want) {
			t.Fatalf("radix sort differs from a stable sort")
		}
	})
}
