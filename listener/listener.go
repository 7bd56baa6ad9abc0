// Package listener turns the log into an ordered stream of typed events. It holds
// the process's one lib/pq Listener, on the doorbell channels: pgsse_incoming
// (a writer committed events) and pgsse_events (another replica of an earlier
// version gave them ids in the log).
//
// A wake-up first sequences what writers committed (gives it ids in the log)
// when that is due — a ring of pgsse_incoming, a reconnect, the poll — then
// reads. A ring of either doorbell, the nil notification lib/pq sends after a
// reconnect (notifications may have been lost), and a periodic safety poll all
// lead to the same thing: read the log after the cursor, in id order and in
// batches, until a short batch, and hand the events on; unless the sequencer
// handed back what it moved and that directly followed the cursor, when there
// is nothing left to read. Wake-ups are paced under load. Since the log, not
// the notification, carries the events, nothing is lost to a missed
// notification, a reconnect or a database restart. Rows that cannot be decoded
// (written around pgsse.publish) are logged and skipped. The cursor remembers
// its event's time, so a log replaced under it is noticed (see Sink.Reset), and
// a probe notification proves the LISTEN connection hears (see Receiving).
package listener

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lib/pq"
	"github.com/rs/zerolog"

	"pgsse/db"
	"pgsse/event"
)

// The doorbells: writers ring pgsse_incoming when they commit events; every
// replica sequences on it, then reads. The sequencer of earlier versions also
// rang pgsse_events after moving events into the log; it is still heard, so
// that replicas of both versions serve together during a rollout.
const (
	incomingChannel = "pgsse_incoming"
	eventsChannel   = "pgsse_events"
)

// Log is where events are read from.
type Log interface {
	// Sequence moves events writers committed into the log, giving them ids.
	Sequence(ctx context.Context) error
	// SequenceAfter moves one batch of them and hands them back when they
	// directly follow the position.
	SequenceAfter(ctx context.Context, after event.Position) (db.Sequenced, error)
	// VacuumIncoming clears what sequencing left behind.
	VacuumIncoming(ctx context.Context) error
	// Head returns the position to start from: the newest committed event.
	Head(ctx context.Context) (event.Position, error)
	// Notify sends a notification (the listener's probe) through another
	// connection than the LISTEN one.
	Notify(ctx context.Context, channel, payload string) error
	// EventsAfter returns up to limit events after the position, in id order
	// (fewer when they are large), and whether more may follow; or
	// event.ErrLogReplaced when the log no longer holds the event there.
	EventsAfter(ctx context.Context, after event.Position, limit int) (events []event.Raw, more bool, err error)
}

// Sink receives the events, in order.
type Sink interface {
	// Start is called once, with the position the first Publish continues from.
	Start(cursor int64)
	// Publish receives the next events; it must not block for long.
	Publish(events []event.Event)
	// Reset is called when the log was replaced: whatever came from the old one
	// is void, and the next Publish continues from cursor in the new one.
	Reset(cursor int64)
}

// Config tunes a Listener.
type Config struct {
	// URL is the database to LISTEN on.
	URL string
	// PollInterval is the safety poll: the log is read this often even when no
	// doorbell rings. Zero disables it (tests do, to prove the doorbell works).
	PollInterval time.Duration
	// Batch is the number of events read per query.
	Batch int
	// Timeout: the LISTEN connection is given up when it answers nothing for
	// this long (db.DefaultTimeout if zero); it is pinged often enough that a
	// live one always has.
	Timeout time.Duration
	Logger  zerolog.Logger
	Metrics *Metrics // nil: kept, not exported
}

// Listener reads the log and feeds a Sink. Create it with New and run it with Run.
type Listener struct {
	cfg       Config
	log       Log
	sink      Sink
	connected atomic.Bool
	probe     *probe
	failure   atomic.Pointer[db.Fault] // the log cannot be read, and why; nil: it can
	// sequenceDue: writers may have committed events that have no id yet (a ring
	// of pgsse_incoming, a reconnect, the poll, a failed attempt). A ring of
	// pgsse_events alone needs only a read: the events already have ids.
	sequenceDue atomic.Bool
	caughtUp    time.Time     // when catchUp last started; owned by Run
	catchUpTook time.Duration // how long it took; owned by Run
	sequenced   bool          // since the last vacuum; owned by Run
	vacuumed    time.Time     // when incoming was last vacuumed; owned by Run
}

// Catch-ups are paced. Each is a sequencing commit of its own (a WAL flush,
// an executor for the move) and the reads after it; at every ring of a busy
// database they took flushes and CPU from the writers (BENCHMARKS.md, "The
// commit path"). So a catch-up starts at least catchUpShare times the length
// of the previous one after it (pgsse spends at most a sixth of its time
// catching up, however loaded the machine), within [minCatchUpGap,
// maxCatchUpGap]. Rings within the gap are caught up together, later by at
// most the gap; an idle database's first ring is served at once.
const (
	catchUpShare  = 5
	minCatchUpGap = 2 * time.Millisecond
	maxCatchUpGap = 50 * time.Millisecond
)

// vacuumGap is the least time between two vacuums of pgsse.incoming by this
// replica, which it does after sequencing: 2 000 events a second leave a few
// thousand dead rows between two, which the sequencer's reads step over.
const vacuumGap = time.Second

// catchUpGap is the least time from the start of a catch-up that took took to
// the start of the next.
func catchUpGap(took time.Duration) time.Duration {
	return min(max(minCatchUpGap, catchUpShare*took), maxCatchUpGap)
}

// pace waits until the gap after the last catch-up has passed.
func (l *Listener) pace(ctx context.Context) error {
	if wait := time.Until(l.caughtUp.Add(catchUpGap(l.catchUpTook))); wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	l.caughtUp = time.Now()
	return nil
}

// New returns a listener reading log into sink.
func New(cfg Config, log Log, sink Sink) *Listener {
	if cfg.Batch <= 0 {
		cfg.Batch = 1000
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = db.DefaultTimeout
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	return &Listener{cfg: cfg, log: log, sink: sink, probe: newProbe()}
}

// Failure reports why the log cannot be read, or nil while it can.
func (l *Listener) Failure() *db.Fault { return l.failure.Load() }

func sameFault(a *db.Fault, b db.Fault) bool { return a != nil && *a == b }

// logFailure starts the log line of a failed database call: a warning for an
// outage (waited out), an error with the SQLSTATE and a hint for a fault.
func logFailure(log zerolog.Logger, f db.Fault) *zerolog.Event {
	if f.Outage {
		return log.Warn()
	}
	return log.Error().Str("sqlstate", f.SQLState).Str("hint", f.Hint)
}

// countFailure counts a failed read and shows a fault's SQLSTATE until the
// reads recover.
func (l *Listener) countFailure(f db.Fault) {
	if f.Outage {
		l.cfg.Metrics.ReadErrors.WithLabelValues(classOutage).Inc()
		l.cfg.Metrics.Fault.Reset()
		return
	}
	l.cfg.Metrics.ReadErrors.WithLabelValues(classFault).Inc()
	l.cfg.Metrics.Fault.Reset()
	l.cfg.Metrics.Fault.WithLabelValues(f.SQLState).Set(1)
}

// Connected reports whether the LISTEN connection is up.
func (l *Listener) Connected() bool { return l.connected.Load() }

// Run listens and reads until ctx ends; it returns nil then, or an error if the
// LISTEN itself is refused.
func (l *Listener) Run(ctx context.Context) error {
	url, err := db.ListenerURL(l.cfg.URL)
	if err != nil {
		return err
	}
	pql := pq.NewDialListener(db.NewDialer(l.cfg.Timeout, true), url, 100*time.Millisecond, db.MaxRetryBackoff, l.onEvent)

	// Drain lib/pq's Notify channel at once, whatever the reader is doing: when its
	// 32 slots fill, lib/pq's dispatch goroutine blocks and Ping and Close hang.
	// Rings coalesce into one pending wake-up; the log says what happened.
	wake := make(chan struct{}, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := range pql.Notify { // closed by pql.Close
			if l.probe.seen(n) {
				continue
			}
			if n == nil || n.Channel == incomingChannel {
				l.sequenceDue.Store(true)
			}
			signal(wake)
		}
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		l.keepAlive(ctx, pql)
	}()
	stop := context.AfterFunc(ctx, func() { _ = pql.Close() }) // unblocks Listen
	defer func() {
		stop()
		_ = pql.Close()
		wg.Wait()
		l.setConnected(false)
	}()

	defer l.probe.timer.Stop()
	for _, channel := range []string{incomingChannel, eventsChannel, probeChannel} {
		if err := pql.Listen(channel); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("listen on %s: %w", channel, err)
		}
	}

	cursor, err := l.head(ctx)
	if err != nil {
		return nil // ctx ended
	}
	l.sink.Start(cursor.ID)
	l.cfg.Logger.Info().Int64("cursor", cursor.ID).Msg("listener started")
	l.sendProbe(ctx)

	var poll <-chan time.Time
	if l.cfg.PollInterval > 0 {
		t := time.NewTicker(l.cfg.PollInterval)
		defer t.Stop()
		poll = t.C
	}
	retry := time.NewTimer(0)
	retry.Stop()
	defer retry.Stop()
	backoff := 100 * time.Millisecond
	failing := false
	for {
		if l.pace(ctx) != nil {
			return nil
		}
		err := l.catchUp(ctx, &cursor)
		l.catchUpTook = time.Since(l.caughtUp)
		if err == nil {
			l.vacuum(ctx)
		}
		if errors.Is(err, event.ErrLogReplaced) {
			err = l.reset(ctx, &cursor)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			fault := db.Classify(err)
			if !failing || !sameFault(l.failure.Load(), fault) {
				logFailure(l.cfg.Logger, fault).Err(err).Int64("cursor", cursor.ID).Msg("read log; retrying")
				failing = true
			}
			l.failure.Store(&fault)
			l.countFailure(fault)
			l.sequenceDue.Store(true) // whatever failed, try it all again
			retry.Reset(backoff)
			backoff = min(2*backoff, db.MaxRetryBackoff)
		} else if failing {
			l.cfg.Logger.Info().Int64("cursor", cursor.ID).Msg("read log recovered")
			failing, backoff = false, 100*time.Millisecond
			l.failure.Store(nil)
			l.cfg.Metrics.Fault.Reset()
		}
		if err := l.wait(ctx, wake, poll, retry.C); err != nil {
			return nil // ctx ended
		}
	}
}

// keepAlive pings the LISTEN connection until ctx ends. A quiet LISTEN
// connection reads nothing for as long as no notification comes; the ping's
// answer is the traffic that keeps a live one within its read deadline, so a
// connection that stops answering fails within Timeout and lib/pq reconnects.
func (l *Listener) keepAlive(ctx context.Context, pql *pq.Listener) {
	t := time.NewTicker(l.cfg.Timeout / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = pql.Ping() // fails while disconnected; lib/pq is reconnecting then
		}
	}
}

// wait returns when the log should be read again; probes are handled meanwhile.
func (l *Listener) wait(ctx context.Context, wake <-chan struct{}, poll, retry <-chan time.Time) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wake:
			return nil
		case <-poll:
			l.sequenceDue.Store(true)
			return nil
		case <-retry:
			return nil
		case <-l.probe.again:
			l.sendProbe(ctx)
		case <-l.probe.back:
			l.probeCameBack()
		case <-l.probe.timer.C:
			l.probeOverdue(ctx)
		}
	}
}

// reset moves the cursor to the head of a log that replaced the one it was in
// and voids what the sink holds of the old one; the next read continues there.
func (l *Listener) reset(ctx context.Context, cursor *event.Position) error {
	head, err := l.log.Head(ctx)
	if err != nil {
		return err
	}
	l.cfg.Logger.Warn().Int64("cursor", cursor.ID).Int64("head", head.ID).
		Msg("the event log was replaced (restored, recovered to a point in time, failed over or recreated); every stream is reset")
	l.cfg.Metrics.LogResets.Inc()
	l.sink.Reset(head.ID)
	*cursor = head
	l.cfg.Metrics.Cursor.Set(float64(head.ID))
	return nil
}

// head reads the starting position, retrying until the database answers. What
// was committed before is sequenced first: it is history, not live.
func (l *Listener) head(ctx context.Context) (event.Position, error) {
	backoff := 100 * time.Millisecond
	for {
		err := l.log.Sequence(ctx)
		if err == nil {
			var cursor event.Position
			if cursor, err = l.log.Head(ctx); err == nil {
				l.failure.Store(nil)
				l.cfg.Metrics.Fault.Reset()
				return cursor, nil
			}
		}
		if ctx.Err() != nil {
			return event.Position{}, ctx.Err()
		}
		fault := db.Classify(err)
		if !sameFault(l.failure.Load(), fault) {
			logFailure(l.cfg.Logger, fault).Err(err).Msg("read log head; retrying")
		}
		l.failure.Store(&fault)
		l.countFailure(fault)
		select {
		case <-ctx.Done():
			return event.Position{}, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, db.MaxRetryBackoff)
	}
}

// catchUp sequences what writers committed, when due, then reads and publishes
// every event after *cursor, batch by batch. The replica that sequences gets
// its events back from the sequencer and reads nothing more, unless another
// replica sequenced in between.
func (l *Listener) catchUp(ctx context.Context, cursor *event.Position) error {
	if l.sequenceDue.Swap(false) {
		current, err := l.sequence(ctx, cursor)
		if err != nil || current {
			return err
		}
	}
	for {
		raws, more, err := l.log.EventsAfter(ctx, *cursor, l.cfg.Batch)
		if err != nil {
			return err
		}
		l.publish(raws, cursor)
		if !more {
			return nil
		}
	}
}

// sequence sequences batch after batch, publishing each batch handed back, and
// reports whether every one was: the cursor is then at the log's head. Once one
// is not, none after it can be (the cursor stays behind it).
func (l *Listener) sequence(ctx context.Context, cursor *event.Position) (current bool, err error) {
	l.sequenced = true
	for {
		batch, err := l.log.SequenceAfter(ctx, *cursor)
		if err != nil {
			return false, err
		}
		if batch.Handed {
			for raws := batch.Events; len(raws) > 0; {
				n := min(len(raws), l.cfg.Batch) // the hub takes them as from reads
				l.publish(raws[:n], cursor)
				raws = raws[n:]
			}
		}
		if !batch.More {
			return batch.Handed, nil
		}
	}
}

// vacuum vacuums pgsse.incoming when this replica has sequenced since it last
// did, vacuumGap ago or more. A failure is only logged: autovacuum does the
// same, less often.
func (l *Listener) vacuum(ctx context.Context) {
	if !l.sequenced || time.Since(l.vacuumed) < vacuumGap {
		return
	}
	l.sequenced, l.vacuumed = false, time.Now()
	if err := l.log.VacuumIncoming(ctx); err != nil && ctx.Err() == nil {
		l.cfg.Logger.Warn().Err(err).Msg("vacuum after sequencing; autovacuum will")
	}
}

// publish decodes raws, hands them to the sink and moves the cursor past them.
func (l *Listener) publish(raws []event.Raw, cursor *event.Position) {
	events := event.DecodeAll(raws, func(r event.Raw, err error) {
		l.cfg.Metrics.Undecodable.Inc()
		l.cfg.Logger.Warn().Err(err).Int64("event_id", r.ID).Str("kind", r.Kind).Msg("undecodable event; skipped")
	})
	if len(events) > 0 {
		l.sink.Publish(events)
		l.cfg.Metrics.EventsRead.Add(float64(len(events)))
	}
	if len(raws) > 0 {
		last := raws[len(raws)-1]
		*cursor = event.Position{ID: last.ID, Time: last.Time}
		l.cfg.Metrics.Cursor.Set(float64(last.ID))
	}
}

func (l *Listener) onEvent(ev pq.ListenerEventType, err error) {
	switch ev {
	case pq.ListenerEventConnected, pq.ListenerEventReconnected:
		l.setConnected(true)
		if ev == pq.ListenerEventReconnected {
			l.cfg.Metrics.Reconnects.Inc()
			l.cfg.Logger.Info().Msg("listener reconnected; re-reading the log")
		}
	case pq.ListenerEventDisconnected:
		l.setConnected(false)
		l.cfg.Logger.Warn().Err(err).Msg("listener disconnected")
	case pq.ListenerEventConnectionAttemptFailed:
		l.setConnected(false)
		if !errors.Is(err, context.Canceled) {
			l.cfg.Logger.Debug().Err(err).Msg("listener connection attempt failed")
		}
	}
}

func (l *Listener) setConnected(up bool) {
	l.connected.Store(up)
	if up {
		l.cfg.Metrics.Connected.Set(1)
	} else {
		l.cfg.Metrics.Connected.Set(0)
	}
}
