// Package event is pgsse's event model: the envelope every event shares and one
// typed struct per kind. It does no I/O; db reads raw rows, listener and sse decode
// them here, so a kind is defined in exactly one place.
//
// A kind with no struct here is passed through as published. Typing a kind takes
// a struct registered in kinds, its rules in kindRules, and the same rules in
// pgsse.check_payload (a migration).
package event

import (
	"encoding/json"
	"fmt"
	"time"
)

// Kinds fixed by the contract.
const (
	KindVideoStatus   = "video.status"
	KindVideoProgress = "video.progress"
)

// Payload is the typed data of one kind.
type Payload interface {
	// Kind returns the kind this payload belongs to.
	Kind() string
}

// kinds maps each known kind to a constructor of its payload; its rules are in
// kindRules. Kinds not here are passed through as Opaque.
var kinds = map[string]func() Payload{
	KindVideoStatus:   func() Payload { return new(VideoStatus) },
	KindVideoProgress: func() Payload { return new(VideoProgress) },
}

// VideoStatus is written by the videos trigger on INSERT and whenever
// processing_status changes. PreviousStatus is nil on INSERT and in snapshots.
type VideoStatus struct {
	VideoID        string  `json:"video_id"`
	Status         string  `json:"status"`
	PreviousStatus *string `json:"previous_status"`
}

// Kind implements Payload.
func (*VideoStatus) Kind() string { return KindVideoStatus }

// VideoProgress is published by processing workers through pgsse.publish.
type VideoProgress struct {
	VideoID string  `json:"video_id"`
	Percent float64 `json:"percent"`
	Stage   string  `json:"stage,omitempty"`
}

// Kind implements Payload.
func (*VideoProgress) Kind() string { return KindVideoProgress }

// Opaque is the data of a kind pgsse has no struct for, sent as it was
// published (pgsse.publish made sure it is a JSON object).
type Opaque struct {
	kind string
	data json.RawMessage
}

// Kind implements Payload.
func (o *Opaque) Kind() string { return o.kind }

// MarshalJSON returns the data as published.
func (o *Opaque) MarshalJSON() ([]byte, error) { return o.data, nil }

// Raw is one row of pgsse.events as stored, before its data is decoded.
type Raw struct {
	ID    int64
	Kind  string
	Topic string
	Time  time.Time
	Data  []byte
}

// Event is one decoded event.
type Event struct {
	ID    int64
	Kind  string
	Topic string
	Time  time.Time
	Data  Payload
	// Snapshot marks an event built from current state rather than read from the log;
	// its ID is the log position the state was read at.
	Snapshot bool
}

// Decode turns a raw row into an Event with its typed payload. A known kind's
// data must follow its rules (kindRules); any other kind's must be a JSON object.
func Decode(r Raw) (Event, error) {
	newPayload, ok := kinds[r.Kind]
	if !ok {
		if jsonType(r.Data) != "object" || !json.Valid(r.Data) {
			return Event{}, fmt.Errorf("decode event %d (%s): data is not a JSON object", r.ID, r.Kind)
		}
		return Event{ID: r.ID, Kind: r.Kind, Topic: r.Topic, Time: r.Time, Data: &Opaque{kind: r.Kind, data: r.Data}}, nil
	}
	if err := checkRules(r.Kind, kindRules[r.Kind], r.Data); err != nil {
		return Event{}, fmt.Errorf("decode event %d: %w", r.ID, err)
	}
	p := newPayload()
	if err := json.Unmarshal(r.Data, p); err != nil {
		return Event{}, fmt.Errorf("decode event %d (%s): %w", r.ID, r.Kind, err)
	}
	return Event{ID: r.ID, Kind: r.Kind, Topic: r.Topic, Time: r.Time, Data: p}, nil
}

// DecodeAll decodes rows in order. A row that does not decode is handed to skip
// and left out: one bad row must not stop the events after it.
func DecodeAll(raws []Raw, skip func(Raw, error)) []Event {
	events := make([]Event, 0, len(raws))
	for _, r := range raws {
		ev, err := Decode(r)
		if err != nil {
			skip(r, err)
			continue
		}
		events = append(events, ev)
	}
	return events
}

// TimeFormat is RFC 3339 in UTC with microseconds, the precision Postgres stores.
const TimeFormat = "2006-01-02T15:04:05.000000Z07:00"

type envelope struct {
	ID       int64   `json:"id"`
	Kind     string  `json:"kind"`
	Topic    string  `json:"topic"`
	Time     string  `json:"time"`
	Data     Payload `json:"data"`
	Snapshot bool    `json:"snapshot,omitempty"`
}

// MarshalJSON encodes the envelope clients receive as an event's data.
func (e Event) MarshalJSON() ([]byte, error) {
	return json.Marshal(envelope{
		ID:       e.ID,
		Kind:     e.Kind,
		Topic:    e.Topic,
		Time:     e.Time.UTC().Format(TimeFormat),
		Data:     e.Data,
		Snapshot: e.Snapshot,
	})
}
