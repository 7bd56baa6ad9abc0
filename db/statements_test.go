package db_test

import (
	"context"
	"fmt"
	"testing"

	"pgsse/db"
	"pgsse/event"
	"pgsse/internal/dbtest"
)

// change is what a video.status event says, for comparison.
type change struct{ id, status, previous string }

func changesOf(t *testing.T, raws []event.Raw) []change {
	t.Helper()
	out := make([]change, len(raws))
	for i, r := range raws {
		st := statusOf(t, r)
		out[i] = change{id: st.VideoID, status: st.Status}
		if st.PreviousStatus != nil {
			out[i].previous = *st.PreviousStatus
		}
		if want, _ := event.VideoTopic(st.VideoID); r.Topic != want {
			t.Errorf("event %d is on %s, want %s", r.ID, r.Topic, want)
		}
	}
	return out
}

func wantChanges(t *testing.T, what string, got []change, want ...change) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s: events %v, want %v", what, got, want)
	}
}

// TestVideosTrigger_Statements: the triggers fire once per statement and
// publish one event per video whose status changed, in the order the rows
// changed, each with its own previous status: the old and new images of the
// statement are paired by position, so a statement that renames ids pairs
// them right too. A statement that changes no status appends nothing.
func TestVideosTrigger_Statements(t *testing.T) {
	url := dbtest.New(t)
	sqlDB, s := dbtest.Open(t, url), mustOpen(t, url)
	head := func() int64 {
		pos, err := s.Head(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return pos.ID
	}
	pending := func() (n int) {
		if err := sqlDB.QueryRow(`SELECT count(*) FROM pgsse.incoming`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	dbtest.Exec(t, sqlDB, `INSERT INTO videos (id, created_at, updated_at, raw_file_path, processing_status) VALUES
		('c', now(), now(), '/c', 'pending'), ('a', now(), now(), '/a', 'uploaded'), ('b', now(), now(), '/b', 'pending')`)
	wantChanges(t, "a three-row INSERT", changesOf(t, eventsAfter(t, s, 0)),
		change{"c", "pending", ""}, change{"a", "uploaded", ""}, change{"b", "pending", ""})

	h := head()
	dbtest.Exec(t, sqlDB, `UPDATE videos SET updated_at = now()`)
	if n := pending(); n != 0 {
		t.Errorf("an UPDATE that changes no status left %d rows in pgsse.incoming", n)
	}
	wantChanges(t, "an UPDATE of other columns", changesOf(t, eventsAfter(t, s, h)))

	h = head()
	dbtest.Exec(t, sqlDB, `UPDATE videos SET id = id || '2',
		processing_status = CASE id WHEN 'a' THEN 'uploaded' WHEN 'b' THEN 'processing' ELSE 'failed' END`)
	got := changesOf(t, eventsAfter(t, s, h))
	if len(got) == 2 && got[0].id > got[1].id {
		got[0], got[1] = got[1], got[0] // the rows' order is the table's: not the point here
	}
	wantChanges(t, "an UPDATE renaming every id, a's status unchanged", got,
		change{"b2", "processing", "pending"}, change{"c2", "failed", "pending"})

	h = head()
	dbtest.Exec(t, sqlDB, `INSERT INTO videos (id, created_at, updated_at, raw_file_path, processing_status) VALUES
		('b2', now(), now(), '/b', 'processed'), ('d', now(), now(), '/d', 'pending')
		ON CONFLICT (id) DO UPDATE SET processing_status = excluded.processing_status`)
	got = changesOf(t, eventsAfter(t, s, h))
	if len(got) == 2 && got[0].id != "b2" {
		got[0], got[1] = got[1], got[0] // one INSERT and one UPDATE statement trigger: either first
	}
	wantChanges(t, "INSERT … ON CONFLICT DO UPDATE", got,
		change{"b2", "processed", "processing"}, change{"d", "pending", ""})
}

// TestVideosTrigger_LargeStatement: a statement of more videos than one row of
// pgsse.incoming holds (10 000) is split over several, and the sequencer
// moves them over several transactions; every video's event comes once, in
// the order the rows were inserted.
func TestVideosTrigger_LargeStatement(t *testing.T) {
	url := dbtest.New(t)
	sqlDB, s := dbtest.Open(t, url), mustOpen(t, url)
	const n = 25001
	dbtest.Exec(t, sqlDB, `INSERT INTO videos (id, created_at, updated_at, raw_file_path)
		SELECT 'v' || i, now(), now(), '/raw' FROM generate_series(1, $1::int) i`, n)
	var rows int
	if err := sqlDB.QueryRow(`SELECT count(*) FROM pgsse.incoming`).Scan(&rows); err != nil || rows != 3 {
		t.Errorf("pgsse.incoming holds %d rows (%v), want 3 for %d videos", rows, err, n)
	}
	raws := eventsAfter(t, s, 0)
	if len(raws) != n {
		t.Fatalf("events = %d, want %d", len(raws), n)
	}
	for i, r := range raws {
		if id, want := statusOf(t, r).VideoID, fmt.Sprintf("v%d", i+1); id != want {
			t.Fatalf("event %d (id %d) is %s's, want %s's", i, r.ID, id, want)
		}
	}
}

// TestVideosTrigger_Partitioned: a partitioned videos table keeps the row
// triggers, which PostgreSQL clones onto its partitions: a writer that names a
// partition is seen too (a statement trigger on the parent fires only for
// statements naming the parent).
func TestVideosTrigger_Partitioned(t *testing.T) {
	url := dbtest.NewEmpty(t)
	sqlDB := dbtest.Open(t, url)
	dbtest.Exec(t, sqlDB, `
		CREATE SCHEMA parted;
		CREATE TABLE parted.videos (
			id TEXT NOT NULL,
			created_at TIMESTAMP WITH TIME ZONE NOT NULL,
			updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
			raw_file_path TEXT NOT NULL,
			processed_file_path TEXT,
			processing_status TEXT NOT NULL DEFAULT 'pending') PARTITION BY LIST (raw_file_path);
		CREATE TABLE parted.videos_a PARTITION OF parted.videos FOR VALUES IN ('/a');
		CREATE TABLE parted.videos_rest PARTITION OF parted.videos DEFAULT`)
	s, err := db.Open(url, 0, db.VideosSchema("parted"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Migrate(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	dbtest.Exec(t, sqlDB, `INSERT INTO parted.videos (id, created_at, updated_at, raw_file_path) VALUES ('a', now(), now(), '/a')`)
	dbtest.Exec(t, sqlDB, `UPDATE parted.videos_a SET processing_status = 'processing' WHERE id = 'a'`)
	dbtest.Exec(t, sqlDB, `UPDATE parted.videos SET processing_status = 'processed', processed_file_path = '/p' WHERE id = 'a'`)
	wantChanges(t, "writes to a partitioned table and to its partition", changesOf(t, eventsAfter(t, s, 0)),
		change{"a", "pending", ""}, change{"a", "processing", "pending"}, change{"a", "processed", "processing"})
}
