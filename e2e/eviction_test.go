package e2e

import (
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

	stalledClient(t, p.URL+"/events?topic=videos/*")
	publishBulk(t, sqlDB, 5) // ~4 MB: far more than the socket buffers hold
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
