package db_test

import (
	"context"
	"testing"
	"time"

	"pgsse/db"
	"pgsse/event"
	"pgsse/internal/dbtest"
)

// TestSequenceAfter_Handed: the sequencer hands the events it moved to its
// caller when they directly follow the caller's position, and only then:
// not when another replica sequenced in between, not to a position in
// another log, not when they are too large to hand over together (the caller
// reads them in bounded reads); a single one always fits. More is set while
// incoming holds more than a batch.
func TestSequenceAfter_Handed(t *testing.T) {
	url := dbtest.New(t)
	sqlDB, s, other := dbtest.Open(t, url), mustOpen(t, url), mustOpen(t, url)
	ctx := context.Background()
	dbtest.InsertVideo(t, sqlDB, "a")
	at := func(raws []event.Raw) event.Position {
		return event.Position{ID: raws[len(raws)-1].ID, Time: raws[len(raws)-1].Time}
	}
	pos := at(eventsAfter(t, s, 0))
	sequence := func(what string, from event.Position, handed bool, events int, more bool) db.Sequenced {
		t.Helper()
		got, err := s.SequenceAfter(ctx, from)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if got.Handed != handed || len(got.Events) != events || got.More != more {
			t.Fatalf("%s: handed %v, %d events, more %v; want %v, %d, %v", what, got.Handed, len(got.Events), got.More, handed, events, more)
		}
		return got
	}

	sequence("nothing new", pos, true, 0, false)
	dbtest.SetStatus(t, sqlDB, "a", "processing")
	got := sequence("a's change", pos, true, 1, false)
	if st := statusOf(t, got.Events[0]); st.Status != "processing" || got.Events[0].ID <= pos.ID {
		t.Fatalf("handed %+v, want a's change to processing after %d", got.Events[0], pos.ID)
	}
	if read := eventsAfter(t, s, pos.ID); len(read) != 1 || read[0].ID != got.Events[0].ID || !read[0].Time.Equal(got.Events[0].Time) {
		t.Fatalf("the log holds %+v after %d, the sequencer handed %+v", read, pos.ID, got.Events)
	}
	pos = at(got.Events)

	dbtest.SetStatus(t, sqlDB, "a", "processed")
	if err := other.Sequence(ctx); err != nil { // another replica
		t.Fatal(err)
	}
	sequence("after another replica sequenced", pos, false, 0, false)
	pos = at(eventsAfter(t, s, pos.ID))

	dbtest.SetStatus(t, sqlDB, "a", "failed")
	sequence("a position in another log", event.Position{ID: pos.ID, Time: pos.Time.Add(time.Millisecond)}, false, 0, false)
	pos = at(eventsAfter(t, s, pos.ID))

	big := `SELECT pgsse.publish('test.big', 'big', jsonb_build_object('s', repeat('x', $1::int)))`
	tx := dbtest.Begin(t, sqlDB, big, db.MaxReadBytes/2+1)
	if _, err := tx.Exec(big, db.MaxReadBytes/2+1); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	sequence("two events over MaxReadBytes together", pos, false, 0, false)
	pos = at(eventsAfter(t, s, pos.ID))
	dbtest.Exec(t, sqlDB, big, db.MaxReadBytes+1)
	pos = at(sequence("one event over MaxReadBytes", pos, true, 1, false).Events)

	dbtest.Exec(t, sqlDB, `INSERT INTO videos (id, created_at, updated_at, raw_file_path)
		SELECT 'v' || i, now(), now(), '/raw' FROM generate_series(1, 10001) i`)
	pos = at(sequence("the first batch of 10 001 videos", pos, true, 10000, true).Events)
	sequence("the rest", pos, true, 1, false)
}
