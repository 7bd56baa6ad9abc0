package main

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"sync/atomic"
)

// writer commits one event per transaction, as a processing worker would: a
// row update through the trigger, or a pgsse.publish call.
type writer struct {
	db      *sql.DB
	mode    string // "update" or "publish"
	topics  []string
	rate    float64 // events per second; 0: as fast as the connections go
	conns   int
	commits atomic.Int64
	errors  atomic.Int64
}

// prepare creates the videos the writer updates.
func (w *writer) prepare(ctx context.Context) error {
	for i := range w.topics {
		if _, err := w.db.ExecContext(ctx, `
			INSERT INTO videos (id, created_at, updated_at, raw_file_path) VALUES ($1, now(), now(), '/bench')
			ON CONFLICT (id) DO NOTHING`, fmt.Sprint("bench", i)); err != nil {
			return fmt.Errorf("prepare videos: %w", err)
		}
	}
	return nil
}

// run writes until ctx ends.
func (w *writer) run(ctx context.Context) {
	pace := newPacer(ctx, w.rate, w.conns)
	var wg sync.WaitGroup
	var seq atomic.Int64
	for range w.conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for pace.next() {
				n := seq.Add(1)
				i := int(n) % len(w.topics)
				var err error
				if w.mode == "publish" {
					_, err = w.db.ExecContext(ctx, `SELECT pgsse.publish('video.progress', $1, json_build_object('video_id', $2::text, 'percent', $3::int % 101)::jsonb)`,
						w.topics[i], fmt.Sprint("bench", i), n)
				} else {
					_, err = w.db.ExecContext(ctx, `UPDATE videos SET processing_status = $2 WHERE id = $1`, fmt.Sprint("bench", i), fmt.Sprint("s", n))
				}
				if err == nil {
					w.commits.Add(1)
				} else if ctx.Err() == nil {
					w.errors.Add(1)
				}
			}
		}()
	}
	wg.Wait()
}

// head returns the newest event id, once every committed event has one.
func head(ctx context.Context, db *sql.DB) (int64, error) {
	if _, err := db.ExecContext(ctx, `SELECT pgsse.sequence(1000000)`); err != nil {
		return 0, err
	}
	var id int64
	err := db.QueryRowContext(ctx, `SELECT coalesce(max(id), 0) FROM pgsse.events`).Scan(&id)
	return id, err
}

// expected counts the log's events per topic in (from, to].
func expected(ctx context.Context, db *sql.DB, from, to int64) (map[string]int64, int64, error) {
	rows, err := db.QueryContext(ctx, `SELECT topic, count(*) FROM pgsse.events WHERE id > $1 AND id <= $2 GROUP BY topic`, from, to)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	out := map[string]int64{}
	var total int64
	for rows.Next() {
		var t string
		var n int64
		if err := rows.Scan(&t, &n); err != nil {
			return nil, 0, err
		}
		out[t] = n
		total += n
	}
	return out, total, rows.Err()
}
