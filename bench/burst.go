package main

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

// burst is the catch-up scenario: streams on videos/*, then one UPDATE of rows
// videos. It returns the server's peak resident memory and fails unless every
// stream got every event once, in order, on its first connection.
func burst(ctx context.Context, db *sql.DB, base string, pid, streams, rows int) (peakRSS float64, err error) {
	if _, err := db.ExecContext(ctx, `INSERT INTO videos (id, created_at, updated_at, raw_file_path)
		SELECT 'burst' || i, now(), now(), '/raw' FROM generate_series(1, $1) i`, rows); err != nil {
		return 0, err
	}
	time.Sleep(3 * time.Second) // the inserts reach the hub before the streams open
	var head int64
	if err := db.QueryRowContext(ctx, `SELECT pgsse.sequence(10000), coalesce((SELECT max(id) FROM pgsse.events), 0)`).Scan(new(int), &head); err != nil {
		return 0, err
	}
	var g errgroup.Group
	var opened atomic.Int64
	for range streams {
		g.Go(func() error { return readKind(ctx, base+"/events?topic=videos/*", head, rows, "video.status", &opened) })
	}
	for opened.Load() < int64(streams) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	if _, err := db.ExecContext(ctx, `UPDATE videos SET processing_status = 'processed' WHERE id LIKE 'burst%'`); err != nil {
		return 0, err
	}
	if err := g.Wait(); err != nil {
		return 0, err
	}
	return peakRSSOf(pid), nil
}

// readKind resumes after head, once, and reads until n events of kind arrived
// in id order; opened is counted when the response starts.
func readKind(ctx context.Context, url string, head int64, n int, kind string, opened *atomic.Int64) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Last-Event-ID", fmt.Sprint(head))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	opened.Add(1)
	return countIDs(resp, head, n, "event: "+kind)
}
