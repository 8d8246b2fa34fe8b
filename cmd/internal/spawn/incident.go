package spawn

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/go-logr/logr"

	"github.com/podspawn/podspawn/desired"
)

// Incident turns a failure the SSH user cannot act on (database locked,
// runtime down, a broken config) into a short message with a random
// incident id, and logs the details under that id for the administrator:
// the user's terminal is no place for database paths or raw runtime
// errors. Errors marked with desired.ForUser are shown as they are.
func Incident(log logr.Logger, err error, what string, keysAndValues ...any) error {
	if msg, ok := desired.UserMessage(err); ok {
		return errors.New(msg)
	}
	id := NewIncidentID()
	log.Error(err, "Connection failed", append([]any{"incident", id}, keysAndValues...)...)
	return fmt.Errorf("podspawn could not %s (incident %s); please tell your administrator, who will find the details under this id in podspawn's log", what, id)
}

// NewIncidentID returns 8 random hex digits.
func NewIncidentID() string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		// crypto/rand does not fail on Linux; an id is still better than none.
		return "00000000"
	}
	return hex.EncodeToString(b[:])
}
