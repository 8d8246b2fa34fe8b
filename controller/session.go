package controller

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"time"

	"github.com/go-logr/logr"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/config"
	"github.com/podspawn/podspawn/desired/generation"
	"github.com/podspawn/podspawn/desired/keys"
	"github.com/podspawn/podspawn/desired/lock"
	"github.com/podspawn/podspawn/desired/sqlstore"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/observed/proc"
	"github.com/podspawn/podspawn/reconcile"
)

// ContainerInspector reads one container by name or id (observed/dockerobs
// for Docker). ok is false when no such container exists; an error never
// means "gone". Running has observed's one meaning.
type ContainerInspector interface {
	InspectContainer(ctx context.Context, ref string) (o observed.Object, ok bool, err error)
}

// ImageChecker says whether an image is present where sessions run.
type ImageChecker interface {
	ImageExists(ctx context.Context, ref string) (bool, error)
}

// Sessions attaches SSH connections to sessions and detaches them: under
// the user's lock it decides between attaching and a new generation,
// records the row and the lease, reconciles the key and rolls back what
// failed. The connection itself (streams, exit codes) is spawn's.
type Sessions struct {
	C          *Controller
	Config     config.Config
	Containers ContainerInspector
	Images     ImageChecker
	Log        logr.Logger
	// Self identifies the process holding the lease (nil: this process).
	Self func() (observed.ProcessRef, error)
	// OnCreate runs once a new generation is up, still under the lock
	// (a project's on_create); what it returns is shown on the connection.
	OnCreate func(ctx context.Context, att *Attachment) string
	// Handoff, when set, starts the reconcile of a key whose session ends
	// at its last disconnect in a process that outlives this one, under the
	// same lock: the client gets its exit code without waiting for the
	// teardown. An error means nothing was started.
	Handoff func(key desired.SessionKey) error
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
	if s.C.LockTimeout <= 0 {
		return 30 * time.Second
	}
	return s.C.LockTimeout
}

// acquire takes user's lock, saying what was busy when it times out.
func (s *Sessions) acquire(ctx context.Context, user string) (*lock.Lock, error) {
	return lock.AcquireUser(ctx, s.C.LockDir, user, s.lockTimeout())
}

// Attach gives the connection a lease on key's session, creating or
// replacing the container generation when needed, and returns once the
// session container runs. The per-user lock is released before it returns,
// so the user's command never runs under it.
func (s *Sessions) Attach(ctx context.Context, key desired.SessionKey) (*Attachment, error) {
	if err := s.checkRegistered(key.User); err != nil {
		return nil, &DeniedError{Reason: DeniedUnknownUser, Err: err}
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
	// remove-user takes this lock too: a user removed while we waited
	// gets no session.
	if err := s.checkRegistered(key.User); err != nil {
		return nil, &DeniedError{Reason: DeniedUserRemoved, Err: err}
	}

	res, why, seen, err := s.record(ctx, key, me)
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
	if err := s.bringUp(ctx, att, seen); err != nil {
		bg := context.WithoutCancel(ctx)
		// A generation that never came up is torn down now rather than
		// retried with nobody waiting for it; the next connect starts afresh.
		if res.Session.Status == desired.StatusCreating {
			if _, err := s.C.Store.MarkTerminating(bg, res.Session.ID, string(reconcile.ReasonCreationAbandoned), s.C.Clock.Now()); err != nil {
				log.Error(err, "Marking the failed session for removal failed")
			}
		}
		// Give the lease back under the lock we still hold, so a failed
		// connect never counts as a connection.
		s.release(bg, log, key, res.LeaseID)
		return nil, fmt.Errorf("starting the session of %s: %w", key, err)
	}
	if s.OnCreate != nil {
		att.Notice = s.OnCreate(ctx, att)
	}
	return att, nil
}

// Reasons of a DeniedError.
const (
	DeniedUnknownUser = "unknown-user"
	DeniedUserRemoved = "user-removed"
)

// DeniedError is a connection refused by policy (as opposed to a failure
// to start its session), for the audit log's auth.denied.
type DeniedError struct {
	Reason string
	Err    error
}

func (e *DeniedError) Error() string { return e.Err.Error() }
func (e *DeniedError) Unwrap() error { return e.Err }

// checkRegistered refuses a user without a key file before anything is
// written for them.
func (s *Sessions) checkRegistered(user string) error {
	keyFile, err := keys.Path(s.Config.Auth.KeyDir, user)
	if err != nil {
		return err
	}
	if _, err := os.Stat(keyFile); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("user %s is not registered (no key file in %s); add them with 'podspawn add-user %s'", user, s.Config.Auth.KeyDir, user)
		}
		return fmt.Errorf("checking the key file of %s: %w", user, err)
	}
	return nil
}

// record writes the lease, and a new generation when DecideAttach says
// so; the caller holds the lock. It returns why a generation was made.
func (s *Sessions) record(ctx context.Context, key desired.SessionKey, me observed.ProcessRef) (*sqlstore.AttachResult, string, []observed.Object, error) {
	existing, err := s.C.Store.LoadKey(ctx, key)
	if err != nil {
		return nil, "", nil, err
	}
	// The key's objects, observed once under the lock: they decide
	// between attaching and replacing, and the reconcile that follows
	// plans from them rather than listing again (one round trip less on
	// every login). An unanswered list is an error, never "gone": that
	// would replace a live session under its users.
	seen, err := s.C.observeKey(ctx, key)
	if err != nil {
		return nil, "", nil, err
	}
	ctrExists := false
	if existing != nil && (existing.Status == desired.StatusRunning || existing.Status == desired.StatusGrace) {
		_, ctrExists = sessionContainer(seen, existing)
	}
	// A login is judged by the hold after a clock step like a pass is.
	if err := s.C.refreshClockHold(ctx); err != nil {
		return nil, "", nil, err
	}
	now, hold := s.C.Clock.Now(), s.C.options().HoldLiveDeadlinesUntil
	if reconcile.DecideAttach(existing, ctrExists, now, hold).Replace {
		if err := s.checkProject(ctx, key); err != nil {
			return nil, "", nil, err
		}
	}
	var why string
	res, err := s.C.Store.Attach(ctx, sqlstore.AttachRequest{
		Key: key, MaxPerUser: s.Config.Resources.MaxPerUser, PID: me.PID, PIDStart: me.Start, Now: now,
		Decide: func(cur *desired.Session) (*desired.Session, error) {
			// The row may have changed since it was inspected only through
			// an admin edit; anything but the same generation is re-judged
			// without the container check.
			exists := ctrExists && existing != nil && cur != nil && cur.ID == existing.ID
			v := reconcile.DecideAttach(cur, exists, now, hold)
			if !v.Replace {
				return nil, nil
			}
			why = v.Reason
			return generation.New(s.Config, key, now)
		},
	})
	if err != nil {
		return nil, "", nil, err
	}
	return &res, why, seen, nil
}

// bringUp reconciles the key from what record saw (the caller holds the
// lock) and checks that the session container runs: as seen, when the
// reconcile created and removed nothing and it was running then, else as
// the runtime reports it now.
func (s *Sessions) bringUp(ctx context.Context, att *Attachment, seen []observed.Object) error {
	rep := s.C.reconcileKey(ctx, att.Key, keyRun{seen: &seen})
	if rep.Err != nil {
		return rep.Err
	}
	ctr, ok := sessionContainer(seen, att.Session)
	var err error
	if !ok || !ctr.Running || slices.ContainsFunc(rep.Results, func(r Result) bool { return actions.EffectOf(r.Action.Kind) != actions.EffectChange }) {
		ctr, ok, err = s.container(ctx, att.Session)
	}
	switch {
	case err != nil:
		return err
	case !ok || !ctr.Running:
		state := "missing"
		if ok {
			state = ctr.State
		}
		name := att.Session.Spec.ContainerName
		return fmt.Errorf("session container %s is %s after setting it up; see 'podspawn cleanup --dry-run' and the Docker logs of %s", name, state, name)
	}
	att.ContainerID = ctr.ID
	return nil
}

// sessionContainer finds the session container of sess's generation
// among objs.
func sessionContainer(objs []observed.Object, sess *desired.Session) (observed.Object, bool) {
	for _, o := range objs {
		if o.Kind == observed.KindContainer && o.Name == sess.Spec.ContainerName && o.SessionID() == sess.ID {
			return o, true
		}
	}
	return observed.Object{}, false
}

// container reports on the session container of sess's generation. A
// container with the name but another generation's label counts as missing.
func (s *Sessions) container(ctx context.Context, sess *desired.Session) (observed.Object, bool, error) {
	// Never take an unanswered inspect for "gone": that would replace a
	// live session under its users.
	o, ok, err := s.Containers.InspectContainer(ctx, sess.Spec.ContainerName)
	if err != nil || !ok || o.SessionID() != sess.ID {
		return observed.Object{}, false, err
	}
	return o, true, nil
}

// checkProject is run before a new generation of a project session is
// recorded: it refuses an unregistered project, an unreadable Podfile and
// a missing image with errors that say what to do, so no row is written
// for a session that cannot start. The runtime is asked here, outside the
// database transaction that records the generation.
func (s *Sessions) checkProject(ctx context.Context, key desired.SessionKey) error {
	if key.Project == "" {
		return nil
	}
	p, pf, err := generation.Project(s.Config, key.Project)
	if err != nil {
		return err
	}
	if tag := pf.Tag(key.Project); tag != p.ImageTag {
		// The clone was edited by hand: the image only carries the base,
		// so the session still starts, from the image the registry names.
		s.Log.Info("Podfile differs from the project's built image; run update-project to rebuild", "project", key.Project, "image", p.ImageTag, "podfileImage", tag)
	}
	ok, err := s.Images.ImageExists(ctx, p.ImageTag)
	if err != nil {
		return fmt.Errorf("checking image %s of project %s: %w", p.ImageTag, key.Project, err)
	}
	if !ok {
		// Shown to the user as is: it names what they asked for and what fixes it.
		return desired.ForUser(fmt.Errorf("image %s not built; run: podspawn update-project %s", p.ImageTag, key.Project))
	}
	return nil
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
		if _, rerr := s.C.Store.Detach(ctx, att.LeaseID); rerr != nil {
			return errors.Join(err, rerr)
		}
		return nil
	}
	defer l.Unlock()
	if s.Handoff != nil && reconcile.EndsAtDisconnect(att.Session) {
		return s.handOff(ctx, log, att)
	}
	return s.release(ctx, log, att.Key, att.LeaseID)
}

// handOff releases the lease and leaves the teardown that may follow to
// Handoff's process, so the connection ends without waiting for it. If
// that process never runs or dies midway, the next pass (cleanup, the
// daemon or the next connect) plans the same teardown.
func (s *Sessions) handOff(ctx context.Context, log logr.Logger, att *Attachment) error {
	released, err := s.C.Store.Detach(ctx, att.LeaseID)
	if err != nil {
		log.Error(err, "Releasing connection failed")
		return err
	}
	log.V(1).Info("Released connection; the teardown is handed off", "released", released)
	if err := s.Handoff(att.Key); err != nil {
		log.Error(err, "Handing off the teardown failed; reconciling here")
		if rep := s.C.ReconcileKeyLocked(ctx, att.Key); rep.Err != nil {
			return rep.Err
		}
	}
	return nil
}

// release drops the lease and reconciles; the caller holds the lock.
func (s *Sessions) release(ctx context.Context, log logr.Logger, key desired.SessionKey, leaseID int64) error {
	released, err := s.C.Store.Detach(ctx, leaseID)
	if err != nil {
		log.Error(err, "Releasing connection failed")
		return err
	}
	log.V(1).Info("Released connection", "released", released)
	if rep := s.C.ReconcileKeyLocked(ctx, key); rep.Err != nil {
		log.Error(rep.Err, "Reconcile after disconnect failed")
		return rep.Err
	}
	return nil
}
