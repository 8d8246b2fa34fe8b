// Command etcd is etcd's own server, built from its Go module for
// hack/bench-k8s-scale.sh: Debian's etcd (3.4.23) is too old for the API
// server to serve consistent lists from its watch cache (it needs
// RequestWatchProgress, etcd 3.4.31 or 3.5.13 and later), so every list
// would be read from etcd, which no current cluster does. Its own module,
// so the project's go.mod stays free of etcd's server.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
