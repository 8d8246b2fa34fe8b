package spawn

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/go-logr/logr"
	"k8s.io/utils/clock"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/controller"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/config"
	"github.com/podspawn/podspawn/desired/keys"
	"github.com/podspawn/podspawn/desired/lock"
	"github.com/podspawn/podspawn/desired/sqlstore"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/observed/proc"
	"github.com/podspawn/podspawn/reconcile"
)

// Reconciler is the part of the controller a connection uses.
type Reconciler interface {
	ReconcileKey(ctx context.Context, k desired.SessionKey, lockHeld bool) controller.KeyReport
}

// Inspector reads one container, and one image (for project sessions).
type Inspector interface {
	ContainerInspect(ctx context.Context, containerID string) (container.InspectResponse, error)
	actions.ImageInspector
	// ExecAPI runs a project's on_create hook (hooks.go).
	ExecAPI
}

// Sessions attaches connections to sessions and detaches them.
type Sessions struct {
	Config     config.Config
	Store      *sqlstore.Store
	Reconciler Reconciler
	Docker     Inspector
	Clock      clock.PassiveClock
	Log        logr.Logger
	// LockTimeout bounds the wait for the user's lock on connect and on
	// disconnect.
	LockTimeout time.Duration
	// Self identifies the process holding the lease (nil: this process).
	Self func() (observed.ProcessRef, error)
}

// Attachment is a connection's hold on a running session.
type Attachment struct {
	Key         desired.SessionKey
	Session     *desired.Session
	LeaseID     int64
	ContainerID string
	// Notice is on_create's output and warnings, for the connection's stderr.
	Notice string
}

func (s *Sessions) lockTimeout() time.Duration {
	if s.LockTimeout <= 0 {
		return 30 * time.Second
	}
	return s.LockTimeout
}

func (s *Sessions) acquire(ctx context.Context, user string) (*lock.Lock, error) {
	lctx, cancel := context.WithTimeout(ctx, s.lockTimeout())
	defer cancel()
	l, err := lock.Acquire(lctx, s.Config.State.LockDir, user)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("another podspawn process for %s held the lock %s/%s.lock for %s (a slow container start or a stuck process); try again shortly, and if it persists check that process: %w",
				user, s.Config.State.LockDir, user, s.lockTimeout(), err)
		}
		return nil, err
	}
	return l, nil
}

// Attach gives the connection a lease on key's session, creating or
// replacing the container generation when needed, and returns once the
// session container runs. The per-user lock is released before it returns,
// so the user's command never runs under it.
func (s *Sessions) Attach(ctx context.Context, key desired.SessionKey) (*Attachment, error) {
	keyFile, err := keys.Path(s.Config.Auth.KeyDir, key.User)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(keyFile); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("user %s is not registered (no key file in %s); add them with 'podspawn add-user %s'", key.User, s.Config.Auth.KeyDir, key.User)
		}
		return nil, fmt.Errorf("checking the key file of %s: %w", key.User, err)
	}
	self := s.Self
	if self == nil {
		self = proc.Self
	}
	me, err := self()
	if err != nil {
		return nil, err
	}
	l, err := s.acquire(ctx, key.User)
	if err != nil {
		return nil, err
	}
	defer l.Unlock()

	existing, err := s.Store.LoadKey(ctx, key)
	if err != nil {
		return nil, err
	}
	var ctr ContainerState
	if existing != nil && (existing.Status == desired.StatusRunning || existing.Status == desired.StatusGrace) {
		if ctr, _, err = s.inspect(ctx, existing); err != nil {
			return nil, err
		}
	}
	now := s.Clock.Now()
	if decide(existing, ctr, now).replace {
		if err := s.checkProject(ctx, key); err != nil {
			return nil, err
		}
	}
	var why string
	res, err := s.Store.Attach(ctx, sqlstore.AttachRequest{
		Key: key, MaxPerUser: s.Config.Resources.MaxPerUser, PID: me.PID, PIDStart: me.Start, Now: now,
		Decide: func(cur *desired.Session) (*desired.Session, error) {
			// The row may have changed since it was inspected only through
			// an admin edit; anything but the same generation is re-judged
			// without the container check.
			c := ctr
			if existing == nil || cur == nil || cur.ID != existing.ID {
				c = ContainerState{}
			}
			v := decide(cur, c, now)
			if !v.replace {
				return nil, nil
			}
			why = v.reason
			return newGeneration(s.Config, key, now)
		},
	})
	if err != nil {
		return nil, err
	}
	log := s.Log.WithValues("user", key.User, "project", key.Project, "session", res.Session.ID, "lease", res.LeaseID)
	switch {
	case res.Replaced != nil:
		log.Info("Replacing session generation", "reason", why, "replaced", res.Replaced.ID)
	case res.Created:
		log.Info("Creating session", "reason", why)
	default:
		log.V(1).Info("Attaching to session")
	}
	att := &Attachment{Key: key, Session: res.Session, LeaseID: res.LeaseID}

	rep := s.Reconciler.ReconcileKey(ctx, key, true)
	if rep.Err == nil {
		var st ContainerState
		st, att.ContainerID, rep.Err = s.inspect(ctx, res.Session)
		if rep.Err == nil && !st.Running {
			state := "missing"
			if st.Exists {
				state = st.State
			}
			rep.Err = fmt.Errorf("session container %s is %s after setting it up; see 'podspawn cleanup --dry-run' and the Docker logs of %s",
				res.Session.Spec.ContainerName, state, res.Session.Spec.ContainerName)
		}
	}
	if rep.Err != nil {
		bg := context.WithoutCancel(ctx)
		// A generation that never came up is torn down now rather than
		// retried with nobody waiting for it; the next connect starts afresh.
		if res.Session.Status == desired.StatusCreating {
			if _, err := s.Store.MarkTerminating(bg, res.Session.ID, string(reconcile.ReasonCreationAbandoned), s.Clock.Now()); err != nil {
				log.Error(err, "Marking the failed session for removal failed")
			}
		}
		// Give the lease back under the lock we still hold, so a failed
		// connect never counts as a connection.
		s.release(bg, log, key, res.LeaseID)
		return nil, fmt.Errorf("starting the session of %s: %w", key, rep.Err)
	}
	att.Notice = s.runOnCreate(ctx, att)
	return att, nil
}

// inspect reports on the container of sess's generation. A container with
// the name but another generation's label counts as missing.
func (s *Sessions) inspect(ctx context.Context, sess *desired.Session) (ContainerState, string, error) {
	info, err := s.Docker.ContainerInspect(ctx, sess.Spec.ContainerName)
	if errdefs.IsNotFound(err) {
		return ContainerState{}, "", nil
	}
	if err != nil {
		// Never take an unanswered inspect for "gone": that would replace a
		// live session under its users.
		return ContainerState{}, "", fmt.Errorf("inspecting container %s: %w", sess.Spec.ContainerName, err)
	}
	if info.Config == nil || info.Config.Labels[observed.LabelSession] != sess.ID {
		return ContainerState{}, "", nil
	}
	st := ContainerState{Exists: true}
	if info.State != nil {
		st.Running = info.State.Running && !info.State.Paused && !info.State.Restarting
		st.State = info.State.Status
	}
	return st, info.ID, nil
}

// Detach releases the connection's lease and reconciles the key, so the
// row's mode decides what happens next: a grace period, teardown, or
// nothing for a persistent session. It works on a fresh context because it
// runs after the connection's context was cancelled by a hangup.
func (s *Sessions) Detach(att *Attachment) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.lockTimeout()+2*time.Minute)
	defer cancel()
	log := s.Log.WithValues("user", att.Key.User, "project", att.Key.Project, "session", att.Session.ID, "lease", att.LeaseID)
	l, err := s.acquire(ctx, att.Key.User)
	if err != nil {
		// The lease row is released without the lock rather than left
		// behind: deleting it is one atomic statement, and the next
		// reconcile (cleanup, or the next connect) starts the grace period.
		log.Error(err, "Releasing connection without the user lock")
		if _, rerr := s.Store.Detach(ctx, att.LeaseID); rerr != nil {
			return errors.Join(err, rerr)
		}
		return nil
	}
	defer l.Unlock()
	return s.release(ctx, log, att.Key, att.LeaseID)
}

// release drops the lease and reconciles; the caller holds the lock.
func (s *Sessions) release(ctx context.Context, log logr.Logger, key desired.SessionKey, leaseID int64) error {
	released, err := s.Store.Detach(ctx, leaseID)
	if err != nil {
		log.Error(err, "Releasing connection failed")
		return err
	}
	log.V(1).Info("Released connection", "released", released)
	if rep := s.Reconciler.ReconcileKey(ctx, key, true); rep.Err != nil {
		log.Error(rep.Err, "Reconcile after disconnect failed")
		return rep.Err
	}
	return nil
}
