package sqlstore

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/podspawn/podspawn/desired"
)

// AdmissionError refuses a new session because the user already has
// resources.max_per_user others. The message tells the user how to free a slot.
type AdmissionError struct {
	User   string
	Max    int
	Others []desired.SessionKey
}

// ForUser: the refusal names only the user's own sessions and how to free
// a slot, so spawn shows it as it is (desired.UserFacing).
func (e *AdmissionError) ForUser() bool { return true }

func (e *AdmissionError) Error() string {
	names := make([]string, len(e.Others))
	for i, k := range e.Others {
		names[i] = k.String()
	}
	return fmt.Sprintf("user %s already has %d session(s) (max %d): %s; to free a slot, disconnect every connection of one of them "+
		"(it ends after its grace period), or ask an admin to run: podspawn stop %s@<project>",
		e.User, len(e.Others), e.Max, strings.Join(names, ", "), e.User)
}

// AttachRequest is one connection asking for its session.
type AttachRequest struct {
	Key desired.SessionKey
	// Decide sees the current row (nil if none) inside the transaction and
	// returns nil to attach to it, or a new generation to insert in its
	// place (a replacement when a row exists).
	Decide func(existing *desired.Session) (*desired.Session, error)
	// MaxPerUser bounds the user's sessions when a new generation is
	// recorded; 0 means unlimited.
	MaxPerUser int
	// PID and PIDStart identify the process that serves the connection.
	PID      int
	PIDStart uint64
	Now      time.Time
}

// AttachResult is the session the connection holds a lease on.
type AttachResult struct {
	Session *desired.Session
	LeaseID int64
	// Replaced is the generation that was swapped out (nil if none).
	Replaced *desired.Session
	// Created is true when a new generation was recorded.
	Created bool
}

// Attach records, in one transaction, the desired session of a connection
// (new, replaced or unchanged) and a lease for the connection's process, so
// a session row never exists for a connection without its lease. Admission
// control counts the user's other sessions that are not terminating.
func (s *Store) Attach(ctx context.Context, req AttachRequest) (AttachResult, error) {
	var res AttachResult
	err := s.Tx(ctx, func(tx *sqlx.Tx) error {
		res = AttachResult{}
		existing, err := loadKeyTx(ctx, tx, req.Key)
		if err != nil {
			return err
		}
		next, err := req.Decide(existing)
		if err != nil {
			return err
		}
		sess := existing
		if next != nil {
			if next.Key != req.Key {
				return fmt.Errorf("new generation is for %s, not %s", next.Key, req.Key)
			}
			if req.MaxPerUser > 0 {
				var others []desired.SessionKey
				if err := tx.SelectContext(ctx, &others, `SELECT user, project FROM sessions
					WHERE user = ? AND project != ? AND status != 'terminating' ORDER BY project`, req.Key.User, req.Key.Project); err != nil {
					return fmt.Errorf("counting sessions of %s: %w", req.Key.User, err)
				}
				if len(others) >= req.MaxPerUser {
					return &AdmissionError{User: req.Key.User, Max: req.MaxPerUser, Others: others}
				}
			}
			if err := checkNameClash(ctx, tx, next); err != nil {
				return err
			}
			if existing != nil {
				if err := s.Replace(ctx, tx, existing, next, req.Now); err != nil {
					return fmt.Errorf("replacing session %s: %w", req.Key, err)
				}
				res.Replaced = existing
			} else if err := insertSession(ctx, tx, next, req.Now); err != nil {
				return err
			}
			res.Created = true
			sess = next
		}
		if sess == nil {
			return fmt.Errorf("no session for %s and none to create", req.Key)
		}
		if res.LeaseID, err = insertLease(ctx, tx, sess.ID, req.PID, req.PIDStart, req.Now); err != nil {
			return err
		}
		loaded, err := loadKeyTx(ctx, tx, req.Key)
		if err != nil {
			return err
		}
		res.Session = loaded
		return nil
	})
	if err != nil {
		return AttachResult{}, err
	}
	return res, nil
}

// Detach releases the lease of a connection that ended. It reports whether
// the lease still existed: a lease that a reconcile already released (its
// process looked dead) or whose generation was replaced is simply gone.
func (s *Store) Detach(ctx context.Context, leaseID int64) (bool, error) {
	released, err := s.ReleaseLease(ctx, leaseID)
	if err != nil {
		return false, fmt.Errorf("releasing connection lease %d: %w", leaseID, err)
	}
	return released, nil
}

// NameClashError: a new session would take a Docker container name that
// another session holds. Names join user, project and service with "-",
// which the names themselves may contain, so user alice-web and alice's
// project web both map to podspawn-alice-web.
type NameClashError struct {
	Key, Other desired.SessionKey
	Name       string
}

func (e *NameClashError) Error() string {
	return fmt.Sprintf("session %s would use the Docker name %s, which session %s already uses "+
		"(user, project and service names are joined with \"-\"): rename the project or service, or stop %s first",
		e.Key, e.Name, e.Other, e.Other)
}

// checkNameClash refuses a generation whose session or service container
// names (and so its network's) are held by another key's row: the second
// creation would only fail later on a Docker name conflict.
func checkNameClash(ctx context.Context, tx *sqlx.Tx, next *desired.Session) error {
	names := append([]string{next.Spec.ContainerName}, serviceNames(next.Spec)...)
	ours, err := json.Marshal(names)
	if err != nil {
		return err
	}
	var rows []struct {
		User      string `db:"user"`
		Project   string `db:"project"`
		Container string `db:"container_name"`
		Services  string `db:"service_names"`
	}
	if err := tx.SelectContext(ctx, &rows, `SELECT user, project, container_name, service_names FROM sessions s
		WHERE NOT (user = ? AND project = ?)
		  AND (container_name IN (SELECT value FROM json_each(?))
		       OR EXISTS (SELECT 1 FROM json_each(s.service_names) j WHERE j.value IN (SELECT value FROM json_each(?))))
		ORDER BY user, project LIMIT 1`, next.Key.User, next.Key.Project, string(ours), string(ours)); err != nil {
		return fmt.Errorf("checking Docker names of %s: %w", next.Key, err)
	}
	if len(rows) == 0 {
		return nil
	}
	r := rows[0]
	var theirs []string
	if err := json.Unmarshal([]byte(r.Services), &theirs); err != nil {
		return fmt.Errorf("session %s/%s: corrupt service_names column: %w", r.User, r.Project, err)
	}
	theirs = append(theirs, r.Container)
	clash := ""
	for _, n := range names {
		if slices.Contains(theirs, n) {
			clash = n
			break
		}
	}
	return &NameClashError{Key: next.Key, Other: desired.SessionKey{User: r.User, Project: r.Project}, Name: clash}
}
