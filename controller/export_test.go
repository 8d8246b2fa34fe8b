package controller

import (
	"context"
	"time"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/reconcile"
)

// ProcessNextItemForTest lets the external tests drive one worker step.
func (c *Controller) ProcessNextItemForTest(ctx context.Context, q Queue) bool {
	return c.processNextItem(ctx, q)
}

// WakeForTest returns the earliest future deadline of key k in p.
func WakeForTest(p reconcile.Plan, k desired.SessionKey) (time.Time, bool) { return wakeFor(p, k) }
