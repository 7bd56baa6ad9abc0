package e2e

import (
	"testing"

	"pgsse/internal/dbtest"
)

// TestStream_BurstCaughtUpInPlace: one UPDATE of 20 000 videos, watched by 20
// videos/* streams whose queue holds 256 events. Every stream falls behind the
// burst and is caught up inside its stream, from the hub's history or the log:
// each gets all 20 000 once, in order, with no reconnect. (Every subscriber of
// those topics used to be closed with queue_overflow and come back at once.)
func TestStream_BurstCaughtUpInPlace(t *testing.T) {
	url := dbtest.New(t)
	sqlDB := dbtest.Open(t, url)
	dbtest.Exec(t, sqlDB, `INSERT INTO videos (id, created_at, updated_at, raw_file_path)
		SELECT 'b' || i, now(), now(), '/raw' FROM generate_series(1, 20000) i`)
	sequence(t, sqlDB) // history, before pgsse starts
	p := startPgsse(t, url, "PGSSE_QUEUE=256")
	var fs []*follower
	for range 20 {
		fs = append(fs, follow(t, "", p.URL+"/events?topic=videos/*"))
	}
	waitFor(t, func() bool { return scrape(t, p.URL)["pgsse_streams_open"] == 20 })
	head := logHead(t, sqlDB)

	dbtest.Exec(t, sqlDB, `UPDATE videos SET processing_status = 'processed'`)
	waitAllIDs(t, fs, logIDs(t, sqlDB, head, "videos/%"))
	for i, f := range fs {
		if n := f.connects.Load(); n != 1 {
			t.Errorf("client %d connected %d times, want once", i, n)
		}
	}
	m := scrape(t, p.URL)
	if m["pgsse_subscriber_evictions_total"] == 0 {
		t.Error("no queue overflowed: the burst did not test catching up")
	}
	t.Logf("overflows %v, caught up from memory %v, from the log %v", m["pgsse_subscriber_evictions_total"],
		m["pgsse_stream_catchups_total{source=memory}"], m["pgsse_stream_catchups_total{source=database}"])
}
