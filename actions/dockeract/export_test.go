package dockeract

// LeaseKillScript is exported to the tests, which run it with real shells.
const LeaseKillScript = leaseKillScript
