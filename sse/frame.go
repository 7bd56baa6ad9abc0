package sse

import (
	"encoding/json"
	"fmt"
	"time"

	"pgsse/event"
)

// Frame is one event encoded once, shared (read-only) by every stream that
// sends it.
type Frame struct {
	ID    int64
	Topic string
	Time  time.Time // the event's, for the lag metric
	Wire  []byte
}

// Encode encodes ev as the frame every stream sends.
func Encode(ev *event.Event) (*Frame, error) {
	typ, err := newEventType(ev.Kind)
	if err != nil {
		return nil, fmt.Errorf("encode event %d: kind %q: %w", ev.ID, ev.Kind, err)
	}
	data, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("encode event %d: %w", ev.ID, err)
	}
	m := Message{ID: IntID(ev.ID), Type: typ, Data: data}
	return &Frame{ID: ev.ID, Topic: ev.Topic, Time: ev.Time, Wire: m.AppendTo(make([]byte, 0, len(data)+64))}, nil
}
