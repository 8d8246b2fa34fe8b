package controller

import (
	"context"
	"time"

	"github.com/podspawn/podspawn/observed"
)

// Watcher is what the daemon needs from a runtime's change stream. The
// runtime's implementation (observed/dockerobs for Docker) maps its events
// to session keys; the daemon only enqueues them.
type Watcher interface {
	// Watch streams the session keys of changes since since; the error
	// channel gets one error when the stream fails. Both end with ctx.
	Watch(ctx context.Context, since time.Time) (<-chan observed.Change, <-chan error)
	// Seen hands over the objects of a full list, so events without
	// labels (Docker's network and volume events) can be attributed.
	Seen(objs []observed.Object, instance string)
}

// foreign reports whether labels name another state database's instance.
func foreign(labels map[string]string, instance string) bool {
	id := labels[observed.LabelInstance]
	return id != "" && id != instance
}
