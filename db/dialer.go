package db

import (
	"context"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/lib/pq"
	"golang.org/x/sys/unix"
)

// DefaultTimeout is how long pgsse waits on a database connection that answers
// nothing before it gives the connection up (see Timeout).
const DefaultTimeout = 20 * time.Second

// Dialer opens connections to PostgreSQL on which a dead or stalled peer is
// noticed. lib/pq ignores contexts while it reads, and its cancel request
// blocks on a stalled server too, so the deadlines live below it:
//
//   - TCP keepalives and TCP_USER_TIMEOUT: the kernel gives up a connection
//     whose peer stopped acknowledging (a dead host, a dropped route).
//   - With an I/O timeout, every read and write gets a deadline that long. A
//     peer that acknowledges but answers nothing (a stalled server, a
//     black-holing proxy) fails the call instead of hanging it. Connections
//     that wait on the server for longer, quietly (LISTEN), need traffic more
//     often than that: the listener pings.
type Dialer struct {
	net       net.Dialer
	ioTimeout time.Duration
}

// NewDialer returns a dialer whose connections give up after timeout without
// progress (DefaultTimeout if zero); with ioDeadlines, reads and writes time
// out after it too.
func NewDialer(timeout time.Duration, ioDeadlines bool) *Dialer {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	d := &Dialer{net: net.Dialer{
		Timeout: timeout,
		KeepAliveConfig: net.KeepAliveConfig{
			Enable: true, Idle: timeout / 4, Interval: timeout / 8, Count: 4,
		},
		Control: func(network, _ string, c syscall.RawConn) error {
			if !strings.HasPrefix(network, "tcp") {
				return nil // a Unix socket: nothing in between to stall
			}
			var sockErr error
			err := c.Control(func(fd uintptr) {
				sockErr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(timeout.Milliseconds()))
			})
			if err != nil {
				return err
			}
			return sockErr
		},
	}}
	if ioDeadlines {
		d.ioTimeout = timeout
	}
	return d
}

var _ pq.DialerContext = (*Dialer)(nil)

// Dial implements pq.Dialer.
func (d *Dialer) Dial(network, address string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, address)
}

// DialTimeout implements pq.Dialer.
func (d *Dialer) DialTimeout(network, address string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return d.DialContext(ctx, network, address)
}

// DialContext implements pq.DialerContext.
func (d *Dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	c, err := d.net.DialContext(ctx, network, address)
	if err != nil || d.ioTimeout == 0 {
		return c, err
	}
	return &deadlineConn{Conn: c, timeout: d.ioTimeout}, nil
}

// deadlineConn sets a deadline before each read and write. lib/pq's own
// SetDeadline (connect_timeout) is overridden by the next call: the I/O
// timeout bounds each step of the handshake as well.
type deadlineConn struct {
	net.Conn
	timeout time.Duration
}

func (c *deadlineConn) Read(p []byte) (int, error) {
	if err := c.Conn.SetReadDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

func (c *deadlineConn) Write(p []byte) (int, error) {
	if err := c.Conn.SetWriteDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}
