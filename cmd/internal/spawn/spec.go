package spawn

import (
	"fmt"
	"time"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/config"
	"github.com/podspawn/podspawn/desired/sqlstore"
)

// resolveSpec is the hook that decides what a new generation of key runs
// and its teardown mode. Today every session gets the server defaults; a
// registered project will resolve its own image, services and mode here.
func resolveSpec(cfg config.Config, key desired.SessionKey) (desired.Spec, desired.Mode, error) {
	hostname := key.Project
	if hostname == "" {
		hostname = key.User
	}
	spec := desired.Spec{
		Image:         cfg.Defaults.Image,
		Shell:         cfg.Defaults.Shell,
		CPUs:          cfg.Defaults.CPUs,
		MemoryBytes:   cfg.Defaults.MemoryBytes,
		Hostname:      hostname,
		ContainerName: desired.ContainerName(key),
		NetworkName:   desired.NetworkName(key),
		Security:      cfg.SecuritySpec(),
	}
	if key.Project != "" {
		mode, err := resolveProject(cfg, key, &spec)
		return spec, mode, err
	}
	return spec, cfg.Session.Mode, nil
}

// newGeneration builds the row of a new container generation. Mode,
// grace period and max lifetime are stored on the row so that teardown
// follows the row, never whichever process disconnects last (G9).
func newGeneration(cfg config.Config, key desired.SessionKey, now time.Time) (*desired.Session, error) {
	spec, mode, err := resolveSpec(cfg, key)
	if err != nil {
		return nil, fmt.Errorf("resolving the session of %s: %w", key, err)
	}
	return &desired.Session{
		Key:           key,
		ID:            sqlstore.NewSessionID(),
		Mode:          mode,
		Status:        desired.StatusCreating,
		CreatedAt:     now,
		MaxLifetimeAt: now.Add(cfg.Session.MaxLifetime.Duration),
		GracePeriod:   cfg.Session.GracePeriod.Duration,
		Spec:          spec,
	}, nil
}

// ContainerState is what Docker says about a generation's container.
type ContainerState struct {
	// Exists: a container with the generation's name and session label.
	Exists  bool
	Running bool
	State   string
}

// verdict is what a connection does with the session it finds.
type verdict struct {
	// replace: a new generation takes the key's place (or fills it).
	replace bool
	reason  string
}

// decide chooses between attaching to the existing generation and
// starting a new one. It is pure so every branch is tested at exact
// instants. A creating generation is attached to: the reconcile that
// follows finishes (or adopts) whatever its creator left.
func decide(existing *desired.Session, ctr ContainerState, now time.Time) verdict {
	if existing == nil {
		return verdict{replace: true, reason: "no session yet"}
	}
	persistent := existing.Mode == desired.ModePersistent
	switch {
	case existing.Status == desired.StatusTerminating:
		return verdict{replace: true, reason: "the session is being removed"}
	case !persistent && !now.Before(existing.MaxLifetimeAt):
		// G10: a session past its lifetime is replaced, never re-attached.
		return verdict{replace: true, reason: "the session reached its max lifetime"}
	case !persistent && existing.Status == desired.StatusGrace && !existing.GraceExpiry.IsZero() && !now.Before(existing.GraceExpiry):
		return verdict{replace: true, reason: "the session's grace period ended"}
	case existing.Status == desired.StatusCreating:
		return verdict{}
	case !ctr.Exists:
		// A stopped container, unlike a missing one, is attached to: the
		// reconcile that follows starts it again, keeping the user's files.
		return verdict{replace: true, reason: "the session container is missing"}
	}
	return verdict{}
}
