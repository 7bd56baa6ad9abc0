// Package hub fans events out to subscribers by topic.
//
// The hub is fed events in id order by one publisher (the listener). Each event
// is encoded once; the same bytes go to every subscriber of its topic through
// that subscriber's bounded queue. A subscriber whose queue is full is ended, not
// waited for: its client resumes from its Last-Event-ID and loses nothing, since
// the handler replays what it missed from the hub's recent history or the log.
package hub

import (
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"pgsse/event"
	"pgsse/internal/ring"
	"pgsse/sse"
)

// errHubClosed is returned by Subscribe once the hub is draining or closed.
var errHubClosed = errors.New("sse: hub closed")

// HubConfig tunes a Hub.
type HubConfig struct {
	// QueueLen is each subscriber's queue length, in events.
	QueueLen int
	// HistoryLen and HistoryBytes bound the recent events kept in memory for
	// resuming clients; older resumes read the log.
	HistoryLen   int
	HistoryBytes int
	Logger       zerolog.Logger
	// Evictions counts subscribers whose queue overflowed; nil: not counted.
	Evictions prometheus.Counter
}

// Hub fans events out to subscribers by topic. It is safe for concurrent use.
type Hub struct {
	cfg      HubConfig
	started  chan struct{} // closed by Start
	stopping chan struct{} // closed by Drain and Close
	stopOnce sync.Once

	mu       sync.Mutex
	cursor   int64
	closed   bool
	all      map[*Subscriber]struct{}
	exact    map[string]map[*Subscriber]struct{} // by topic
	prefixed map[string]map[*Subscriber]struct{} // by pattern prefix, "videos/"
	history  history
}

// The defaults of the HubConfig fields left zero.
const (
	DefaultQueueLen     = 1024
	DefaultHistoryLen   = 4096
	DefaultHistoryBytes = 16 << 20
)

// NewHub returns a hub that accepts subscribers once Start gives it a position.
func NewHub(cfg HubConfig) *Hub {
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = DefaultQueueLen
	}
	if cfg.HistoryLen <= 0 {
		cfg.HistoryLen = DefaultHistoryLen
	}
	if cfg.HistoryBytes <= 0 {
		cfg.HistoryBytes = DefaultHistoryBytes
	}
	if cfg.Evictions == nil {
		cfg.Evictions = prometheus.NewCounter(prometheus.CounterOpts{Name: "unregistered"})
	}
	return &Hub{
		cfg:      cfg,
		started:  make(chan struct{}),
		stopping: make(chan struct{}),
		all:      make(map[*Subscriber]struct{}),
		exact:    make(map[string]map[*Subscriber]struct{}),
		prefixed: make(map[string]map[*Subscriber]struct{}),
		history:  newHistory(cfg, 0),
	}
}

// Start sets the log position the publisher continues from and opens the hub to
// subscribers. Later calls are ignored.
func (h *Hub) Start(cursor int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	select {
	case <-h.started:
		return
	default:
	}
	h.cursor = cursor
	h.history.from = cursor
	close(h.started)
}

// Started is closed once the hub accepts subscribers.
func (h *Hub) Started() <-chan struct{} { return h.started }

// Stopping is closed once the hub is draining or closed.
func (h *Hub) Stopping() <-chan struct{} { return h.stopping }

// stop marks the hub closed; h.mu is held.
func (h *Hub) stop() {
	h.closed = true
	h.stopOnce.Do(func() { close(h.stopping) })
}

// Reset moves the hub to a log that replaced the one its events came from: the
// history of the old one is dropped, the next Publish continues from cursor, and
// every subscriber is ended with EndLogReset (its stream starts over).
func (h *Hub) Reset(cursor int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cursor = cursor
	h.history = newHistory(h.cfg, cursor)
	for s := range h.all {
		h.end(s, EndLogReset)
	}
}

// Publish hands the hub events in id order, each with an id above the last.
// It never blocks on a subscriber.
func (h *Hub) Publish(events []event.Event) {
	frames := make([]*sse.Frame, 0, len(events))
	for i := range events {
		f, err := sse.Encode(&events[i])
		if err != nil {
			h.cfg.Logger.Error().Err(err).Int64("event_id", events[i].ID).Msg("encode event; skipped")
			continue
		}
		frames = append(frames, f)
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	for _, f := range frames {
		if f.ID <= h.cursor {
			continue // already delivered; publishers restart from an older cursor after errors
		}
		h.cursor = f.ID
		h.history.push(f)
		h.deliver(h.exact[f.Topic], f)
		for i := strings.IndexByte(f.Topic, '/'); i >= 0; i = nextSlash(f.Topic, i) {
			h.deliver(h.prefixed[f.Topic[:i+1]], f)
		}
	}
}

func nextSlash(s string, i int) int {
	j := strings.IndexByte(s[i+1:], '/')
	if j < 0 {
		return -1
	}
	return i + 1 + j
}

// deliver queues f for each of subs; h.mu is held.
func (h *Hub) deliver(subs map[*Subscriber]struct{}, f *sse.Frame) {
	for s := range subs {
		if f.ID <= s.queued {
			continue // matched by another of its topics already
		}
		ok, first := s.queue.push(f)
		if !ok {
			h.cfg.Evictions.Inc()
			h.end(s, EndOverflow)
			continue
		}
		s.queued = f.ID
		if first && s.wake != nil {
			s.wake()
		}
	}
}

// Subscribe registers a subscriber for topics. Every event published after it
// returns reaches the subscriber's queue; those at or below its Cursor are the
// caller's to replay (see Backlog). wake, if not nil, is called (under the
// hub's lock: it must not wait) when the queue gets a frame while it had no
// unread ready signal, and when the subscriber is ended. Callers must
// Unsubscribe.
func (h *Hub) Subscribe(topics []event.Topic, wake func()) (*Subscriber, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, errHubClosed
	}
	select {
	case <-h.started:
	default:
		return nil, errors.New("sse: hub not started")
	}
	s := &Subscriber{
		topics: topics,
		queue:  newQueue(h.cfg.QueueLen),
		done:   make(chan struct{}),
		wake:   wake,
		Cursor: h.cursor,
		queued: h.cursor,
	}
	h.all[s] = struct{}{}
	for _, t := range topics {
		index, key := h.indexOf(t)
		if index[key] == nil {
			index[key] = make(map[*Subscriber]struct{})
		}
		index[key][s] = struct{}{}
	}
	return s, nil
}

// Unsubscribe removes s from the hub. It is idempotent.
func (h *Hub) Unsubscribe(s *Subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.remove(s)
}

// end removes s and tells its stream why; h.mu is held.
func (h *Hub) end(s *Subscriber, reason EndReason) {
	if _, ok := h.all[s]; !ok {
		return
	}
	h.remove(s)
	s.reason = reason
	close(s.done)
	if s.wake != nil {
		s.wake()
	}
}

// remove unindexes s; h.mu is held.
func (h *Hub) remove(s *Subscriber) {
	if _, ok := h.all[s]; !ok {
		return
	}
	delete(h.all, s)
	for _, t := range s.topics {
		index, key := h.indexOf(t)
		delete(index[key], s)
		if len(index[key]) == 0 {
			delete(index, key)
		}
	}
}

// indexOf returns the index t's subscribers are kept in, and their key there.
func (h *Hub) indexOf(t event.Topic) (map[string]map[*Subscriber]struct{}, string) {
	if t.Wildcard() {
		return h.prefixed, t.Prefix()
	}
	return h.exact, t.String()
}

// Settled returns the hub's position and whether every frame the hub has handed
// s is out of its queue: then the stream that took them holds every event of its
// topics up to that position.
func (h *Hub) Settled(s *Subscriber) (position int64, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s.queue.mu.Lock()
	empty := s.queue.frames.Len() == 0
	s.queue.mu.Unlock()
	return h.cursor, empty
}

// Backlog returns the frames of s's topics with ids in (after, s.Cursor] from
// the hub's recent history, in order; ok is false when that history no longer
// reaches back to after and the caller must read the log instead.
func (h *Hub) Backlog(s *Subscriber, after int64) (frames []*sse.Frame, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if after < h.history.from {
		return nil, false
	}
	h.history.each(func(f *sse.Frame) {
		if f.ID > after && f.ID <= s.Cursor && s.matches(f.Topic) {
			frames = append(frames, f)
		}
	})
	return frames, true
}

// Len returns the number of subscribers.
func (h *Hub) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.all)
}

// Drain ends every subscriber, spread evenly over window so that their clients
// do not reconnect all at once, and refuses new ones. It returns when all are
// ended or done is closed, whereupon the rest are ended at once.
func (h *Hub) Drain(done <-chan struct{}, window time.Duration) {
	h.mu.Lock()
	h.stop()
	subs := make([]*Subscriber, 0, len(h.all))
	for s := range h.all {
		subs = append(subs, s)
	}
	h.mu.Unlock()

	rand.Shuffle(len(subs), func(i, j int) { subs[i], subs[j] = subs[j], subs[i] })
	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for i, s := range subs {
		at := start.Add(window * time.Duration(i+1) / time.Duration(len(subs)+1))
		timer.Reset(time.Until(at))
		select {
		case <-timer.C:
		case <-done:
			h.Close()
			return
		}
		h.mu.Lock()
		h.end(s, EndDraining)
		h.mu.Unlock()
	}
}

// Close ends every subscriber at once and refuses new ones. It is idempotent.
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stop()
	for s := range h.all {
		h.end(s, EndShutdown)
	}
}

// history is the most recent frames, bounded by count and bytes. Every event
// with an id above from is in it.
type history struct {
	frames   ring.Ring[*sse.Frame]
	bytes    int
	maxBytes int
	from     int64
}

// newHistory returns an empty history, bounded as cfg says, whose events all
// have ids above from.
func newHistory(cfg HubConfig, from int64) history {
	return history{frames: ring.New[*sse.Frame](cfg.HistoryLen), maxBytes: cfg.HistoryBytes, from: from}
}

func (r *history) push(f *sse.Frame) {
	for r.frames.Len() > 0 && (r.frames.Full() || r.bytes+len(f.Wire) > r.maxBytes) {
		old := r.frames.Pop()
		r.bytes -= len(old.Wire)
		r.from = old.ID
	}
	if len(f.Wire) > r.maxBytes {
		r.from = f.ID // too big to keep; resumes before it read the log
		return
	}
	r.frames.Push(f)
	r.bytes += len(f.Wire)
}

func (r *history) each(fn func(*sse.Frame)) {
	for i := 0; i < r.frames.Len(); i++ {
		fn(r.frames.At(i))
	}
}
