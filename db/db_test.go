package db_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	neturl "net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lib/pq"
	"go.uber.org/goleak"

	"pgsse/db"
	"pgsse/event"
	"pgsse/internal/dbtest"
	"pgsse/migrations"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func mustOpen(t *testing.T, url string) *db.Store {
	t.Helper()
	s, err := db.Open(url, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// eventsAfter sequences what writers committed, as the listener does, and reads
// the log after after.
func eventsAfter(t *testing.T, s *db.Store, after int64) []event.Raw {
	t.Helper()
	if err := s.Sequence(context.Background()); err != nil {
		t.Fatal(err)
	}
	var raws []event.Raw
	for more, pos := true, (event.Position{}); more; {
		batch, m, err := s.EventsAfter(context.Background(), pos, 100000)
		if err != nil {
			t.Fatal(err)
		}
		raws, more = append(raws, batch...), m
		if len(batch) > 0 {
			pos = event.Position{ID: batch[len(batch)-1].ID, Time: batch[len(batch)-1].Time}
		}
	}
	for len(raws) > 0 && raws[0].ID <= after {
		raws = raws[1:]
	}
	return raws
}

func statusOf(t *testing.T, r event.Raw) *event.VideoStatus {
	t.Helper()
	ev, err := event.Decode(r)
	if err != nil {
		t.Fatal(err)
	}
	return ev.Data.(*event.VideoStatus)
}

func TestMigrate(t *testing.T) {
	t.Run("ExistingVideosWithLegacyTrigger", func(t *testing.T) {
		url := dbtest.NewEmpty(t)
		sqlDB := dbtest.Open(t, url)
		dbtest.CreateVideos(t, sqlDB, "videos")
		dbtest.Exec(t, sqlDB, `
			CREATE FUNCTION notify_upload_status() RETURNS trigger LANGUAGE plpgsql AS $$
			BEGIN
				PERFORM pg_notify('upload_status', NEW.id || ',' || NEW.processing_status);
				RETURN NEW;
			END $$;
			CREATE TRIGGER upload_status AFTER UPDATE OF processing_status ON videos
				FOR EACH ROW EXECUTE FUNCTION notify_upload_status();`)
		dbtest.InsertVideo(t, sqlDB, "old1")

		if err := mustOpen(t, url).Migrate(context.Background(), nil); err != nil {
			t.Fatal(err)
		}

		l := pq.NewListener(url, time.Millisecond, time.Second, nil)
		defer l.Close()
		if err := l.Listen("upload_status"); err != nil {
			t.Fatal(err)
		}
		dbtest.SetStatus(t, sqlDB, "old1", "processed")
		select {
		case n := <-l.Notify:
			if got, want := n.Extra, "old1,processed"; got != want {
				t.Errorf("legacy notification = %q, want %q", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("legacy trigger did not fire after migrating")
		}
		raws := eventsAfter(t, mustOpen(t, url), 0)
		if len(raws) != 1 || statusOf(t, raws[0]).Status != "processed" {
			t.Fatalf("events = %+v, want one video.status processed", raws)
		}
	})

	t.Run("ConcurrentAppliesOnce", func(t *testing.T) {
		url := dbtest.NewEmpty(t)
		var logs [4]bytes.Buffer
		var wg sync.WaitGroup
		errs := make([]error, len(logs))
		for i := range logs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s, err := db.Open(url, 0)
				if err != nil {
					errs[i] = err
					return
				}
				defer s.Close()
				errs[i] = s.Migrate(context.Background(), &logs[i])
			}()
		}
		wg.Wait()
		applied := 0
		for i := range logs {
			if errs[i] != nil {
				t.Errorf("migrate %d: %v", i, errs[i])
			}
			applied += strings.Count(logs[i].String(), "Applying:")
		}
		files, _ := fs.Glob(migrations.FS, "*.sql")
		if got, want := applied, len(files); got != want {
			t.Errorf("migration files applied = %d, want %d (each once)", got, want)
		}
	})

	t.Run("Idempotent", func(t *testing.T) {
		url := dbtest.New(t)
		var log bytes.Buffer
		if err := mustOpen(t, url).Migrate(context.Background(), &log); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(log.String(), "Applying:") {
			t.Errorf("second migrate applied again:\n%s", log.String())
		}
		if ok, err := mustOpen(t, url).MigrationsApplied(context.Background()); !ok || err != nil {
			t.Errorf("MigrationsApplied = %v, %v after migrating", ok, err)
		}
		if ok, _ := mustOpen(t, dbtest.NewEmpty(t)).MigrationsApplied(context.Background()); ok {
			t.Error("MigrationsApplied = true on an empty database")
		}
	})
}

func TestEvents_LegacyStatements(t *testing.T) {
	url := dbtest.New(t)
	sqlDB, s := dbtest.Open(t, url), mustOpen(t, url)
	dbtest.InsertVideo(t, sqlDB, "abc123")
	dbtest.SetStatus(t, sqlDB, "abc123", "processing")
	dbtest.SetStatus(t, sqlDB, "abc123", "processing") // no change: no event
	dbtest.Exec(t, sqlDB, `UPDATE videos SET processed_file_path = '/hls/abc123' WHERE id = 'abc123'`)
	dbtest.SetStatus(t, sqlDB, "abc123", "processed")

	raws := eventsAfter(t, s, 0)
	type want struct{ status, previous string }
	wants := []want{{"pending", ""}, {"processing", "pending"}, {"processed", "processing"}}
	if len(raws) != len(wants) {
		t.Fatalf("got %d events, want %d: %+v", len(raws), len(wants), raws)
	}
	for i, w := range wants {
		r := raws[i]
		p := statusOf(t, r)
		prev := ""
		if p.PreviousStatus != nil {
			prev = *p.PreviousStatus
		}
		if r.Kind != event.KindVideoStatus || r.Topic != "videos/abc123" || p.VideoID != "abc123" || p.Status != w.status || prev != w.previous {
			t.Errorf("event %d = %s %s %+v prev=%q, want status %q previous %q", i, r.Kind, r.Topic, p, prev, w.status, w.previous)
		}
		if i == 0 && p.PreviousStatus != nil {
			t.Errorf("INSERT event has previous_status %q, want null", *p.PreviousStatus)
		}
		if i > 0 && r.ID <= raws[i-1].ID {
			t.Errorf("ids not increasing: %d after %d", r.ID, raws[i-1].ID)
		}
	}
}

// TestEvents_CommitOrder is the case a plain bigserial gets wrong: T1 draws its
// id first but commits last. A reader that saw T2's event must still find T1's
// after it.
func TestEvents_CommitOrder(t *testing.T) {
	url := dbtest.New(t)
	sqlDB, s := dbtest.Open(t, url), mustOpen(t, url)
	dbtest.InsertVideo(t, sqlDB, "a")
	dbtest.InsertVideo(t, sqlDB, "b")
	cursor := eventsAfter(t, s, 0)[1].ID

	t1 := dbtest.Begin(t, sqlDB, `UPDATE videos SET processing_status = 'processed' WHERE id = 'a'`)
	dbtest.SetStatus(t, sqlDB, "b", "processed") // T2, committed while T1 is open

	seen := eventsAfter(t, s, cursor)
	if len(seen) != 1 || statusOf(t, seen[0]).VideoID != "b" {
		t.Fatalf("after T2: events %+v, want only b's", seen)
	}
	if err := t1.Commit(); err != nil {
		t.Fatal(err)
	}
	later := eventsAfter(t, s, seen[0].ID)
	if len(later) != 1 || statusOf(t, later[0]).VideoID != "a" {
		t.Fatalf("after T1: events after %d = %+v, want a's", seen[0].ID, later)
	}
}

func TestEvents_LargeTransaction(t *testing.T) {
	url := dbtest.New(t)
	sqlDB, s := dbtest.Open(t, url), mustOpen(t, url)
	dbtest.Exec(t, sqlDB, `INSERT INTO videos (id, created_at, updated_at, raw_file_path)
		SELECT 'v' || i, now(), now(), '/raw' FROM generate_series(1, 10000) i`)
	if err := s.Sequence(context.Background()); err != nil {
		t.Fatal(err)
	}
	headPos, err := s.Head(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	head := headPos.ID

	l := pq.NewListener(url, time.Millisecond, time.Second, nil)
	defer l.Close()
	if err := l.Listen("pgsse_incoming"); err != nil {
		t.Fatal(err)
	}
	dbtest.Exec(t, sqlDB, `UPDATE videos SET processing_status = 'processed'`)

	raws := eventsAfter(t, s, head)
	if got, want := len(raws), 10000; got != want {
		t.Fatalf("events = %d, want %d", got, want)
	}
	seen := map[string]bool{}
	for i, r := range raws {
		if r.ID != head+int64(i)+1 {
			t.Fatalf("event %d has id %d, want %d: one commit takes consecutive ids", i, r.ID, head+int64(i)+1)
		}
		if i > 0 && r.Time.Before(raws[i-1].Time) {
			t.Fatalf("event %d is older than event %d: ids must follow the order the rows changed", r.ID, raws[i-1].ID)
		}
		seen[statusOf(t, r).VideoID] = true
	}
	if len(seen) != 10000 {
		t.Errorf("distinct videos = %d, want 10000", len(seen))
	}
	// One doorbell for the whole transaction.
	select {
	case <-l.Notify:
	case <-time.After(5 * time.Second):
		t.Fatal("no doorbell for the transaction")
	}
	select {
	case n := <-l.Notify:
		t.Errorf("second notification %+v for one commit", n)
	case <-time.After(200 * time.Millisecond):
	}
}

// TestEvents_Savepoint: the first staged event of a transaction arms the commit
// trigger; rolling it back to a savepoint must not leave later events unflushed.
func TestEvents_Savepoint(t *testing.T) {
	url := dbtest.New(t)
	sqlDB, s := dbtest.Open(t, url), mustOpen(t, url)
	dbtest.InsertVideo(t, sqlDB, "a")
	head := eventsAfter(t, s, 0)[0].ID

	ctx := context.Background()
	conn, err := sqlDB.Conn(ctx) // one session throughout: staging is per session
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, q := range []string{
		`BEGIN`,
		`SAVEPOINT s`,
		`UPDATE videos SET processing_status = 'x' WHERE id = 'a'`,
		`ROLLBACK TO SAVEPOINT s`,
		`UPDATE videos SET processing_status = 'processed' WHERE id = 'a'`,
		`COMMIT`,
	} {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			t.Fatal(q, err)
		}
	}
	raws := eventsAfter(t, s, head)
	if len(raws) != 1 || statusOf(t, raws[0]).Status != "processed" {
		t.Fatalf("events = %+v, want the one processed event", raws)
	}
	var staged int
	if err := conn.QueryRowContext(ctx, `SELECT count(*) FROM pgsse.incoming`).Scan(&staged); err != nil {
		t.Fatal(err)
	}
	if staged != 0 {
		t.Errorf("rows left in pgsse.incoming = %d, want 0", staged)
	}
}

// TestEvents_Serializable: serializable writers of different videos commit
// side by side; pgsse's staging must not make them conflict.
func TestEvents_Serializable(t *testing.T) {
	url := dbtest.New(t)
	sqlDB, s := dbtest.Open(t, url), mustOpen(t, url)
	dbtest.InsertVideo(t, sqlDB, "a")
	dbtest.InsertVideo(t, sqlDB, "b")
	head := eventsAfter(t, s, 0)[1].ID

	begin := func(id string) *sql.Tx {
		tx, err := sqlDB.BeginTx(context.Background(), &sql.TxOptions{Isolation: sql.LevelSerializable})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(`UPDATE videos SET processing_status = 'processed' WHERE id = $1`, id); err != nil {
			t.Fatal(err)
		}
		return tx
	}
	t1, t2 := begin("a"), begin("b")
	if err := t2.Commit(); err != nil {
		t.Fatalf("commit T2: %v", err)
	}
	if err := t1.Commit(); err != nil {
		t.Fatalf("commit T1: %v", err)
	}
	if n := len(eventsAfter(t, s, head)); n != 2 {
		t.Errorf("events = %d, want 2", n)
	}
}

func TestPublish(t *testing.T) {
	url := dbtest.New(t)
	sqlDB, s := dbtest.Open(t, url), mustOpen(t, url)

	big := map[string]any{"video_id": "a", "blob": strings.Repeat("é\n\r\"x", 20000)}
	data, _ := json.Marshal(big)
	dbtest.Exec(t, sqlDB, `SELECT pgsse.publish('thumbnail.ready', 'videos/a', $1)`, string(data))
	raws := eventsAfter(t, s, 0)
	if len(raws) != 1 {
		t.Fatalf("events = %d, want 1", len(raws))
	}
	var got map[string]any
	if err := json.Unmarshal(raws[0].Data, &got); err != nil {
		t.Fatal(err)
	}
	if got["blob"] != big["blob"] {
		t.Errorf("100 KB payload did not round-trip")
	}

	for _, tc := range []struct{ name, kind, topic, data string }{
		{"NoDot", "progress", "videos/a", `{}`},
		{"Reserved", "stream.reset", "videos/a", `{}`},
		{"EmptyTopic", "video.progress", "", `{}`},
		{"NewlineInTopic", "video.progress", "videos/a\nb", `{}`},
		{"DataNotObject", "video.progress", "videos/a", `[1]`},
		{"PercentAsString", "video.progress", "videos/a", `{"video_id": "a", "percent": "40"}`},
		{"PercentAbove100", "video.progress", "videos/a", `{"video_id": "a", "percent": 100.5}`},
		{"MisspeltVideoID", "video.progress", "videos/a", `{"videoId": "a", "percent": 40}`},
		{"StatusMissing", "video.status", "videos/a", `{"video_id": "a"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := sqlDB.Exec(`SELECT pgsse.publish($1, $2, $3)`, tc.kind, tc.topic, tc.data)
			var pqErr *pq.Error
			if !errors.As(err, &pqErr) || pqErr.Code != "22023" {
				t.Errorf("err = %v, want invalid_parameter_value", err)
			}
		})
	}
}

// insertOldEvents adds n events two days old to the log, ids 1 to n in a fresh
// database.
func insertOldEvents(t *testing.T, sqlDB *sql.DB, n int) {
	t.Helper()
	dbtest.Exec(t, sqlDB, `INSERT INTO pgsse.events (id, kind, topic, time, data)
		SELECT nextval('pgsse.event_id_seq'), 'video.status', 'videos/old', now() - interval '2 days', '{}'
		FROM generate_series(1, $1)`, n)
}

func TestPrune(t *testing.T) {
	url := dbtest.New(t)
	sqlDB, s := dbtest.Open(t, url), mustOpen(t, url)
	ctx := context.Background()
	insertOldEvents(t, sqlDB, 25)
	dbtest.InsertVideo(t, sqlDB, "new")
	if err := s.Sequence(ctx); err != nil {
		t.Fatal(err)
	}

	n, err := s.Prune(ctx, time.Now().Add(-24*time.Hour), 10)
	if err != nil {
		t.Fatal(err)
	}
	if n != 25 {
		t.Errorf("pruned %d, want 25", n)
	}
	horizon, newest, err := s.LogBounds(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if horizon != 25 || newest != 26 {
		t.Errorf("bounds = (%d, %d), want (25, 26)", horizon, newest)
	}
	if raws := eventsAfter(t, s, 0); len(raws) != 1 || raws[0].ID != 26 {
		t.Errorf("left %+v, want only event 26", raws)
	}
	if head, _ := s.Head(ctx); head.ID != 26 {
		t.Errorf("head = %d, want 26", head.ID)
	}
}

func TestVideoSnapshot(t *testing.T) {
	url := dbtest.New(t)
	sqlDB, s := dbtest.Open(t, url), mustOpen(t, url)
	dbtest.InsertVideo(t, sqlDB, "a")
	dbtest.InsertVideo(t, sqlDB, "b")
	dbtest.SetStatus(t, sqlDB, "a", "processed")

	position, snaps, err := s.VideoSnapshot(context.Background(), []string{"a", "b", "missing"})
	if err != nil {
		t.Fatal(err)
	}
	if position != 3 {
		t.Errorf("position = %d, want 3", position)
	}
	if len(snaps) != 2 {
		t.Fatalf("snapshots = %+v, want a and b", snaps)
	}
	for _, ev := range snaps {
		p := ev.Data.(*event.VideoStatus)
		want := map[string]string{"a": "processed", "b": "pending"}[p.VideoID]
		if ev.ID != 3 || !ev.Snapshot || p.Status != want || p.PreviousStatus != nil || ev.Topic != "videos/"+p.VideoID {
			t.Errorf("snapshot %+v %+v, want id 3, status %q, no previous", ev, p, want)
		}
	}
}

// TestEvents_UnprivilegedWriter: a writer with rights on videos alone (no access
// to pgsse's tables, no TEMP on the database) still records events.
func TestEvents_UnprivilegedWriter(t *testing.T) {
	url := dbtest.New(t)
	sqlDB, s := dbtest.Open(t, url), mustOpen(t, url)
	role := fmt.Sprintf("pgsse_writer_%d", time.Now().UnixNano())
	var dbName string
	if err := sqlDB.QueryRow(`SELECT current_database()`).Scan(&dbName); err != nil {
		t.Fatal(err)
	}
	dbtest.Exec(t, sqlDB, `CREATE ROLE `+role+` LOGIN`)
	t.Cleanup(func() {
		dbtest.Exec(t, sqlDB, `DROP OWNED BY `+role)
		dbtest.Exec(t, sqlDB, `DROP ROLE `+role)
	})
	dbtest.Exec(t, sqlDB, `GRANT SELECT, INSERT, UPDATE ON videos TO `+role)
	dbtest.Exec(t, sqlDB, `REVOKE TEMPORARY ON DATABASE `+dbName+` FROM PUBLIC`)

	u, _ := neturl.Parse(url)
	u.User = neturl.User(role)
	writer := dbtest.Open(t, u.String())
	dbtest.InsertVideo(t, writer, "w")
	dbtest.SetStatus(t, writer, "w", "processed")
	if _, err := writer.Exec(`SELECT pgsse.publish('video.progress', 'videos/w', '{"video_id":"w","percent":100}')`); err != nil {
		t.Fatalf("publish as %s: %v", role, err)
	}
	if _, err := writer.Exec(`SELECT count(*) FROM pgsse.events`); err == nil {
		t.Error("the writer can read pgsse.events; it should need no such privilege")
	}
	if n := len(eventsAfter(t, s, 0)); n != 3 {
		t.Errorf("events = %d, want 3", n)
	}
}

// TestEvents_SequencedWhileWriting: a sequencer running while a writer commits
// moves every event exactly once, in commit order.
func TestEvents_SequencedWhileWriting(t *testing.T) {
	url := dbtest.New(t)
	sqlDB, s := dbtest.Open(t, url), mustOpen(t, url)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			if err := s.Sequence(ctx); err != nil && ctx.Err() == nil {
				t.Error(err)
				return
			}
		}
	}()
	const commits = 2000
	for i := range commits {
		dbtest.Exec(t, sqlDB, `SELECT pgsse.publish('video.progress', 'videos/a', jsonb_build_object('video_id', 'a', 'percent', $1::int % 100, 'stage', $1::text))`, i)
	}
	cancel()
	wg.Wait()
	raws := eventsAfter(t, s, 0)
	if len(raws) != commits {
		t.Fatalf("events = %d, want %d", len(raws), commits)
	}
	for i, r := range raws {
		var p struct{ Stage string }
		if err := json.Unmarshal(r.Data, &p); err != nil {
			t.Fatal(err)
		}
		if p.Stage != fmt.Sprint(i) || (i > 0 && r.ID <= raws[i-1].ID) {
			t.Fatalf("event %d is id %d stage %s after id %d: lost, doubled or out of commit order", i, r.ID, p.Stage, raws[max(i-1, 0)].ID)
		}
	}
}

// TestPrune_AllOldKeepsNewEvents: when every event is older than the retention,
// an event committed while the prune runs survives it (it was deleted when the
// boundary was "everything").
func TestPrune_AllOldKeepsNewEvents(t *testing.T) {
	url := dbtest.New(t)
	sqlDB, s := dbtest.Open(t, url), mustOpen(t, url)
	ctx := context.Background()
	insertOldEvents(t, sqlDB, 25)

	// Hold event 15 so the prune's second batch waits; commit a new event meanwhile.
	holder := dbtest.Begin(t, sqlDB, `SELECT 1 FROM pgsse.events WHERE id = 15 FOR UPDATE`)
	done := make(chan error, 1)
	go func() {
		_, err := s.Prune(ctx, time.Now().Add(-24*time.Hour), 10)
		done <- err
	}()
	waitForLockWait(t, sqlDB, "DELETE FROM pgsse.events")
	dbtest.InsertVideo(t, sqlDB, "new")
	if err := holder.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if raws := eventsAfter(t, s, 0); len(raws) != 1 || raws[0].ID != 26 {
		t.Errorf("left %+v, want only the new event 26", raws)
	}
}

// waitForLockWait waits until a session running a query containing text waits
// for a lock.
func waitForLockWait(t *testing.T, sqlDB *sql.DB, text string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		var waiting bool
		if err := sqlDB.QueryRow(`SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND position($1 in query) > 0 AND pid <> pg_backend_pid())`, text).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting {
			return
		}
	}
	t.Fatalf("no session running %q waited for a lock", text)
}

// TestEvents_StatusSetByBeforeTrigger: a status change made by the application's
// own BEFORE trigger is published (AFTER UPDATE OF processing_status missed it).
func TestEvents_StatusSetByBeforeTrigger(t *testing.T) {
	url := dbtest.New(t)
	sqlDB, s := dbtest.Open(t, url), mustOpen(t, url)
	dbtest.Exec(t, sqlDB, `
		CREATE FUNCTION mark_processed() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.processed_file_path IS NOT NULL THEN
				NEW.processing_status := 'processed';
			END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER mark_processed BEFORE UPDATE ON videos
		FOR EACH ROW EXECUTE FUNCTION mark_processed();`)
	dbtest.InsertVideo(t, sqlDB, "v")
	dbtest.Exec(t, sqlDB, `UPDATE videos SET processed_file_path = '/out/v' WHERE id = 'v'`)
	dbtest.Exec(t, sqlDB, `UPDATE videos SET raw_file_path = '/raw/v2' WHERE id = 'v'`) // no change: no event

	raws := eventsAfter(t, s, 0)
	if len(raws) != 2 {
		t.Fatalf("got %d events, want the insert and the change to processed", len(raws))
	}
	if p := statusOf(t, raws[1]); p.Status != "processed" || p.PreviousStatus == nil || *p.PreviousStatus != "pending" {
		t.Errorf("second event %+v, want pending → processed", p)
	}
}

// TestPublish_SameRulesBothSides: generated payloads go through pgsse.publish and
// through event.Decode; none is accepted by one and refused by the other (publish
// used to accept "percent": "40", 100.5 and misspelt fields, which pgsse dropped).
func TestPublish_SameRulesBothSides(t *testing.T) {
	sqlDB := dbtest.Open(t, dbtest.New(t))
	tx, err := sqlDB.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()

	values := []string{`""`, `"a"`, `"40"`, `null`, `true`, `[]`, `{}`, `-1`, `-0`, `0`, `40`, `1e2`, `100`,
		`100.5`, `100.0000000000000000001`, `1e-400`, `99.999999999999999999999`}
	fields := []string{"video_id", "status", "previous_status", "percent", "stage", "videoId", "Video_ID"}
	payloads := []string{`[]`, `"x"`, `null`, `{}`, `{"video_id":"a","video_id":""}`, `{"video_id":"","video_id":"a","status":"s"}`}
	rnd := rand.New(rand.NewPCG(1, 2))
	for range 1500 {
		var parts []string
		for _, f := range fields {
			if rnd.IntN(3) > 0 {
				parts = append(parts, fmt.Sprintf("%q: %s", f, values[rnd.IntN(len(values))]))
			}
		}
		payloads = append(payloads, "{"+strings.Join(parts, ", ")+"}")
	}
	accepted := map[bool]int{}
	for _, kind := range []string{event.KindVideoStatus, event.KindVideoProgress, "thumbnail.ready"} {
		for _, p := range payloads {
			if _, err := tx.Exec(`SAVEPOINT p`); err != nil {
				t.Fatal(err)
			}
			var stored string
			sqlErr := tx.QueryRow(`SELECT $2::jsonb::text FROM pgsse.publish($1, 'videos/a', $2::jsonb)`, kind, p).Scan(&stored)
			if _, err := tx.Exec(`ROLLBACK TO SAVEPOINT p`); err != nil {
				t.Fatal(err)
			}
			var pqErr *pq.Error
			if sqlErr != nil && !(errors.As(sqlErr, &pqErr) && pqErr.Code == "22023") {
				t.Fatalf("publish(%s, %s): %v, want invalid_parameter_value or success", kind, p, sqlErr)
			}
			if sqlErr != nil {
				stored = p // refused: Go must refuse the same text
			}
			_, goErr := event.Decode(event.Raw{ID: 1, Kind: kind, Topic: "videos/a", Data: []byte(stored)})
			if (sqlErr == nil) != (goErr == nil) {
				t.Errorf("%s %s: publish says %v, Decode says %v", kind, p, sqlErr, goErr)
			}
			accepted[sqlErr == nil]++
		}
	}
	if accepted[true] < 100 || accepted[false] < 100 {
		t.Errorf("accepted %d, refused %d: the generator must exercise both sides", accepted[true], accepted[false])
	}
}

// TestEvents_AnyVideoID: any videos.id text can be inserted and updated (pgsse's
// trigger used to raise on ids outside the topic grammar), and its topic is the
// one event.VideoTopic names; ids no topic can carry publish nothing.
func TestEvents_AnyVideoID(t *testing.T) {
	url := dbtest.New(t)
	sqlDB, s := dbtest.Open(t, url), mustOpen(t, url)
	ids := []string{"dGVzdA==+x/y", "legacy upload 7", "é/*%", "a\nb", "plain-id_1.~:@"}
	// A row from before pgsse was installed, with an id no topic grammar allowed.
	dbtest.Exec(t, sqlDB, `ALTER TABLE videos DISABLE TRIGGER USER`)
	dbtest.InsertVideo(t, sqlDB, "legacy upload 7")
	dbtest.Exec(t, sqlDB, `ALTER TABLE videos ENABLE TRIGGER USER`)
	for _, id := range ids {
		if id != "legacy upload 7" {
			dbtest.InsertVideo(t, sqlDB, id)
		}
		dbtest.SetStatus(t, sqlDB, id, "processed")
	}
	unrepresentable := []string{"", strings.Repeat("é", 200)}
	for _, id := range unrepresentable {
		dbtest.InsertVideo(t, sqlDB, id)
		dbtest.SetStatus(t, sqlDB, id, "processed")
	}

	got := map[string][]string{}
	for _, r := range eventsAfter(t, s, 0) {
		p := statusOf(t, r)
		got[p.VideoID] = append(got[p.VideoID], r.Topic+" "+p.Status)
	}
	for _, id := range ids {
		topic, ok := event.VideoTopic(id)
		want := []string{topic + " pending", topic + " processed"}
		if id == "legacy upload 7" {
			want = want[1:]
		}
		if !ok || fmt.Sprint(got[id]) != fmt.Sprint(want) {
			t.Errorf("video %q: events %q, want %q", id, got[id], want)
		}
	}
	for _, id := range unrepresentable {
		if _, ok := event.VideoTopic(id); ok || len(got[id]) > 0 {
			t.Errorf("video %q: events %q, want none", id, got[id])
		}
	}
}

// TestVideoSnapshot_Time: a snapshot's time is that of the change it shows, not
// updated_at, which the worker's statement does not touch; without the change in
// the log, a timestamp-without-time-zone updated_at is read in the session's
// TimeZone (it was taken as UTC, off by the offset).
func TestVideoSnapshot_Time(t *testing.T) {
	url := dbtest.New(t)
	sqlDB, s := dbtest.Open(t, url), mustOpen(t, url)
	ctx := context.Background()
	dbtest.Exec(t, sqlDB, `INSERT INTO videos (id, created_at, updated_at, raw_file_path) VALUES ('a', now(), now() - interval '3 days', '/raw/a')`)
	dbtest.SetStatus(t, sqlDB, "a", "processed")
	changed := eventsAfter(t, s, 0)[1].Time
	if _, snaps, err := s.VideoSnapshot(ctx, []string{"a"}); err != nil || len(snaps) != 1 || !snaps[0].Time.Equal(changed) {
		t.Errorf("snapshot %+v, %v; want the time of the change, %v", snaps, err, changed)
	}

	var dbName string
	if err := sqlDB.QueryRow(`SELECT current_database()`).Scan(&dbName); err != nil {
		t.Fatal(err)
	}
	dbtest.Exec(t, sqlDB, `ALTER DATABASE `+pq.QuoteIdentifier(dbName)+` SET timezone = 'Asia/Kolkata'`)
	local := dbtest.Open(t, url) // new sessions: +05:30
	local.SetMaxOpenConns(1)
	dbtest.Exec(t, local, `ALTER TABLE videos ALTER updated_at TYPE timestamp`)
	dbtest.Exec(t, local, `INSERT INTO videos (id, created_at, updated_at, raw_file_path) VALUES ('b', now(), now(), '/raw/b')`)
	dbtest.Exec(t, local, `DELETE FROM pgsse.events WHERE topic = 'videos/b'`)
	s2 := mustOpen(t, url)
	_, snaps, err := s2.VideoSnapshot(ctx, []string{"b"})
	if err != nil || len(snaps) != 1 {
		t.Fatalf("snapshot %+v, %v", snaps, err)
	}
	if off := time.Since(snaps[0].Time); off < -time.Minute || off > time.Minute {
		t.Errorf("snapshot time %v is %v from now, want within a minute", snaps[0].Time, off)
	}
}
