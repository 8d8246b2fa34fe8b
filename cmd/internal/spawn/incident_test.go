package spawn

import (
	"errors"
	"fmt"
	"regexp"
	"testing"

	"github.com/go-logr/logr/funcr"

	"github.com/podspawn/podspawn/desired"
)

func TestIncident(t *testing.T) {
	var logged []string
	log := funcr.New(func(prefix, args string) { logged = append(logged, args) }, funcr.Options{})

	raw := errors.New("open /var/lib/podspawn/state.db: database is locked")
	got := Incident(log, fmt.Errorf("starting the session of alice: %w", raw), "start your session", "user", "alice").Error()
	m := regexp.MustCompile(`^podspawn could not start your session \(incident ([0-9a-f]{8})\); please tell your administrator, who will find the details under this id in podspawn's log$`).FindStringSubmatch(got)
	if m == nil {
		t.Fatalf("message for the user: %q", got)
	}
	want := fmt.Sprintf(`"msg"="Connection failed" "error"="starting the session of alice: open /var/lib/podspawn/state.db: database is locked" "incident"=%q "user"="alice"`, m[1])
	if len(logged) != 1 || logged[0] != want {
		t.Fatalf("log = %q, want [%q]", logged, want)
	}

	logged = nil
	forUser := fmt.Errorf("starting the session of alice/x: %w", desired.ForUser(errors.New(`project "x" is not registered on this server`)))
	if got := Incident(log, forUser, "start your session").Error(); got != `project "x" is not registered on this server` || len(logged) != 0 {
		t.Fatalf("user error: %q, log %q; want its own text and no incident", got, logged)
	}
	if a, b := NewIncidentID(), NewIncidentID(); a == b {
		t.Fatalf("two incident ids are equal: %s", a)
	}
}
