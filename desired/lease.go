package desired

import "strconv"

// LeaseEnv is the environment variable that ties a connection's processes
// in the session container to its lease: spawn starts the connection's
// process with LeaseEnv=<lease id>, and its children inherit it. When the
// lease is reaped as dead, the processes carrying it are killed. Lease ids
// come from an AUTOINCREMENT column, so a marker is never reused by a later
// connection the way a host pid can be.
const LeaseEnv = "PODSPAWN_LEASE"

// LeaseMarker is the environment entry of lease id ("PODSPAWN_LEASE=17").
func LeaseMarker(id int64) string {
	return LeaseEnv + "=" + strconv.FormatInt(id, 10)
}
