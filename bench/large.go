package main

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
)

// largeReplay is the memory scenario: one transaction of events of size bytes
// each, then clients resuming from before it, so that every one replays it
// from the log at once. It returns the server's peak resident memory (VmHWM)
// and fails unless every client got every event once, in order.
func largeReplay(ctx context.Context, db *sql.DB, base string, pid, clients, events, size int) (peakRSS float64, err error) {
	var head int64
	if err := db.QueryRowContext(ctx, `SELECT pgsse.sequence(1000000), coalesce((SELECT max(id) FROM pgsse.events), 0)`).Scan(new(int), &head); err != nil {
		return 0, err
	}
	if _, err := db.ExecContext(ctx, `
		SELECT pgsse.publish('bench.blob', 'videos/large', jsonb_build_object('i', i, 'blob', repeat(md5(i::text), $2 / 32)))
		FROM generate_series(1, $1) AS i`, events, size); err != nil {
		return 0, fmt.Errorf("publish: %w", err)
	}
	time.Sleep(2 * time.Second) // the listener has read it, the hub's history could not keep it all
	var g errgroup.Group
	for range clients {
		g.Go(func() error { return readIDs(ctx, base+"/events?topic=videos/large", head, events) })
	}
	if err := g.Wait(); err != nil {
		return 0, err
	}
	return peakRSSOf(pid), nil
}

// readIDs resumes after head and reads until n events arrived, checking ids
// come in order, once each.
func readIDs(ctx context.Context, url string, head int64, n int) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Last-Event-ID", strconv.FormatInt(head, 10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return countIDs(resp, head, n, "event: bench.blob")
}

// countIDs reads resp until n events whose event line is eventLine arrived,
// checking their ids rise from head, once each.
func countIDs(resp *http.Response, head int64, n int, eventLine string) error {
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 8<<20)
	last, got, id := head, 0, int64(0)
	for got < n && sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "id: "); ok {
			id, _ = strconv.ParseInt(v, 10, 64)
		}
		if line == eventLine { // comes after its id: line
			if id <= last {
				return fmt.Errorf("id %d after %d", id, last)
			}
			last, got = id, got+1
		}
	}
	if got < n {
		return fmt.Errorf("got %d of %d events: %v", got, n, sc.Err())
	}
	return nil
}

// peakRSSOf reads a process's VmHWM, in bytes.
func peakRSSOf(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb * 1024
		}
	}
	return 0
}
