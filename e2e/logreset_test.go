package e2e

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"pgsse/db"
	"pgsse/internal/dbtest"
)

// TestStream_LogReplaced: the database is dropped and recreated under a running
// pgsse (as a restore, a point-in-time recovery or a failover to a lagging
// replica hands out ids again). Every open stream is told (stream.reset,
// log_reset) and continues on the new log, and nothing of the old log is served
// from memory afterwards: all without a restart.
func TestStream_LogReplaced(t *testing.T) {
	dbURL := dbtest.New(t)
	sqlDB := dbtest.Open(t, dbURL)
	for _, id := range []string{"a", "b", "c"} {
		dbtest.InsertVideo(t, sqlDB, id)
		dbtest.SetStatus(t, sqlDB, id, "processing")
	}
	sequence(t, sqlDB)
	p := startPgsse(t, dbURL, "PGSSE_POLL_INTERVAL=500ms")

	all := open(t, p.URL+"/events?topic=videos/*", "")
	one := open(t, p.URL+"/videos/a/events", "")
	if snap := one.next(t); !snap.env.Snapshot {
		t.Fatalf("got %s %s, want a's snapshot", snap.Type, snap.Data)
	}
	dbtest.SetStatus(t, sqlDB, "b", "processed") // id 7 in the old log
	if ev := all.next(t); ev.LastEventID != "7" {
		t.Fatalf("got %s %s id %s, want the old log's event 7", ev.Type, ev.Data, ev.LastEventID)
	}

	recreate(t, dbURL)
	sqlDB = dbtest.Open(t, dbURL)
	dbtest.InsertVideo(t, sqlDB, "a")            // id 1 in the new log
	dbtest.SetStatus(t, sqlDB, "a", "processed") // 2

	for name, s := range map[string]*openStream{"videos/*": all, "videos/a": one} {
		ev := s.next(t)
		if ev.Type != "stream.reset" || !strings.Contains(ev.Data, "log_reset") {
			t.Fatalf("%s: got %s %s, want stream.reset (log_reset)", name, ev.Type, ev.Data)
		}
	}
	// a's stream continues on the new log until a is processed there: a snapshot,
	// or the new log's events 1 and 2, depending on when the replacement was
	// noticed. Then every stream carries the new log's next event, and a fresh
	// one nothing of the old log.
	for done := false; !done; {
		ev := one.next(t)
		status, _ := ev.status()
		if ev.env.Topic != "videos/a" || ev.env.ID > 2 {
			t.Fatalf("videos/a after the reset: got %s %s, want the new log's a", ev.Type, ev.Data)
		}
		done = status == "processed"
	}
	fresh := open(t, p.URL+"/events?topic=videos/b", "")
	time.Sleep(200 * time.Millisecond) // subscribed
	dbtest.InsertVideo(t, sqlDB, "b")  // 3
	for name, s := range map[string]*openStream{"videos/*": all, "fresh videos/b": fresh} {
		for {
			ev := s.next(t)
			if ev.LastEventID == "3" && !ev.env.Snapshot {
				break
			}
			if name == "fresh videos/b" || (ev.LastEventID != "1" && ev.LastEventID != "2") {
				t.Fatalf("%s: got %s %s id %s, want the new log's event 3", name, ev.Type, ev.Data, ev.LastEventID)
			}
		}
	}
	old := open(t, p.URL+"/events?topic=videos/b", "7")
	if ev := old.next(t); ev.Type != "stream.reset" || !strings.Contains(ev.Data, "log_reset") {
		t.Fatalf("resume from the old log's 7: got %s %s, want stream.reset (log_reset)", ev.Type, ev.Data)
	}
	if !hasLine(p.logs.String(), "the event log was replaced") {
		t.Error("no log line says the event log was replaced")
	}
}

// recreate drops the database at dbURL and creates it again, migrated and empty.
func recreate(t *testing.T, dbURL string) {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimPrefix(u.Path, "/")
	admin := dbtest.Open(t, dbtest.ServerURL(t))
	dbtest.Exec(t, admin, `DROP DATABASE `+name+` WITH (FORCE)`)
	dbtest.Exec(t, admin, `CREATE DATABASE `+name)
	s, err := db.Open(dbURL, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Migrate(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
}
