package main

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"pgsse/internal/dbtest"
)

// TestStream_WriteDeadlineCounted: a client that stops reading, with a queue too
// large to overflow, is dropped by the write deadline and counted and logged as
// write_failed. It used to count as client_gone: net/http cancels the request's
// context when the write fails, and the stream looked at the context first.
func TestStream_WriteDeadlineCounted(t *testing.T) {
	url := dbtest.New(t)
	sqlDB := dbtest.Open(t, url)
	p := startPgsse(t, url, "PGSSE_WRITE_TIMEOUT=500ms", "PGSSE_QUEUE=100000")

	conn, err := net.Dial("tcp", strings.TrimPrefix(p.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.(*net.TCPConn).SetReadBuffer(4096)
	fmt.Fprintf(conn, "GET /events?topic=videos/* HTTP/1.1\r\nHost: x\r\n\r\n")
	time.Sleep(300 * time.Millisecond)

	payload := strings.Repeat("x", 4000)
	for batch := range 5 { // ~4 MB: far more than the socket buffers hold
		dbtest.Exec(t, sqlDB, `SELECT pgsse.publish('video.progress', 'videos/s' || i, json_build_object('video_id', 's' || i, 'percent', 1, 'stage', $1::text)::jsonb)
			FROM generate_series($2::int, $2::int + 199) i`, payload, batch*200)
	}
	for deadline := time.Now().Add(15 * time.Second); !hasLine(p.logs.String(), `"message":"stream ended"`); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the stalled stream was not dropped")
		}
	}
	if !hasLine(p.logs.String(), `"reason":"write_failed"`) {
		t.Errorf("the stalled stream ended for another reason than write_failed:\n%s", p.logs)
	}
	if m := scrape(t, p.URL); m["pgsse_streams_closed_total{reason=write_failed}"] != 1 || m["pgsse_streams_closed_total{reason=client_gone}"] != 0 {
		t.Errorf("closed: write_failed %v, client_gone %v; want 1 and 0",
			m["pgsse_streams_closed_total{reason=write_failed}"], m["pgsse_streams_closed_total{reason=client_gone}"])
	}
}
