package spawn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/actions/audit"
	"github.com/podspawn/podspawn/controller"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/generation"
	"github.com/podspawn/podspawn/desired/sqlstore"
)

// fakeSessions attaches with att or fails with err.
type fakeSessions struct {
	att      *Attachment
	err      error
	detached int
}

func (f *fakeSessions) Attach(context.Context, desired.SessionKey) (*Attachment, error) {
	return f.att, f.err
}

func (f *fakeSessions) Detach(*Attachment) error { f.detached++; return nil }

// exitExecer runs every connection process to the exit code.
type exitExecer struct {
	fakeExecer
	code int
}

func (e *exitExecer) Exec(context.Context, actions.ExecSpec, actions.Stdio) (int, error) {
	return e.code, nil
}

func auditEvents(t *testing.T, path string) []audit.Event {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []audit.Event
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var e audit.Event
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatal(err)
		}
		// Time and duration vary: checked here, then zeroed.
		if e.Time.IsZero() {
			t.Errorf("record without a time: %s", l)
		}
		e.Time = time.Time{}
		if e.Event == audit.SessionDisconnect {
			if e.DurationMS == nil || *e.DurationMS < 0 {
				t.Errorf("disconnect without a duration: %s", l)
			}
			e.DurationMS = new(int64)
		}
		out = append(out, e)
	}
	return out
}

// A served command is recorded as connect and disconnect with its kind,
// escaped command, lease, client and exit code.
func TestServeAuditsConnection(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	w, err := audit.Open(path, testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	key := desired.SessionKey{User: "alice"}
	att := &Attachment{Key: key, ContainerID: "ctr1", LeaseID: 9, Session: &desired.Session{Key: key, ID: "g1", Spec: desired.Spec{Shell: "/bin/sh", ContainerName: "podspawn-alice"}}}
	sessions := &fakeSessions{att: att}
	sv := &Server{Sessions: sessions, Exec: &exitExecer{code: 5}, Log: testr.New(t), Audit: Auditing{Log: w, Required: true}}
	code, err := sv.Serve(context.Background(), Connection{Key: key, OriginalCommand: "make\x1b[2J test", Client: "192.0.2.1:4000"})
	if err != nil || code != 5 || sessions.detached != 1 {
		t.Fatalf("Serve = %d, %v (detached %d); want 5, nil, 1", code, err, sessions.detached)
	}
	five := 5
	base := audit.Event{User: "alice", Session: "g1", Actor: "alice", Container: "podspawn-alice", Lease: 9, Client: "192.0.2.1:4000", Kind: "exec", Command: `make\x1b[2J test`}
	connect, disconnect := base, base
	connect.Event, disconnect.Event = audit.SessionConnect, audit.SessionDisconnect
	disconnect.ExitCode, disconnect.DurationMS = &five, new(int64)
	got := auditEvents(t, path)
	if diff := cmp.Diff([]audit.Event{connect, disconnect}, got); diff != "" {
		t.Fatalf("events (-want +got):\n%s", diff)
	}
}

// A connection whose session.connect cannot be written is refused (and its
// lease given back) when the audit log is required.
func TestServeRefusesWithoutAudit(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	w, err := audit.Open(path, testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// The path becomes a directory: the writer's reopen fails.
	os.Remove(path)
	os.Mkdir(path, 0o700)
	key := desired.SessionKey{User: "alice"}
	att := &Attachment{Key: key, Session: &desired.Session{Key: key, ID: "g1", Spec: desired.Spec{Shell: "/bin/sh"}}}
	sessions := &fakeSessions{att: att}
	ex := &exitExecer{code: 0}
	sv := &Server{Sessions: sessions, Exec: ex, Log: testr.New(t), Audit: Auditing{Log: w, Required: true}}
	_, err = sv.Serve(context.Background(), Connection{Key: key, OriginalCommand: "true"})
	if err == nil || !strings.Contains(err.Error(), "refusing the connection: the audit log cannot be written") || sessions.detached != 1 {
		t.Fatalf("Serve = %v (detached %d); want a refusal and the lease given back", err, sessions.detached)
	}
	sv.Audit.Required = false
	if code, err := sv.Serve(context.Background(), Connection{Key: key, OriginalCommand: "true"}); err != nil || code != 0 {
		t.Fatalf("with audit_required false: Serve = %d, %v; want 0, nil", code, err)
	}
}

// Refusals by policy are auth.denied with a reason; other failures are not.
func TestDeniedReason(t *testing.T) {
	for want, err := range map[string]error{
		"unknown-user":           &controller.DeniedError{Reason: controller.DeniedUnknownUser, Err: errors.New("x")},
		"user-removed":           fmt.Errorf("wrapped: %w", &controller.DeniedError{Reason: controller.DeniedUserRemoved, Err: errors.New("x")}),
		"max-per-user":           fmt.Errorf("recording: %w", &sqlstore.AdmissionError{User: "alice", Max: 1}),
		"project-not-registered": &generation.NotRegisteredError{Name: "web"},
		"":                       errors.New("Docker is not reachable"),
	} {
		if got := DeniedReason(err); got != want {
			t.Errorf("DeniedReason(%v) = %q, want %q", err, got, want)
		}
	}
}

// A refused attach writes auth.denied with the escaped cause.
func TestServeAuditsDenial(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	w, err := audit.Open(path, testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	key := desired.SessionKey{User: "alice", Project: "web"}
	cause := &sqlstore.AdmissionError{User: "alice", Max: 1, Others: []desired.SessionKey{{User: "alice"}}}
	sv := &Server{Sessions: &fakeSessions{err: cause}, Exec: &exitExecer{}, Log: testr.New(t), Audit: Auditing{Log: w, Required: true}}
	if _, err := sv.Serve(context.Background(), Connection{Key: key, Client: "192.0.2.1:4000"}); !errors.Is(err, cause) {
		t.Fatalf("Serve = %v, want the admission error", err)
	}
	got := auditEvents(t, path)
	want := []audit.Event{{Event: audit.AuthDenied, User: "alice", Project: "web", Actor: "alice", Client: "192.0.2.1:4000", Reason: "max-per-user", Error: cause.Error()}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("events (-want +got):\n%s", diff)
	}
}
