// Package sse is the Server-Sent Events wire format: messages, their fields,
// and the frame an event is encoded into once for every stream that sends it.
package sse

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"time"
)

// errInvalidField is returned for an event name that the wire format cannot
// carry: empty, or containing CR, LF or NUL.
var errInvalidField = errors.New("sse: id and event name must be non-empty and free of CR, LF and NUL")

// EventID is a valid value for an event's id: field. The zero EventID means "no id
// line", which leaves the client's resume position where it was.
type EventID struct{ s string }

// IntID is the id of a log position: the only ids pgsse sends.
func IntID(n int64) EventID { return EventID{strconv.FormatInt(n, 10)} }

// EventType is a valid value for an event's event: field. The zero EventType means
// no event line (the client sees a "message" event).
type EventType struct{ s string }

// newEventType validates s as an event name.
func newEventType(s string) (EventType, error) {
	if !validField(s) {
		return EventType{}, errInvalidField
	}
	return EventType{s}, nil
}

// String returns the event name.
func (t EventType) String() string { return t.s }

// MustEventType is newEventType for names known at compile time.
func MustEventType(s string) EventType {
	t, err := newEventType(s)
	if err != nil {
		panic(err)
	}
	return t
}

func validField(s string) bool {
	return s != "" && !strings.ContainsAny(s, "\r\n\x00")
}

// Message is one Server-Sent Events frame. It knows the wire format and nothing of
// HTTP.
type Message struct {
	ID    EventID
	Type  EventType
	Data  []byte        // nil: no data lines; the frame then only sets id or retry
	Retry time.Duration // zero: no retry line
}

// AppendTo appends the encoded frame to b. Data is split on CR, LF and CRLF into
// data: lines, as the WHATWG parser joins them back with LF.
func (m *Message) AppendTo(b []byte) []byte {
	if m.ID.s != "" {
		b = append(b, "id: "...)
		b = append(b, m.ID.s...)
		b = append(b, '\n')
	}
	if m.Type.s != "" {
		b = append(b, "event: "...)
		b = append(b, m.Type.s...)
		b = append(b, '\n')
	}
	if m.Retry > 0 {
		b = append(b, "retry: "...)
		b = strconv.AppendInt(b, m.Retry.Milliseconds(), 10)
		b = append(b, '\n')
	}
	if m.Data != nil {
		b = appendData(b, m.Data)
	}
	return append(b, '\n')
}

func appendData(b, data []byte) []byte {
	for {
		i := bytes.IndexAny(data, "\r\n")
		b = append(b, "data: "...)
		if i < 0 {
			b = append(b, data...)
			return append(b, '\n')
		}
		b = append(b, data[:i]...)
		b = append(b, '\n')
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
}

// Heartbeat is a comment frame: it keeps proxies from timing the stream out and
// lets the server notice a dead peer; clients ignore it.
var Heartbeat = []byte(": ping\n\n")
