package db_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"pgsse/db"
	"pgsse/internal/dbtest"
)

// TestMigrate_ThroughTransactionPooler: migrations run through PgBouncer in
// transaction mode, again and again, and leave no lock behind. The migration
// lock used to be a session lock: taken on one server connection, "released"
// on another, it stayed held and the next run waited forever. Events are
// written, sequenced and read through the pooler too.
func TestMigrate_ThroughTransactionPooler(t *testing.T) {
	bouncer := dbtest.NewPgBouncer(t)
	direct := dbtest.NewEmpty(t)
	url := bouncer.URL(direct)
	// Three server connections in the pool, handed out in turn: consecutive
	// statements of one client land on different ones.
	warm := dbtest.Open(t, url)
	var txs []*sql.Tx
	for range 3 {
		txs = append(txs, dbtest.Begin(t, warm, `SELECT 1`))
	}
	for _, tx := range txs {
		tx.Commit()
	}
	for run := range 4 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		s := mustOpen(t, url)
		err := s.Migrate(ctx, nil)
		cancel()
		if err != nil {
			t.Fatalf("migration run %d through the pooler: %v", run, err)
		}
		var held int
		if err := dbtest.Open(t, direct).QueryRow(`SELECT count(*) FROM pg_locks
			WHERE locktype = 'advisory' AND classid = $1 AND objid = $2`, db.LockClass, db.LockMigrate).Scan(&held); err != nil {
			t.Fatal(err)
		}
		if held != 0 {
			t.Fatalf("after migration run %d: the migration lock is still held (%d)", run, held)
		}
	}

	// The application's own lib/pq connection through the pooler needs
	// binary_parameters too (pgsse's own connections get it by default).
	s, pooled := mustOpen(t, url), dbtest.Open(t, url+"&binary_parameters=yes")
	dbtest.InsertVideo(t, pooled, "a")
	dbtest.SetStatus(t, pooled, "a", "processed")
	if raws := eventsAfter(t, s, 0); len(raws) != 2 || statusOf(t, raws[1]).Status != "processed" {
		t.Fatalf("events through the pooler: %+v, want a's two", raws)
	}
}
