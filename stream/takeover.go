package stream

import (
	"bytes"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/labstack/echo/v4"
)

// takenOver is an admitted HTTP/1.x stream's connection, taken from net/http:
// the stream writes the response itself, without net/http's buffers, chunked
// framing or goroutines, and the body ends when the connection closes. What
// remains per stream is the connection, the stream's state and its queue.
type takenOver struct {
	conn    net.Conn
	raw     syscall.RawConn // nil: no descriptor, so the stream is never parked
	watchID uint64          // its close watch registration; 0: none
}

// takeOver takes the stream's connection from net/http and returns it with the
// response head to write first, or nil when the stream stays on net/http's
// path: HTTP/2 (TLS straight to pgsse), a connection that cannot be taken, or
// a platform without the writers.
func (h *Handler) takeOver(c echo.Context) (*takenOver, []byte) {
	r := c.Request()
	if _, ok := c.Response().Writer.(http.Hijacker); !ok || r.ProtoMajor != 1 || r.TLS != nil || h.writers() == nil {
		return nil, nil
	}
	conn, _, err := http.NewResponseController(c.Response()).Hijack()
	if err != nil {
		return nil, nil
	}
	t := &takenOver{conn: conn}
	if sc, ok := conn.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			t.raw = raw
		}
	}
	return t, responseHead(r, c.Response().Header())
}

// responseHead is the status line and headers of a stream taken over: those
// set so far (the stream's, CORS), a Date, and Connection: close, since the
// body is delimited by the connection's end. An HTTP/1.0 request (an old
// proxy) gets an HTTP/1.0 answer, as net/http would give.
func responseHead(r *http.Request, hdr http.Header) []byte {
	var b bytes.Buffer
	if r.ProtoAtLeast(1, 1) {
		b.WriteString("HTTP/1.1 200 OK\r\n")
	} else {
		b.WriteString("HTTP/1.0 200 OK\r\n")
	}
	hdr.Set("Connection", "close")
	hdr.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	_ = hdr.Write(&b) // a bytes.Buffer does not fail
	b.WriteString("\r\n")
	return b.Bytes()
}
