package controller

import (
	"context"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/desired/keys"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/observed/proc"
	"github.com/podspawn/podspawn/reconcile"
)

// PlanKeysWith computes the plan of keys as it would be after edit were
// applied to desired state, without changing anything: the dry run of an
// admin edit (stop, remove-user). It loads the same per-key state as a
// real reconcile, hands edit a private copy, then observes and computes.
// edit may be nil (the plan of the unchanged state).
func (c *Controller) PlanKeysWith(ctx context.Context, ks []desired.SessionKey, edit func(*desired.State)) (reconcile.Plan, error) {
	ks = uniqueKeys(ks)
	d := desired.State{InstanceID: c.Store.InstanceID()}
	for _, k := range ks {
		// LoadKey returns freshly decoded rows, so edit mutates only this copy.
		sess, err := c.Store.LoadKey(ctx, k)
		if err != nil {
			return reconcile.Plan{}, err
		}
		if sess != nil {
			d.PutSession(sess)
		}
	}
	users, err := keys.ListUsers(c.KeyDir)
	if err != nil {
		return reconcile.Plan{}, err
	}
	d.Users = users
	if edit != nil {
		edit(&d)
	}

	var objs []observed.Object
	for _, k := range ks {
		kobjs, err := c.observeKey(ctx, k)
		if err != nil {
			return reconcile.Plan{}, err
		}
		objs = append(objs, kobjs...)
	}
	o := observed.State{Objects: objs, Exited: proc.Exited(leaseRefs(d))}
	return reconcile.Compute(d, o, c.Clock.Now(), c.options()), nil
}

// observeKey lists the objects of one key (for the unattributed key, every
// managed object without a valid user and project label).
func (c *Controller) observeKey(ctx context.Context, k desired.SessionKey) ([]observed.Object, error) {
	if k != desired.Unattributed {
		return c.Observer.ListKey(ctx, k)
	}
	all, err := c.Observer.List(ctx)
	if err != nil {
		return nil, err
	}
	var out []observed.Object
	for _, o := range all {
		if key, _ := o.Key(); key == k {
			out = append(out, o)
		}
	}
	return out, nil
}

func uniqueKeys(ks []desired.SessionKey) []desired.SessionKey {
	seen := make(map[desired.SessionKey]bool, len(ks))
	out := make([]desired.SessionKey, 0, len(ks))
	for _, k := range ks {
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	return out
}
