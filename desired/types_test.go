package desired_test

import (
	"regexp"
	"testing"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"

	"github.com/podspawn/podspawn/desired"
)

func TestStateKeepsSessionsAndUsersSorted(t *testing.T) {
	s := func(user, project, id string) *desired.Session {
		return &desired.Session{Key: desired.SessionKey{User: user, Project: project}, ID: id}
	}
	st := desired.NewState("inst", []*desired.Session{s("bob", "", "1"), s("alice", "web", "2"), s("alice", "", "3"), s("bob", "", "4")},
		[]string{"carol", "alice", "bob", "alice"})
	keys := func() []string {
		var out []string
		for _, sess := range st.Sessions {
			out = append(out, sess.Key.String()+"="+sess.ID)
		}
		return out
	}
	if diff := cmp.Diff([]string{"alice=3", "alice@web=2", "bob=4"}, keys()); diff != "" {
		t.Fatalf("NewState sessions (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"alice", "bob", "carol"}, st.Users); diff != "" {
		t.Fatalf("NewState users (-want +got):\n%s", diff)
	}

	st.PutSession(s("alice", "api", "5"))
	st.PutSession(s("alice", "web", "6"))
	st.RemoveSession(desired.SessionKey{User: "bob"})
	st.RemoveSession(desired.SessionKey{User: "nobody"})
	if diff := cmp.Diff([]string{"alice=3", "alice@api=5", "alice@web=6"}, keys()); diff != "" {
		t.Fatalf("after edits (-want +got):\n%s", diff)
	}
	if got := st.Session(desired.SessionKey{User: "alice", Project: "api"}); got == nil || got.ID != "5" {
		t.Fatalf("Session(alice@api) = %+v", got)
	}
	if got := st.Session(desired.SessionKey{User: "bob"}); got != nil {
		t.Fatalf("Session(bob) = %+v after RemoveSession", got)
	}

	st.RemoveUser("bob")
	st.RemoveUser("nobody")
	if !st.HasUser("alice") || st.HasUser("bob") || !st.HasUser("carol") {
		t.Fatalf("users after RemoveUser(bob) = %v", st.Users)
	}
	if diff := cmp.Diff([]desired.SessionKey{{User: "alice"}, {User: "alice", Project: "api"}, {User: "alice", Project: "web"}}, st.Keys()); diff != "" {
		t.Fatalf("Keys (-want +got):\n%s", diff)
	}
}

// TestNameRulesMatchTheirRegexps holds the hand-written name check equal
// to the documented rules, ^[a-z][a-z0-9_-]{0,31}$ for users and
// ^[a-z][a-z0-9_-]{0,63}$ for projects.
func TestNameRulesMatchTheirRegexps(t *testing.T) {
	userRE := regexp.MustCompile(`^[a-z][a-z0-9_-]{0,31}$`)
	projectRE := regexp.MustCompile(`^[a-z][a-z0-9_-]{0,63}$`)
	alphabet := []rune("az09_-AZ.@ \n/é")
	name := rapid.OneOf(
		rapid.StringMatching(`[a-z][a-z0-9_-]{0,70}`),
		rapid.StringMatching(`[a-z][a-z0-9_-]{0,70}[^a-z0-9_-][a-z]?`),
		rapid.Custom(func(t *rapid.T) string {
			return string(rapid.SliceOfN(rapid.SampledFrom(alphabet), 0, 70).Draw(t, "runes"))
		}),
	)
	rapid.Check(t, func(t *rapid.T) {
		n := name.Draw(t, "name")
		if got, want := desired.ValidateUserName(n) == nil, userRE.MatchString(n); got != want {
			t.Fatalf("ValidateUserName(%q) ok = %v, regexp says %v", n, got, want)
		}
		if got, want := desired.ValidateProjectName(n) == nil, projectRE.MatchString(n); got != want {
			t.Fatalf("ValidateProjectName(%q) ok = %v, regexp says %v", n, got, want)
		}
	})
}
