package db_test

import (
	"context"
	"testing"

	"pgsse/db"
	"pgsse/event"
	"pgsse/internal/dbtest"
)

// TestEventsAfter_BoundedByBytes: reads of large events come in batches of at
// most db.MaxReadBytes (one event alone when it is larger), each saying
// whether more follow, until all were read once, in order. Highly
// compressible data is bounded by its size as sent, not as stored.
func TestEventsAfter_BoundedByBytes(t *testing.T) {
	url := dbtest.New(t)
	s := mustOpen(t, url)
	dbtest.Exec(t, dbtest.Open(t, url), `
		SELECT pgsse.publish('test.blob', 'videos/x', jsonb_build_object('blob', repeat('x', n)))
		FROM unnest(ARRAY[300000, 300000, 300000, 300000, 3000000, 10, 10]) AS n`)
	if err := s.Sequence(context.Background()); err != nil {
		t.Fatal(err)
	}
	var batches [][]event.Raw
	pos, more := event.Position{}, true
	for more {
		batch, m, err := s.EventsAfter(context.Background(), pos, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(batch) == 0 {
			t.Fatalf("an empty batch said more = %v", m)
		}
		size := 0
		for _, r := range batch {
			size += len(r.Data)
		}
		if len(batch) > 1 && size > db.MaxReadBytes {
			t.Errorf("batch of %d events, %d bytes: over MaxReadBytes", len(batch), size)
		}
		batches, more = append(batches, batch), m
		pos = event.Position{ID: batch[len(batch)-1].ID, Time: batch[len(batch)-1].Time}
	}
	var ids []int64
	for _, b := range batches {
		for _, r := range b {
			ids = append(ids, r.ID)
		}
	}
	if len(ids) != 7 || len(batches) < 3 {
		t.Fatalf("read %d events in %d batches, want 7 in at least 3", len(ids), len(batches))
	}
	for i := 1; i < len(ids); i++ {
		if ids[i] <= ids[i-1] {
			t.Fatalf("ids out of order: %v", ids)
		}
	}
}
