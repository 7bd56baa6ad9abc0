package sse

import (
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"pgsse/event"
)

// EndReason says why a stream ended; it is logged with the stream's last line.
type EndReason string

// End reasons.
const (
	EndClientGone  EndReason = "client_gone"
	EndOverflow    EndReason = "queue_overflow" // the queue overflowed: caught up in place, or (no progress) the client resumes from its last id
	EndWriteFailed EndReason = "write_failed"   // write error or write deadline passed
	EndDraining    EndReason = "draining"       // the process is shutting down; reconnect elsewhere
	EndShutdown    EndReason = "shutdown"
	EndAuthExpired EndReason = "auth_expired"
	EndLogReset    EndReason = "log_reset" // the log was replaced; the stream starts over on the new one
)

// frame is one event encoded once, shared by every subscriber that receives it.
type frame struct {
	id    int64
	topic string
	time  time.Time // the event's, for the lag metric
	wire  []byte
}

// Subscriber is one stream's registration in the hub: its topics and its bounded
// queue of live frames. The hub fills the queue and never waits on it; when it is
// full the hub ends the subscriber instead.
type Subscriber struct {
	topics []event.Topic
	queue  queue
	done   chan struct{} // closed by the hub when it ends this subscriber
	reason EndReason     // set before done is closed
	wake   func()        // see Hub.Subscribe; may be nil

	// Cursor is the hub's position when the subscriber registered: every event
	// above it reaches the queue; events at or below it are the caller's to replay.
	Cursor int64

	queued int64 // id of the last frame queued; guarded by the hub's mutex
}

// Done is closed when the hub ends the subscriber; Reason then says why.
func (s *Subscriber) Done() <-chan struct{} { return s.done }

// Reason says why the hub ended the subscriber. Valid once Done is closed.
func (s *Subscriber) Reason() EndReason { return s.reason }

// queue is a subscriber's bounded FIFO of frames (a ring: an idle stream
// holds no buffer, and a burst's is let go once drained). The hub pushes, the
// stream takes everything at once.
type queue struct {
	mu     sync.Mutex
	frames ring[*frame]
	ready  chan struct{} // one slot: something is waiting to be taken
}

func newQueue(max int) queue {
	return queue{frames: newRing[*frame](max), ready: make(chan struct{}, 1)}
}

// push adds f, or reports false when the queue is full; first says the
// ready signal was not pending (the reader has taken everything before f).
func (q *queue) push(f *frame) (ok, first bool) {
	q.mu.Lock()
	ok = q.frames.push(f)
	q.mu.Unlock()
	if ok {
		select {
		case q.ready <- struct{}{}:
			first = true
		default:
		}
	}
	return ok, first
}

// take moves every queued frame, in order, to the end of dst.
func (q *queue) take(dst []*frame) []*frame {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.frames.drain(dst, 64)
}

func (s *Subscriber) matches(topic string) bool {
	for _, t := range s.topics {
		if t.Matches(topic) {
			return true
		}
	}
	return false
}

// encodeEvent encodes ev as the frame every subscriber receives.
func encodeEvent(ev *event.Event) (*frame, error) {
	typ, err := NewEventType(ev.Kind)
	if err != nil {
		return nil, fmt.Errorf("encode event %d: kind %q: %w", ev.ID, ev.Kind, err)
	}
	data, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("encode event %d: %w", ev.ID, err)
	}
	m := Message{ID: IntID(ev.ID), Type: typ, Data: data}
	return &frame{id: ev.ID, topic: ev.Topic, time: ev.Time, wire: m.AppendTo(make([]byte, 0, len(data)+64))}, nil
}
