package e2e

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"pgsse/internal/dbtest"
)

// TestStream_ThroughTransactionPooler: with DATABASE_URL through PgBouncer in
// transaction mode and PGSSE_LISTEN_DATABASE_URL direct, pgsse migrates, is
// ready, and delivers by the doorbell (the safety poll is off in effect).
func TestStream_ThroughTransactionPooler(t *testing.T) {
	bouncer := dbtest.NewPgBouncer(t)
	direct := dbtest.New(t)
	p := startPgsse(t, bouncer.URL(direct), "PGSSE_LISTEN_DATABASE_URL="+direct, "PGSSE_POLL_INTERVAL=1h")
	s := open(t, p.URL+"/events?topic=videos/*", "")
	time.Sleep(200 * time.Millisecond) // subscribed
	dbtest.InsertVideo(t, dbtest.Open(t, direct), "a")
	if ev := s.next(t); ev.Type != "video.status" || ev.env.Topic != "videos/a" {
		t.Fatalf("got %s %s, want a's insert", ev.Type, ev.Data)
	}
}

// TestStream_ListenThroughPoolerFlagged: LISTEN through a transaction-mode
// pooler succeeds and then hears nothing. pgsse used to report the listener
// connected and ready while delivery silently fell back to the poll; now
// /readyz fails naming listener_notifications and one error line says what to
// set. Events still arrive, by the poll.
func TestStream_ListenThroughPoolerFlagged(t *testing.T) {
	bouncer := dbtest.NewPgBouncer(t)
	direct := dbtest.New(t)
	p := launchPgsse(t, freePort(t), bouncer.URL(direct), "PGSSE_POLL_INTERVAL=300ms")
	var body string
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(body, "listener_notifications"); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("/readyz never named listener_notifications; last answer %q", body)
		}
		resp, err := http.Get(p.URL + "/readyz")
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if body = string(b); resp.StatusCode == http.StatusOK {
			t.Fatalf("/readyz 200 (%s) with LISTEN through a transaction pooler", body)
		}
	}
	for deadline := time.Now().Add(20 * time.Second); !hasLine(p.logs.String(), "PGSSE_LISTEN_DATABASE_URL"); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no log line tells the operator to set PGSSE_LISTEN_DATABASE_URL")
		}
	}
	if resp, err := http.Get(p.URL + "/readyz"); err != nil || resp.StatusCode == http.StatusOK {
		t.Fatalf("/readyz after the probe failed: %v %v, want 503", resp, err)
	} else {
		resp.Body.Close()
	}
	s := open(t, p.URL+"/events?topic=videos/*", "")
	time.Sleep(200 * time.Millisecond)
	dbtest.InsertVideo(t, dbtest.Open(t, direct), "a")
	if ev := s.next(t); ev.env.Topic != "videos/a" {
		t.Fatalf("got %s %s, want a's insert by the poll", ev.Type, ev.Data)
	}
}
