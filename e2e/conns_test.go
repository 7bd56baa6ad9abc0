package e2e

import (
	"context"
	"fmt"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"pgsse/internal/dbtest"
	"pgsse/internal/doctest"
)

// TestConnections_PerReplica: one pgsse never holds more database
// connections than docs/database.md tells operators to size max_connections
// by, from its start (migrations) through a herd of clients opening streams
// with snapshots while the log moves.
func TestConnections_PerReplica(t *testing.T) {
	line := doctest.Line(t, "docs/database.md", "per replica, at most")
	var documented int
	fmt.Sscan(regexp.MustCompile(`\*\*(\d+)\*\*`).FindStringSubmatch(line)[1], &documented)

	dbURL := dbtest.NewEmpty(t)
	const tag = "conns-test" // the test's own connections, not counted
	writer := dbtest.Open(t, dbURL+"&application_name="+tag)
	var name string
	if err := writer.QueryRow(`SELECT current_database()`).Scan(&name); err != nil {
		t.Fatal(err)
	}
	admin := dbtest.Open(t, dbtest.ServerURL(t))
	var peak atomic.Int64
	ctx, stop := context.WithCancel(context.Background())
	var sampled sync.WaitGroup
	sampled.Add(1)
	go func() {
		defer sampled.Done()
		for ctx.Err() == nil {
			var n int64
			if err := admin.QueryRowContext(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name <> $2`, name, tag).Scan(&n); err == nil && n > peak.Load() {
				peak.Store(n)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()

	p := startPgsse(t, dbURL)
	const clients = 200
	for i := range clients {
		dbtest.InsertVideo(t, writer, fmt.Sprint("v", i))
	}
	var herd sync.WaitGroup
	for i := range clients {
		herd.Add(1)
		go func() {
			defer herd.Done()
			s := open(t, fmt.Sprintf("%s/events?topic=videos/v%d", p.URL, i), "")
			s.next(t) // the snapshot
			s.close()
		}()
	}
	for i := range clients {
		dbtest.SetStatus(t, writer, fmt.Sprint("v", i), "processing")
	}
	herd.Wait()
	stop()
	sampled.Wait()
	if peak.Load() == 0 {
		t.Fatal("no pgsse connection was ever seen: the sampler counts nothing")
	}
	if got := peak.Load(); got > int64(documented) {
		t.Errorf("pgsse held %d connections at once; docs/database.md says at most %d", got, documented)
	}
	t.Logf("peak %d connections (documented at most %d)", peak.Load(), documented)
}
