package reconcile

import (
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
