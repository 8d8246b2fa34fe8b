package reconcile

import (
	"fmt"

	"github.com/podspawn/podspawn/desired"
)

// KindKillLeaseProcesses kills, inside the session container, the
// processes a dead connection started (those carrying its lease's
// desired.LeaseEnv marker, and their descendants). Target and TargetID
// name the container, LeaseID the lease; the executor runs it as the
// session's user.
const KindKillLeaseProcesses Kind = "kill-lease-processes"

// releaseDead plans, for each dead lease, the kill of what its connection
// left running in the session container and then the release of the
// lease. The kill comes first and a key's chain stops at its first
// failure, so a lease row is deleted only once its processes are gone.
// Without a running container there is nothing to kill: its processes
// died with it. A container protected by podspawn.keep is left alone, as
// for every other action.
func (c *keyCtx) releaseDead(dead []desired.Lease, sessCtr *item) {
	s := c.sess
	kill := sessCtr != nil && sessCtr.Running && sessCtr.class == classRemovable
	for _, l := range dead {
		if kill {
			c.add(Action{Kind: KindKillLeaseProcesses, Target: sessCtr.Name, TargetID: sessCtr.ID, SessionID: s.ID, LeaseID: l.ID, Reason: ReasonLeaseDead,
				Detail: fmt.Sprintf("connection process %d is gone; killing what it left running in the container", l.PID)}, phaseMaintain)
		}
		c.add(Action{Kind: KindReleaseLease, Target: "session " + c.key.String(), SessionID: s.ID, LeaseID: l.ID, Reason: ReasonLeaseDead,
			Detail: fmt.Sprintf("connection process %d is gone", l.PID)}, phaseMaintain)
	}
}
