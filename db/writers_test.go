package db_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"pgsse/event"
	"pgsse/internal/dbtest"
)

// TestEvents_WritersNeverWaitForEachOther: what an application transaction does
// around its events (deferred constraints in either order, SET CONSTRAINTS ALL
// IMMEDIATE, sitting idle) never makes another writer wait because of pgsse.
// Each case runs first on the same schema with pgsse's triggers disabled, which
// shows the case itself commits there, then with them. The other writer runs
// under lock_timeout, so waiting for pgsse's id lock fails it (it used to wait
// for, or deadlock with, the first transaction).
func TestEvents_WritersNeverWaitForEachOther(t *testing.T) {
	cases := []struct {
		name string
		// first leaves its transaction open with an event published; commitBlocks:
		// its COMMIT waits for a row lock on parent 1, held by the other writer
		// or, with bystander, by a third transaction that writes no event.
		first        []string
		commitBlocks bool
		bystander    bool
	}{
		{"DeferredForeignKeyAfterEvent", []string{setStatusA, insertChild}, true, false},
		{"DeferredForeignKeyBeforeEvent", []string{insertChild, setStatusA}, true, false},
		{"CommitWaitsForUnrelatedRowLock", []string{setStatusA, insertChild}, true, true},
		{"SetConstraintsAllImmediateThenPause", []string{setStatusA, `SET CONSTRAINTS ALL IMMEDIATE`}, false, false},
		{"IdleInTransactionAfterEvent", []string{setStatusA}, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, withPgsse := range []bool{false, true} {
				url := dbtest.New(t)
				sqlDB, s := dbtest.Open(t, url), mustOpen(t, url)
				dbtest.Exec(t, sqlDB, `
					CREATE TABLE parents (id int PRIMARY KEY);
					INSERT INTO parents VALUES (1);
					CREATE TABLE children (id serial PRIMARY KEY,
						parent int REFERENCES parents DEFERRABLE INITIALLY DEFERRED)`)
				dbtest.InsertVideo(t, sqlDB, "a")
				dbtest.InsertVideo(t, sqlDB, "b")
				head := eventsAfter(t, s, 0)[1].ID
				if !withPgsse {
					dbtest.Exec(t, sqlDB, `ALTER TABLE videos DISABLE TRIGGER pgsse_video_status_insert,
						DISABLE TRIGGER pgsse_video_status_update`)
				}

				// The other writer changes b's status, holding parent 1 unless a
				// bystander does.
				lockParent := `SELECT FROM parents WHERE id = 1 FOR UPDATE`
				var bystander *sql.Tx
				if tc.bystander {
					bystander = dbtest.Begin(t, sqlDB, lockParent)
					lockParent = `SELECT 1`
				}
				other := dbtest.Begin(t, sqlDB, `SET LOCAL lock_timeout = '5s'`)
				for _, q := range []string{lockParent, `UPDATE videos SET processing_status = 'processed' WHERE id = 'b'`} {
					if _, err := other.Exec(q); err != nil {
						t.Fatal(q, err)
					}
				}
				first := dbtest.Begin(t, sqlDB, `SELECT 1`)
				for _, q := range tc.first {
					if _, err := first.Exec(q); err != nil {
						t.Fatal(q, err)
					}
				}
				firstDone := make(chan error, 1)
				if tc.commitBlocks {
					go func() { firstDone <- first.Commit() }()
					waitForLockWait(t, sqlDB, "COMMIT")
				}

				start := time.Now()
				if err := other.Commit(); err != nil {
					t.Fatalf("pgsse %v: the other writer's commit: %v", withPgsse, err)
				}
				t.Logf("pgsse %v: the other writer committed in %v", withPgsse, time.Since(start))
				if bystander != nil {
					if err := bystander.Commit(); err != nil {
						t.Fatal(err)
					}
				}
				if !tc.commitBlocks {
					firstDone <- first.Commit()
				}
				if err := <-firstDone; err != nil {
					t.Fatalf("pgsse %v: the first writer's commit: %v", withPgsse, err)
				}
				if withPgsse {
					assertStatusEvents(t, eventsAfter(t, s, head), "b", "a")
				}
			}
		})
	}
}

const (
	setStatusA  = `UPDATE videos SET processing_status = 'processed' WHERE id = 'a'`
	insertChild = `INSERT INTO children (parent) VALUES (1)`
)

// assertStatusEvents checks that raws are video.status events of ids, in order.
func assertStatusEvents(t *testing.T, raws []event.Raw, ids ...string) {
	t.Helper()
	if len(raws) != len(ids) {
		t.Fatalf("events %+v, want status changes of %v", raws, ids)
	}
	for i, r := range raws {
		if got := statusOf(t, r).VideoID; got != ids[i] {
			t.Errorf("event %d is of %s, want %s", r.ID, got, ids[i])
		}
	}
}

// TestVideoSnapshot_UnsequencedChange: a change committed but not yet sequenced
// is in the state, so the snapshot's position must cover its event: a reader
// continuing from it does not get the change a second time.
func TestVideoSnapshot_UnsequencedChange(t *testing.T) {
	url := dbtest.New(t)
	sqlDB, s := dbtest.Open(t, url), mustOpen(t, url)
	dbtest.InsertVideo(t, sqlDB, "a")
	dbtest.SetStatus(t, sqlDB, "a", "processed") // in pgsse.incoming, no id yet

	position, snaps, err := s.VideoSnapshot(context.Background(), []string{"a"})
	if err != nil {
		t.Fatal(err)
	}
	if len(snaps) != 1 || snaps[0].Data.(*event.VideoStatus).Status != "processed" {
		t.Fatalf("snapshot %+v, want a processed", snaps)
	}
	if later := eventsAfter(t, s, position); len(later) != 0 {
		t.Errorf("after the snapshot's position %d: %d events of a, already in its state", position, len(later))
	}
}

// TestLogStats_Unsequenced: committed events waiting for an id are counted, so
// an operator sees when no replica sequences.
func TestLogStats_Unsequenced(t *testing.T) {
	url := dbtest.New(t)
	sqlDB, s := dbtest.Open(t, url), mustOpen(t, url)
	dbtest.InsertVideo(t, sqlDB, "a")
	dbtest.InsertVideo(t, sqlDB, "b")
	for _, want := range []float64{2, 0} {
		st, err := s.LogStats(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st.Unsequenced != want {
			t.Errorf("unsequenced = %v, want %v", st.Unsequenced, want)
		}
		eventsAfter(t, s, 0) // sequences
	}
}
