package stream

import (
	"net"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
)

// sink is where a stream's bytes go: net/http's response (HTTP/2, or where the
// connection cannot be taken over) or the connection itself once taken over.
type sink interface {
	// write writes b and pushes it to the client.
	write(b []byte) error
	// setWriteDeadline bounds the next writes; the zero time lifts the bound.
	setWriteDeadline(t time.Time) error
}

// responseSink writes through net/http: every write is flushed.
type responseSink struct {
	w  *echo.Response
	rc *http.ResponseController
}

func (s responseSink) write(b []byte) error {
	if _, err := s.w.Write(b); err != nil {
		return err
	}
	return s.rc.Flush()
}

// An error means the writer takes no deadlines (not a net.Conn); the writes then
// go ahead without one.
func (s responseSink) setWriteDeadline(t time.Time) error { return s.rc.SetWriteDeadline(t) }

// connSink writes to a connection taken over from net/http: no buffer, no
// chunked framing, the body ends when the connection closes.
type connSink struct{ conn net.Conn }

func (s connSink) write(b []byte) error {
	_, err := s.conn.Write(b)
	return err
}

func (s connSink) setWriteDeadline(t time.Time) error { return s.conn.SetWriteDeadline(t) }
