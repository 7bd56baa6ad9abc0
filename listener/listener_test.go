package listener_test

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"pgsse/db"
	"pgsse/event"
	"pgsse/internal/dbtest"
	"pgsse/listener"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// sink records what the listener hands on; hold makes Publish block, as a stuck
// consumer would.
type sink struct {
	started chan int64
	resets  chan int64
	events  chan event.Event
	hold    sync.Mutex
}

func newSink() *sink {
	return &sink{started: make(chan int64, 1), resets: make(chan int64, 10), events: make(chan event.Event, 100000)}
}

func (s *sink) Start(cursor int64) { s.started <- cursor }

func (s *sink) Reset(cursor int64) { s.resets <- cursor }

func (s *sink) Publish(events []event.Event) {
	s.hold.Lock()
	defer s.hold.Unlock()
	for _, ev := range events {
		s.events <- ev
	}
}

func (s *sink) next(t *testing.T) event.Event {
	t.Helper()
	select {
	case ev := <-s.events:
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
		return event.Event{}
	}
}

// start runs a listener on a fresh database with the safety poll off, so only
// the doorbell and reconnects can wake it.
func start(t *testing.T) (url string, sqlDB *sql.DB, s *sink) {
	t.Helper()
	url = dbtest.New(t) + "&application_name=pgsse-listener-test"
	s = run(t, url, func(l listener.Log) listener.Log { return l })
	return url, dbtest.Open(t, url), s
}

// run runs a listener on url, reading the log through wrap, until the test ends.
func run(t *testing.T, url string, wrap func(listener.Log) listener.Log) *sink {
	t.Helper()
	store, err := db.Open(url, 0)
	if err != nil {
		t.Fatal(err)
	}
	s := newSink()
	l := listener.New(listener.Config{URL: url, Logger: zerolog.New(zerolog.NewTestWriter(t))}, wrap(store), s)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return within 10s of cancel")
		}
		store.Close()
	})
	select {
	case <-s.started:
	case <-time.After(10 * time.Second):
		t.Fatal("listener did not start")
	}
	return s
}

func wantVideo(t *testing.T, ev event.Event, id string) {
	t.Helper()
	if p, ok := ev.Data.(*event.VideoStatus); !ok || p.VideoID != id {
		t.Fatalf("event %d %+v, want video.status of %s", ev.ID, ev.Data, id)
	}
}

func TestListener_Doorbell(t *testing.T) {
	_, sqlDB, s := start(t)
	for i := range 5 {
		dbtest.InsertVideo(t, sqlDB, fmt.Sprint("v", i))
	}
	var last int64
	for i := range 5 {
		ev := s.next(t)
		wantVideo(t, ev, fmt.Sprint("v", i))
		if ev.ID <= last {
			t.Fatalf("id %d after %d", ev.ID, last)
		}
		last = ev.ID
	}
}

// TestListener_Reconnect: events committed while the LISTEN connection is gone
// arrive after lib/pq reconnects (its nil notification makes the listener
// re-read the log), with no poll to fall back on.
func TestListener_Reconnect(t *testing.T) {
	_, sqlDB, s := start(t)
	dbtest.InsertVideo(t, sqlDB, "before")
	wantVideo(t, s.next(t), "before")

	dbtest.Exec(t, sqlDB, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE application_name = 'pgsse-listener-test' AND query ILIKE 'listen%'`)
	for i := range 20 {
		dbtest.InsertVideo(t, sqlDB, fmt.Sprint("during", i))
	}
	for i := range 20 {
		wantVideo(t, s.next(t), fmt.Sprint("during", i))
	}
}

// TestListener_Garbage: foreign notifications on the doorbell channel and rows
// the listener cannot decode (written around pgsse.publish) are skipped; a kind
// it has no struct for is passed through; what follows still arrives.
func TestListener_Garbage(t *testing.T) {
	_, sqlDB, s := start(t)
	dbtest.Exec(t, sqlDB, `SELECT pg_notify('pgsse_events', 'garbage, not an event'); NOTIFY pgsse_events, '{"id": -1}'`)
	dbtest.Exec(t, sqlDB, `INSERT INTO pgsse.events (id, kind, topic, time, data) VALUES
		(nextval('pgsse.event_id_seq'), 'video.progress', 'videos/x', now(), '{"video_id": "x", "percent": "lots"}'),
		(nextval('pgsse.event_id_seq'), 'video.progress', 'videos/x', now(), '{"video_id": "x", "percent": 500}')`)
	dbtest.Exec(t, sqlDB, `SELECT pgsse.publish('unknown.kind', 'videos/x', '{"n": 1}')`)
	dbtest.InsertVideo(t, sqlDB, "after")
	if ev := s.next(t); ev.Kind != "unknown.kind" {
		t.Fatalf("got %+v, want the unknown.kind event passed through", ev)
	}
	wantVideo(t, s.next(t), "after")
	select {
	case ev := <-s.events:
		t.Fatalf("unexpected event %+v", ev)
	case <-time.After(100 * time.Millisecond):
	}
}

// TestListener_StuckConsumer: while the consumer blocks, far more than lib/pq's
// 32 notifications arrive; every event arrives once the consumer moves again,
// and Run still stops promptly afterwards.
func TestListener_StuckConsumer(t *testing.T) {
	_, sqlDB, s := start(t)
	s.hold.Lock()
	dbtest.InsertVideo(t, sqlDB, "first") // the listener blocks publishing this one
	time.Sleep(100 * time.Millisecond)
	for i := range 200 {
		dbtest.InsertVideo(t, sqlDB, fmt.Sprint("v", i))
	}
	s.hold.Unlock()
	wantVideo(t, s.next(t), "first")
	for i := range 200 {
		wantVideo(t, s.next(t), fmt.Sprint("v", i))
	}
	// t.Cleanup checks that Run returns promptly on cancel.
}

// TestListener_LogReplaced: the log is swapped for one that has already handed
// out more ids than the listener has read (a restored backup, a promoted replica)
// while the listener runs. It is noticed by the event at the cursor, not by the
// head, and the sink is reset to the new head; a pruned cursor is no reset.
func TestListener_LogReplaced(t *testing.T) {
	_, sqlDB, s := start(t)
	for i := range 3 {
		dbtest.InsertVideo(t, sqlDB, fmt.Sprint("old", i))
		wantVideo(t, s.next(t), fmt.Sprint("old", i))
	}

	// Pruning the event at the cursor is no reset.
	dbtest.Exec(t, sqlDB, `DELETE FROM pgsse.events; UPDATE pgsse.horizon SET pruned_through = 3; NOTIFY pgsse_events`)
	dbtest.InsertVideo(t, sqlDB, "kept")
	if ev := s.next(t); ev.ID != 4 {
		t.Fatalf("after pruning: event %d, want 4", ev.ID)
	}

	dbtest.Exec(t, sqlDB, `BEGIN;
		TRUNCATE pgsse.events; UPDATE pgsse.horizon SET pruned_through = 0;
		ALTER SEQUENCE pgsse.event_id_seq RESTART;
		INSERT INTO pgsse.events (id, kind, topic, time, data)
		SELECT nextval('pgsse.event_id_seq'), 'video.status', 'videos/restored' || i, now(),
		       jsonb_build_object('video_id', 'restored' || i, 'status', 'pending')
		FROM generate_series(1, 10) i;
		NOTIFY pgsse_events;
		COMMIT`)
	select {
	case cursor := <-s.resets:
		if cursor != 10 {
			t.Errorf("reset to %d, want the new head 10", cursor)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the replaced log was not noticed")
	}
	dbtest.InsertVideo(t, sqlDB, "new")
	if ev := s.next(t); ev.ID != 11 {
		t.Fatalf("after the reset: event %d %+v, want 11 of the new log", ev.ID, ev.Data)
	}
}

// countingLog counts the listener's reads of the log.
type countingLog struct {
	listener.Log
	reads atomic.Int64
}

func (c *countingLog) EventsAfter(ctx context.Context, after event.Position, limit int) ([]event.Raw, bool, error) {
	c.reads.Add(1)
	return c.Log.EventsAfter(ctx, after, limit)
}

// TestListener_SequencerReadsNothing: the replica that sequences gets the
// events back from the sequencer and publishes them without reading the log
// (it used to read after every sequencing commit). With a second replica, the
// one whose sequencer finds nothing to move reads them; both publish every
// event once, in the same order.
func TestListener_SequencerReadsNothing(t *testing.T) {
	url := dbtest.New(t)
	sqlDB := dbtest.Open(t, url)
	counted := &countingLog{}
	s := run(t, url, func(l listener.Log) listener.Log { counted.Log = l; return counted })
	dbtest.InsertVideo(t, sqlDB, "first")
	wantVideo(t, s.next(t), "first")
	counted.reads.Store(0) // the catch-up at start reads the log
	for i := range 20 {
		dbtest.InsertVideo(t, sqlDB, fmt.Sprint("v", i))
		wantVideo(t, s.next(t), fmt.Sprint("v", i))
	}
	if n := counted.reads.Load(); n != 0 {
		t.Errorf("the only replica read the log %d times for 20 events", n)
	}

	other := run(t, url, func(l listener.Log) listener.Log { return l })
	for i := range 20 {
		dbtest.InsertVideo(t, sqlDB, fmt.Sprint("w", i))
	}
	for i := range 20 {
		ev := s.next(t)
		wantVideo(t, ev, fmt.Sprint("w", i))
		if o := other.next(t); o.ID != ev.ID {
			t.Fatalf("event %d: the second replica has id %d, the first %d", i, o.ID, ev.ID)
		}
	}
}

// TestListener_VacuumsIncoming: after sequencing, the listener vacuums
// pgsse.incoming (autovacuum would come within a minute at best, and the
// sequencer's reads step over every row deleted until then).
func TestListener_VacuumsIncoming(t *testing.T) {
	_, sqlDB, s := start(t)
	dbtest.InsertVideo(t, sqlDB, "a")
	wantVideo(t, s.next(t), "a")
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var vacuums int
		if err := sqlDB.QueryRow(`SELECT vacuum_count FROM pg_stat_user_tables WHERE relid = 'pgsse.incoming'::regclass`).Scan(&vacuums); err != nil {
			t.Fatal(err)
		}
		if vacuums > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("pgsse.incoming not vacuumed within 5s of sequencing")
		}
	}
}
