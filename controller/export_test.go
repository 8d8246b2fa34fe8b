package controller

import "context"

// ProcessNextItemForTest lets the external tests drive one worker step.
func (c *Controller) ProcessNextItemForTest(ctx context.Context, q Queue) bool {
	return c.processNextItem(ctx, q)
}
