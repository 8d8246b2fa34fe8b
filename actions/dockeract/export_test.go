package dockeract

import "github.com/podspawn/podspawn/actions"

// LeaseKillScript is exported to the tests, which run it with real shells.
const LeaseKillScript = actions.LeaseKillScript
