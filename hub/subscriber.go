package hub

import (
	"sync"

	"pgsse/event"
	"pgsse/internal/ring"
	"pgsse/sse"
)

// EndReason says why a subscriber (and so, often, its stream) ended.
type EndReason string

// Why the hub ends a subscriber.
const (
	EndOverflow EndReason = "queue_overflow" // the queue overflowed: caught up in place, or (no progress) the client resumes from its last id
	EndDraining EndReason = "draining"       // the process is shutting down; reconnect elsewhere
	EndShutdown EndReason = "shutdown"
	EndLogReset EndReason = "log_reset" // the log was replaced; the stream starts over on the new one
)

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
	frames ring.Ring[*sse.Frame]
	ready  chan struct{} // one slot: something is waiting to be taken
}

func newQueue(max int) queue {
	return queue{frames: ring.New[*sse.Frame](max), ready: make(chan struct{}, 1)}
}

// push adds f, or reports false when the queue is full; first says the
// ready signal was not pending (the reader has taken everything before f).
func (q *queue) push(f *sse.Frame) (ok, first bool) {
	q.mu.Lock()
	ok = q.frames.Push(f)
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

// Ready has a value when frames are waiting to be taken (one for many).
func (s *Subscriber) Ready() <-chan struct{} { return s.queue.ready }

// Take moves every queued frame, in order, to the end of dst.
func (s *Subscriber) Take(dst []*sse.Frame) []*sse.Frame { return s.queue.take(dst) }

// take moves every queued frame, in order, to the end of dst.
func (q *queue) take(dst []*sse.Frame) []*sse.Frame {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.frames.Drain(dst, 64)
}

func (s *Subscriber) matches(topic string) bool {
	for _, t := range s.topics {
		if t.Matches(topic) {
			return true
		}
	}
	return false
}
