package main

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestHumanLogger(t *testing.T) {
	var buf bytes.Buffer
	log := newCommandLogger("text", 0, &buf)
	log.Info("Removing object", "target", "podspawn-alice")
	log.V(1).Info("Cleanup pass finished")
	key := log.WithValues("user", "alice", "project", "")
	key.Error(nil, "Holding removals (blast-radius guard)", "rule", "mass-removal", "sessions", 3)
	key.Error(errors.New("network has active endpoints"), "Reconcile failed", "attempt", 2, "retryIn", 5*time.Second)
	log.WithName("update").Error(nil, "Image build output", "image", "podspawn/web:podfile-1",
		"output", "Step 1/2 : FROM busybox\nStep 2/2 : RUN false\n", "odd")
	want := `Warning: Holding removals (blast-radius guard) (user: alice, project: "", rule: mass-removal, sessions: 3)
Error: Reconcile failed: network has active endpoints (user: alice, project: "", attempt: 2, retryIn: 5s)
Warning: update: Image build output (image: podspawn/web:podfile-1, odd: (missing))
  output:
    Step 1/2 : FROM busybox
    Step 2/2 : RUN false
`
	if diff := cmp.Diff(want, buf.String()); diff != "" {
		t.Errorf("default text logger (-want +got):\n%s", diff)
	}
}

func TestCommandLoggerFormats(t *testing.T) {
	for _, tc := range []struct {
		format    string
		verbosity int
		// what Info and Error records print
		info, err bool
	}{
		{"text", 0, false, true},
		{"json", 0, false, true},
		{"text", 1, true, true},
		{"json", 1, true, true},
	} {
		var buf bytes.Buffer
		log := newCommandLogger(tc.format, tc.verbosity, &buf)
		log.Info("progress")
		gotInfo := buf.Len() > 0
		buf.Reset()
		log.Error(errors.New("boom"), "failed")
		gotErr := buf.Len() > 0
		if gotInfo != tc.info || gotErr != tc.err {
			t.Errorf("%s at verbosity %d: info printed %v, error printed %v; want %v, %v", tc.format, tc.verbosity, gotInfo, gotErr, tc.info, tc.err)
		}
		if tc.format == "json" && gotErr && !bytes.HasPrefix(buf.Bytes(), []byte("{")) {
			t.Errorf("json at verbosity %d: %q is not a JSON record", tc.verbosity, buf.String())
		}
	}
}

// With -v the controller's progress appears on stderr, through zap as the
// daemon logs it; --log-format json keeps stderr for warnings and errors
// too, as JSON records.
func TestVerboseGolden(t *testing.T) {
	t.Run("cleanup_verbose", func(t *testing.T) {
		// One session: its actions are logged in plan order (orphans and
		// other sessions are reconciled concurrently).
		e := newAdminEnv(t)
		e.keyFile("alice", pubKey(t, 1, "a")+"\n")
		e.seedUserSessions("alice")
		e.clock.Step(2 * time.Minute)
		golden(t, "cleanup_verbose", e.run("-v", "cleanup"))
	})
	t.Run("stop_verbose", func(t *testing.T) {
		e := newAdminEnv(t)
		e.keyFile("alice", pubKey(t, 1, "a")+"\n")
		e.seedUserSessions("alice")
		golden(t, "stop_verbose", e.run("-v", "stop", "alice@backend")+e.run("--log-format", "json", "stop", "alice"))
	})
}
