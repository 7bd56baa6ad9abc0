package main

import (
	"net"
	"syscall"

	"golang.org/x/net/netutil"
)

// Every connection is a file descriptor, and past the process's limit accept
// fails and nothing answers, health checks included. So the listeners take
// connections only while descriptors remain: the main one at most what the limit
// leaves after a reserve (the database pools, the LISTEN connection, files) and
// the admin listener's share; the admin listener its own few, so /healthz,
// /readyz and /metrics on PGSSE_ADMIN_ADDR answer under any flood of the main
// port. Connections past a limit wait in the kernel's accept queue.
const (
	adminConnections = 64
	minReservedFDs   = 256
)

// connectionLimits returns the most connections the main and admin listeners
// may hold at once. Go raises the soft descriptor limit to the hard one at
// start, so the soft limit read here is the real one.
func connectionLimits() (main, admin int) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur > 1<<30 {
		return 1 << 20, adminConnections
	}
	fds := int(lim.Cur)
	return max(fds-max(minReservedFDs, fds/10)-adminConnections, 16), adminConnections
}

// limitListener bounds ln to n connections at a time.
func limitListener(ln net.Listener, n int) net.Listener { return netutil.LimitListener(ln, n) }
