package stream

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"pgsse/db"
	"pgsse/event"
	"pgsse/hub"
	"pgsse/sse"
)

// maxBatchBytes bounds how much of a subscriber's queue is coalesced into one
// write and one flush.
const maxBatchBytes = 64 << 10

var (
	kindReset    = sse.MustEventType("stream.reset")
	kindPosition = sse.MustEventType("stream.position")
	kindExpired  = sse.MustEventType("auth.expired")
	errEnded     = errors.New("stream ended")
)

// stream is one client's stream, from the first write to the last. On
// net/http's path the request's goroutine runs it; a stream taken over from
// net/http is run by a goroutine of its own only while it must wait, and by
// the writers while parked (see park.go).
type stream struct {
	h         *Handler
	ctx       context.Context
	cancel    context.CancelFunc
	sink      sink
	conn      *takenOver // nil on net/http's path
	req       request
	remote    string // the client's address, for the log
	subject   string // the token's subject, for the log; may be empty
	start     time.Time
	release   func()          // the admission's slot
	heartbeat *time.Timer     // while run by a goroutine; nil while parked (the wheel's then)
	expired   <-chan struct{} // closed when the token expires; nil: never
	expiry    *time.Timer
	lastWrite time.Time // when the last write finished
	deadline  time.Time // the connection's write deadline

	sub    *hub.Subscriber
	last   int64     // highest id written or skipped past; later frames at or below it are dropped
	held   int64     // the last id the client holds (sent in an id: line); -1: none
	isLive bool      // past begin: last may follow the hub while idle
	sent   int       // events written
	reason EndReason // why the stream is ending, once a step returns errEnded
	buf    []byte
	frames []*sse.Frame // taken from the queue, reused

	caughtUpFrom int64 // position of the last catch-up; -1: none
	stalls       int   // catch-ups in a row that ended in another overflow without progress

	// The hand-over between the stream's goroutine and the writers.
	mu                  sync.Mutex
	parked              bool // the writers own the stream
	scheduled           bool // with a writer, or waiting for one
	rerun               bool // woken while being served
	beatPending         bool // the wheel says a heartbeat may be due
	noPark              bool // ending: the live loop must not park again
	wheelSlot, wheelPos int  // the stream's place in the wheel (the wheel's mutex); -1: none
}

// run runs body, the stream's goroutine's work, and ends the stream unless
// body parked it.
func (st *stream) run(body func() error) {
	err := body()
	if errors.Is(err, errParked) {
		return // the writers' now
	}
	reason := st.reason
	if err != nil && reason == "" {
		reason = EndWriteFailed
	}
	st.finish(reason)
}

// logger is the stream's logger: built when a line is logged rather than
// kept, since a parked stream is mostly idle and a logger's context costs most
// of a kilobyte.
func (st *stream) logger() *zerolog.Logger {
	c := st.h.cfg.Logger.With().Strs("topics", st.req.names).Str("remote", st.remote)
	if st.subject != "" {
		c = c.Str("subject", st.subject)
	}
	l := c.Logger()
	return &l
}

// finish releases what the stream holds, counts and logs its end.
func (st *stream) finish(reason EndReason) {
	if st.sub != nil {
		st.h.hub.Unsubscribe(st.sub)
	}
	if st.heartbeat != nil {
		st.heartbeat.Stop()
	}
	if st.expiry != nil {
		st.expiry.Stop()
	}
	st.cancel()
	if c := st.conn; c != nil {
		if c.watchID != 0 {
			st.h.pool.watch.remove(c.raw, c.watchID)
		}
		_ = c.conn.Close()
		st.h.streamEnded()
	} else {
		// The connection may serve other requests after this one.
		_ = st.sink.setWriteDeadline(time.Time{})
	}
	st.release()
	m := st.h.cfg.Metrics
	m.StreamsOpen.Dec()
	m.StreamsClosed.WithLabelValues(string(reason)).Inc()
	st.logger().Info().Dur("duration_ms", time.Since(st.start)).Int("events", st.sent).Str("reason", string(reason)).Msg("stream ended")
}

func (st *stream) steps() error {
	// A taken-over stream's buffer holds the response head: one write for both.
	if err := st.queue((&sse.Message{Retry: jitter(st.h.cfg.Retry)}).AppendTo(nil)); err != nil {
		return err
	}
	if err := st.flushBuf(); err != nil {
		return err
	}
	if err := st.waitStarted(); err != nil {
		return err
	}
	st.held = -1
	if st.req.resume {
		st.held = st.req.lastID
	}
	return st.restarts(st.follow(st.begin))
}

// restarts carries the stream on past the ends it recovers from in place: an
// overflow (caught up) and a replaced log (started over).
func (st *stream) restarts(err error) error {
	for errors.Is(err, errEnded) && (st.reason == EndLogReset || st.reason == EndOverflow) {
		if st.reason == EndOverflow {
			if st.last == st.caughtUpFrom {
				if st.stalls++; st.stalls == maxCatchUpStalls {
					break // overflowing again and again without progress: the client resumes later
				}
			} else {
				st.stalls = 0
			}
			// Fell behind a burst: catch up here, from the hub's history or the
			// log, and rejoin live. A client that cannot keep up is dropped by
			// the write timeout while it does.
			st.caughtUpFrom = st.last
			st.isLive, st.reason = false, ""
			err = st.follow(st.catchUp)
			continue
		}
		// The log was replaced: what the client holds belongs to the old one.
		held := st.held
		st.held, st.isLive, st.reason = -1, false, ""
		err = st.follow(func() error { return st.reset("log_reset", max(held, 0)) })
	}
	return err
}

// maxCatchUpStalls is how many catch-ups in a row may end in another overflow
// with nothing sent before the stream gives up on its queue.
const maxCatchUpStalls = 3

// catchUp sends what a fresh subscriber's Cursor is ahead of the stream by.
func (st *stream) catchUp() error {
	if st.last >= st.sub.Cursor {
		return nil
	}
	if frames, ok := st.h.hub.Backlog(st.sub, st.last); ok {
		st.h.cfg.Metrics.CatchUps.WithLabelValues(SourceMemory).Inc()
		return st.sendFrames(frames, st.sub.Cursor)
	}
	st.h.cfg.Metrics.CatchUps.WithLabelValues(SourceDatabase).Inc()
	return st.replayLog()
}

// follow subscribes, sends what start sends, then live events until the end.
func (st *stream) follow(start func() error) error {
	if st.sub != nil {
		st.h.hub.Unsubscribe(st.sub)
	}
	var wake func()
	if st.conn != nil {
		wake = st.wake
	}
	sub, err := st.h.hub.Subscribe(st.req.topics, wake)
	if err != nil {
		return st.end(EndDraining)
	}
	st.sub = sub
	if err := start(); err != nil {
		return err
	}
	if err := st.sendPosition(); err != nil {
		return err
	}
	st.isLive, st.noPark = true, false
	return st.live()
}

// waitStarted holds the stream open, with heartbeats, until the hub has a log
// position: right after start the listener may still be waiting for Postgres.
func (st *stream) waitStarted() error {
	for {
		select {
		case <-st.h.hub.Started():
			return nil
		case <-st.h.hub.Stopping():
			return st.end(EndDraining)
		case <-st.ctx.Done():
			return st.end(EndClientGone)
		case <-st.expired:
			return st.authExpired()
		case <-st.heartbeat.C:
			if err := st.beat(); err != nil {
				return err
			}
		}
	}
}

// begin sends what comes before live events: missed events for a resume, or
// snapshots for a fresh subscription or a position the log no longer has.
func (st *stream) begin() error {
	if !st.req.resume {
		return st.snapshot()
	}
	after := st.req.lastID
	if after <= st.sub.Cursor {
		if frames, ok := st.h.hub.Backlog(st.sub, after); ok {
			if after < st.sub.Cursor {
				st.h.cfg.Metrics.Replays.WithLabelValues(SourceMemory).Inc()
			}
			st.last = after
			return st.sendFrames(frames, st.sub.Cursor)
		}
	}
	var horizon, newest int64
	err := st.retryDB("read log bounds", func(ctx context.Context) (err error) {
		horizon, newest, err = st.h.history.LogBounds(ctx)
		return err
	})
	switch {
	case err != nil:
		return err
	case after < horizon:
		return st.reset("history_pruned", after)
	case after > newest:
		return st.reset("log_reset", after)
	case after < st.sub.Cursor:
		st.h.cfg.Metrics.Replays.WithLabelValues(SourceDatabase).Inc()
		st.last = after
		return st.replayLog()
	default:
		// Ahead of this replica (another one served it a moment ago): live events
		// up to the position are dropped until this replica catches up.
		st.last = after
		return nil
	}
}

// sendPosition gives the client the stream's position when it holds an older one
// (or none): a stream.position event, with data so that every client library
// dispatches it and moves its last event id. Without it, a stream that has had no
// event would reconnect with no position, or an old one, and miss what was
// committed meanwhile.
func (st *stream) sendPosition() error {
	if st.last <= st.held {
		return nil
	}
	if err := st.send(positionMessage(st.last)); err != nil {
		return err
	}
	st.held = st.last
	return nil
}

// positionMessage is the stream.position event for position.
func positionMessage(position int64) []byte {
	data, _ := json.Marshal(map[string]any{
		"kind": kindPosition.String(),
		"data": map[string]any{"last_event_id": position},
	})
	return (&sse.Message{ID: sse.IntID(position), Type: kindPosition, Data: data}).AppendTo(nil)
}

// authExpired tells the client its token has expired, then ends the stream: a
// revoked grant does not outlive the token that carried it.
func (st *stream) authExpired() error {
	data, _ := json.Marshal(map[string]any{
		"kind": kindExpired.String(),
		"data": map[string]any{"reason": "token expired; reconnect with a fresh token"},
	})
	_ = st.send((&sse.Message{Type: kindExpired, Data: data}).AppendTo(nil))
	return st.end(EndAuthExpired)
}

// reset tells the client that events after position are gone, then sends fresh
// snapshots.
func (st *stream) reset(why string, position int64) error {
	data, _ := json.Marshal(map[string]any{
		"kind": kindReset.String(),
		"data": map[string]any{"reason": why, "last_event_id": position},
	})
	st.logger().Info().Str("why", why).Int64("last_event_id", position).Msg("stream reset")
	if err := st.send((&sse.Message{Type: kindReset, Data: data}).AppendTo(nil)); err != nil {
		return err
	}
	return st.snapshot()
}

// snapshot sends the current state of each of the stream's topics that has
// one (the store says which), read together with the log position it
// reflects; the stream continues from that position.
func (st *stream) snapshot() error {
	var stateful []string
	for _, t := range st.req.topics {
		if !t.Wildcard() && st.h.history.Stateful(t.String()) {
			stateful = append(stateful, t.String())
		}
	}
	if len(stateful) == 0 {
		st.last = st.sub.Cursor // patterns and topics without state: live from here
		return nil
	}
	var position int64
	var snaps []event.Event
	err := st.retryDB("read snapshot", func(ctx context.Context) (err error) {
		position, snaps, err = st.h.history.Snapshot(ctx, stateful)
		return err
	})
	if err != nil {
		return err
	}
	if err := st.sendEvents(snaps); err != nil {
		return err
	}
	st.last = position
	if position < st.sub.Cursor {
		// The log read is behind the hub (a replica of an older snapshot): fill
		// the gap so no event between the two is lost.
		if frames, ok := st.h.hub.Backlog(st.sub, position); ok {
			return st.sendFrames(frames, st.sub.Cursor)
		}
		return st.replayLog()
	}
	return nil
}

// replayLog sends the subscriber's events in (st.last, Cursor] from the log.
func (st *stream) replayLog() error {
	var topics, prefixes []string
	for _, t := range st.req.topics {
		if t.Wildcard() {
			prefixes = append(prefixes, t.Prefix())
		} else {
			topics = append(topics, t.String())
		}
	}
	through := st.sub.Cursor
	for st.last < through {
		var raws []event.Raw
		var more bool
		var horizon int64
		err := st.retryDB("replay events", func(ctx context.Context) (err error) {
			if err := st.h.replays.Acquire(ctx, 1); err != nil {
				return err
			}
			defer st.h.replays.Release(1)
			raws, more, horizon, err = st.h.history.TopicEvents(ctx, st.last, through, topics, prefixes, st.h.cfg.ReplayBatch)
			return err
		})
		if err != nil {
			return err
		}
		if horizon > st.last {
			// Pruned while replaying: some of this batch may be gone.
			return st.reset("history_pruned", st.last)
		}
		events := event.DecodeAll(raws, func(r event.Raw, err error) {
			st.logger().Warn().Err(err).Int64("event_id", r.ID).Msg("undecodable event in log; skipped")
		})
		if err := st.sendEvents(events); err != nil {
			return err
		}
		if !more {
			break
		}
		st.last = raws[len(raws)-1].ID
	}
	st.last = through
	return nil
}

// sendEvents encodes events and writes them (see queue): a batch of large
// events is never held encoded all at once.
func (st *stream) sendEvents(events []event.Event) error {
	for i := range events {
		f, err := sse.Encode(&events[i])
		if err != nil {
			st.logger().Error().Err(err).Msg("encode event; skipped")
			continue
		}
		st.sent++
		st.h.cfg.Metrics.Delivered.Inc()
		st.held = max(st.held, f.ID)
		if err := st.queue(f.Wire); err != nil {
			return err
		}
	}
	return st.flushBuf()
}

// sendFrames writes frames, then moves the stream's position to through.
func (st *stream) sendFrames(frames []*sse.Frame, through int64) error {
	for _, f := range frames {
		st.held = max(st.held, f.ID)
		st.sent++
		st.h.cfg.Metrics.Delivered.Inc()
		if err := st.queue(f.Wire); err != nil {
			return err
		}
	}
	if err := st.flushBuf(); err != nil {
		return err
	}
	st.last = max(st.last, through)
	return nil
}

// live streams queued frames until the client leaves or the hub ends the
// subscriber. Whatever is queued is coalesced into few writes (see queue). A
// stream that can be parked is handed to the writers instead.
func (st *stream) live() error {
	for {
		if st.parkable() {
			return st.park()
		}
		select {
		case <-st.ctx.Done():
			return st.end(EndClientGone)
		case <-st.expired:
			return st.authExpired()
		case <-st.sub.Done():
			if st.sub.Reason() == EndDraining {
				// A fresh, jittered delay: the drained clients come back spread
				// out, to the replicas that are still ready.
				_ = st.send((&sse.Message{Retry: jitter(st.h.cfg.Retry)}).AppendTo(nil))
			}
			return st.end(st.sub.Reason())
		case <-st.heartbeat.C:
			if err := st.beat(); err != nil {
				return err
			}
		case <-st.sub.Ready():
			st.frames = st.sub.Take(st.frames[:0])
			for _, f := range st.frames {
				if st.accept(f) {
					if err := st.queue(f.Wire); err != nil {
						return err
					}
				}
			}
			clear(st.frames) // let the frames go
			if err := st.flushBuf(); err != nil {
				return err
			}
		}
	}
}

// accept counts f as delivered, unless the stream has sent or skipped past it
// already (covered by the snapshot or replay sent).
func (st *stream) accept(f *sse.Frame) bool {
	if f.ID <= st.last {
		return false
	}
	st.last = f.ID
	st.held = f.ID
	st.sent++
	st.h.cfg.Metrics.Delivered.Inc()
	st.h.cfg.Metrics.Lag.Observe(time.Since(f.Time).Seconds())
	return true
}

// queue adds a frame to the next write: frames are coalesced in st.buf up to
// maxBatchBytes, one write and one flush for many. A frame larger than that is
// written by itself from the frame, never copied: a large event fanned out to
// many streams is held once, not once per stream.
func (st *stream) queue(wire []byte) error {
	if len(st.buf)+len(wire) > maxBatchBytes {
		if err := st.flushBuf(); err != nil {
			return err
		}
		if len(wire) > maxBatchBytes {
			return st.send(wire)
		}
	}
	st.buf = append(st.buf, wire...)
	return nil
}

// flushBuf writes what st.buf holds, if anything, and empties it.
func (st *stream) flushBuf() error {
	if len(st.buf) == 0 {
		return nil
	}
	err := st.send(st.buf)
	st.buf = st.buf[:0]
	return err
}

// send writes b and flushes it. Each write gets at least the write timeout,
// at most half as much again: the deadline is moved only when less than the
// timeout is left, which spares a timer update on most writes.
func (st *stream) send(b []byte) error {
	now := time.Now()
	if st.deadline.Sub(now) < st.h.cfg.WriteTimeout {
		st.deadline = now.Add(st.h.cfg.WriteTimeout * 3 / 2)
		_ = st.sink.setWriteDeadline(st.deadline)
	}
	if err := st.sink.write(b); err != nil {
		return st.writeFailed(err)
	}
	st.lastWrite = time.Now()
	return nil
}

// beat runs when the heartbeat timer fires: what idleBeat says if nothing was
// written for a heartbeat interval, else the timer is set for the rest of it.
// (Moving the timer on every write would cost a timer update per event.)
func (st *stream) beat() error {
	hb := st.h.cfg.Heartbeat
	if idle := time.Since(st.lastWrite); idle < hb {
		st.heartbeat.Reset(hb - idle)
		return nil
	}
	st.heartbeat.Reset(hb)
	return st.send(st.idleBeat())
}

// idleBeat is what a stream idle for a heartbeat interval sends: once live,
// the hub's position when the hub has moved past the stream's (so that a
// reconnect resumes from a recent position, inside the retention, rather than
// the last event of its own topics), else a comment.
func (st *stream) idleBeat() []byte {
	if st.isLive {
		if position, settled := st.h.hub.Settled(st.sub); settled && position > st.last {
			st.last = position
			if position > st.held {
				st.held = position
				return positionMessage(position)
			}
		}
	}
	return sse.Heartbeat
}

// writeFailed ends the stream after a failed write, with the reason that caused
// it: the hub's end of the subscriber (draining, a replaced log), else a write
// deadline (net/http cancels the request's context when a write fails, so the
// context alone would say client_gone), else a client that left (any other
// failure of a connection taken over: nothing else cancels its context). An
// overflow is not the cause: a client that cannot take a write within the
// timeout is dropped, not caught up again.
func (st *stream) writeFailed(err error) error {
	if st.sub != nil {
		select {
		case <-st.sub.Done():
			if r := st.sub.Reason(); r != EndOverflow {
				return st.end(r)
			}
		default:
		}
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) && (st.ctx.Err() != nil || st.conn != nil) {
		return st.end(EndClientGone)
	}
	st.logger().Debug().Err(err).Msg("stream write failed")
	return st.end(EndWriteFailed)
}

func (st *stream) end(reason EndReason) error {
	st.reason = reason
	return errEnded
}

// retryDB runs fn until it succeeds, backing off and keeping the stream alive
// with heartbeats meanwhile: during a database outage a stream waits rather than
// failing, and is served once the database is back.
func (st *stream) retryDB(op string, fn func(ctx context.Context) error) error {
	backoff := 100 * time.Millisecond
	for attempt := 0; ; attempt++ {
		err, ended := st.callDB(fn)
		if ended != nil {
			return ended
		}
		if err == nil {
			if f := st.h.dbFault.Load(); f != nil && f.op == op {
				st.h.dbFault.CompareAndSwap(f, nil)
			}
			return nil
		}
		if st.ctx.Err() != nil {
			return st.end(EndClientGone)
		}
		f := db.Classify(err)
		if !f.Outage {
			st.h.dbFault.Store(&opFault{op: op, Fault: f})
		}
		if attempt == 0 {
			if f.Outage {
				st.logger().Warn().Err(err).Str("op", op).Msg("database unavailable; stream waits")
			} else {
				st.logger().Error().Err(err).Str("op", op).Str("sqlstate", f.SQLState).Str("hint", f.Hint).Msg("database fault; stream waits")
			}
		}
		wait := time.NewTimer(backoff)
		backoff = min(2*backoff, db.MaxRetryBackoff)
		if err := st.waitRetry(wait); err != nil {
			return err
		}
	}
}

// callDB runs fn on a goroutine of its own and, while it runs, keeps the stream
// alive (heartbeats) and ending when it must (client gone, token expired): a
// stalled database must not silence the stream. ended is the stream's end if it
// came first; fn then finishes on its own, within the pool's timeout, and its
// results are not read. A subscriber ended for overflow is seen after the
// call: a catch-up's read is worth finishing even when its queue overflows
// again; any other end (draining, a replaced log) ends the call's wait.
func (st *stream) callDB(fn func(ctx context.Context) error) (err, ended error) {
	result := make(chan error, 1)
	go func() { result <- fn(st.ctx) }()
	var done <-chan struct{}
	if st.sub != nil {
		done = st.sub.Done()
	}
	for {
		select {
		case err := <-result:
			return err, nil
		case <-done:
			if st.sub.Reason() != EndOverflow {
				return nil, st.end(st.sub.Reason())
			}
			done = nil
		case <-st.ctx.Done():
			return nil, st.end(EndClientGone)
		case <-st.expired:
			return nil, st.authExpired()
		case <-st.heartbeat.C:
			if err := st.beat(); err != nil {
				return nil, err
			}
		}
	}
}

func (st *stream) waitRetry(wait *time.Timer) error {
	defer wait.Stop()
	var done <-chan struct{}
	if st.sub != nil {
		done = st.sub.Done()
	}
	for {
		select {
		case <-wait.C:
			return nil
		case <-st.ctx.Done():
			return st.end(EndClientGone)
		case <-st.expired:
			return st.authExpired()
		case <-done:
			return st.end(st.sub.Reason())
		case <-st.heartbeat.C:
			if err := st.beat(); err != nil {
				return err
			}
		}
	}
}
