package metrics

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// Health is what /readyz reports: the daemon is ready while the database
// and Docker answered in the last resync, that answer is not older than
// MaxAge, and the Docker event stream is connected. The daemon updates it;
// every method is safe on a nil *Health.
type Health struct {
	// MaxAge bounds how old the last answers may be: the resync interval
	// plus the resync timeout, so a resync that hangs turns the daemon
	// unready.
	MaxAge time.Duration
	Now    func() time.Time

	mu               sync.Mutex
	dbAt, dockerAt   time.Time
	dbErr, dockerErr error
	connected        bool
}

var errNotYet = errors.New("no resync has finished yet")

// NewHealth returns a Health that is not ready until a resync answered.
func NewHealth(maxAge time.Duration, now func() time.Time) *Health {
	return &Health{MaxAge: maxAge, Now: now, dbErr: errNotYet, dockerErr: errNotYet}
}

// Database records whether the database answered (err nil) just now.
func (h *Health) Database(err error) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.dbErr = err
	if err == nil {
		h.dbAt = h.Now()
	}
}

// Docker records whether Docker answered (err nil) just now.
func (h *Health) Docker(err error) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.dockerErr = err
	if err == nil {
		h.dockerAt = h.Now()
	}
}

// Stream records whether the Docker event stream is connected.
func (h *Health) Stream(connected bool) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.connected = connected
}

// Ready returns nil when ready, else why not.
func (h *Health) Ready() error {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.Now()
	check := func(what string, err error, at time.Time) error {
		switch {
		case err != nil:
			return fmt.Errorf("%s: %w", what, err)
		case now.Sub(at) > h.MaxAge:
			return fmt.Errorf("%s: last answered %s ago, longer than %s", what, now.Sub(at).Round(time.Second), h.MaxAge)
		}
		return nil
	}
	if err := check("database", h.dbErr, h.dbAt); err != nil {
		return err
	}
	if err := check("docker", h.dockerErr, h.dockerAt); err != nil {
		return err
	}
	if !h.connected {
		return errors.New("docker: event stream not connected")
	}
	return nil
}
