package desired_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

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
