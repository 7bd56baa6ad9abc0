package main

import (
	"errors"
	"net"
	"sync"
	"syscall"
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
	return max(fds-max(minReservedFDs, fds/50)-adminConnections, 16), adminConnections
}

// limitListener bounds ln to n connections at a time: Accept waits while n are
// open. (x/net/netutil's LimitListener does the same, but its connections hide
// the TCP connection's descriptor, which streams taken over from net/http write
// to without blocking.)
func limitListener(ln net.Listener, n int) net.Listener {
	return &limitedListener{Listener: ln, slots: make(chan struct{}, n), closed: make(chan struct{})}
}

type limitedListener struct {
	net.Listener
	slots     chan struct{} // one per open connection
	closed    chan struct{}
	closeOnce sync.Once
}

func (l *limitedListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.closed:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitedConn{Conn: c, release: func() { <-l.slots }}, nil
}

func (l *limitedListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

type limitedConn struct {
	net.Conn
	release     func()
	releaseOnce sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.releaseOnce.Do(c.release)
	return err
}

// SyscallConn exposes the descriptor of the connection underneath.
func (c *limitedConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}
