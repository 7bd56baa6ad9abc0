package e2e

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"pgsse/internal/dbtest"
)

func TestStream_Routing(t *testing.T) {
	url := dbtest.New(t)
	sqlDB := dbtest.Open(t, url)
	dbtest.InsertVideo(t, sqlDB, "a")
	dbtest.InsertVideo(t, sqlDB, "b")
	p := startPgsse(t, url)

	sa := open(t, p.URL+"/videos/a/events", "")
	sb := open(t, p.URL+"/events?topic=videos/b", "")
	sw := open(t, p.URL+"/events?topic=videos/*", "")
	if h := sa.resp.Header; h.Get("Cache-Control") != "no-cache" || h.Get("X-Accel-Buffering") != "no" {
		t.Errorf("headers = %v", h)
	}

	snap := sa.next(t)
	if status, prev := snap.status(); !snap.env.Snapshot || snap.Type != "video.status" || status != "pending" || prev != "" || snap.LastEventID != fmt.Sprint(snap.env.ID) {
		t.Fatalf("first event %+v, want a pending snapshot with an id", snap)
	}
	if string(snap.env.Data) != `{"video_id":"a","status":"pending","previous_status":null}` {
		t.Errorf("snapshot data = %s", snap.env.Data)
	}
	sb.next(t) // b's snapshot

	dbtest.SetStatus(t, sqlDB, "a", "processed")
	for _, s := range []*openStream{sa, sw} {
		ev := s.next(t)
		status, prev := ev.status()
		if ev.env.Snapshot || ev.env.Topic != "videos/a" || status != "processed" || prev != "pending" || ev.LastEventID != fmt.Sprint(ev.env.ID) {
			t.Errorf("got %+v, want a: pending → processed", ev)
		}
		if _, err := time.Parse(time.RFC3339Nano, ev.env.Time); err != nil || !strings.HasSuffix(ev.env.Time, "Z") || len(ev.env.Time) != len("2006-01-02T15:04:05.000000Z") {
			t.Errorf("time %q is not RFC 3339 UTC with microseconds", ev.env.Time)
		}
	}
	sb.quiet(t, 300*time.Millisecond) // b's subscriber hears nothing of a
}

// TestStream_OutOfOrderCommits: T1 updates A first and commits last; a client
// that got B's event and resumes from its id still receives A's.
func TestStream_OutOfOrderCommits(t *testing.T) {
	url := dbtest.New(t)
	sqlDB := dbtest.Open(t, url)
	dbtest.InsertVideo(t, sqlDB, "a")
	dbtest.InsertVideo(t, sqlDB, "b")
	p := startPgsse(t, url)
	target := p.URL + "/events?topic=videos/a&topic=videos/b"
	s := open(t, target, "")
	s.take(t, 2) // snapshots

	t1 := dbtest.Begin(t, sqlDB, `UPDATE videos SET processing_status = 'processed' WHERE id = 'a'`)
	dbtest.SetStatus(t, sqlDB, "b", "processed")
	evB := s.next(t)
	if evB.env.Topic != "videos/b" {
		t.Fatalf("got %+v, want b's event", evB)
	}
	s.close()
	if err := t1.Commit(); err != nil {
		t.Fatal(err)
	}

	resumed := open(t, target, evB.LastEventID)
	evA := resumed.next(t)
	if status, _ := evA.status(); evA.env.Topic != "videos/a" || status != "processed" || evA.env.Snapshot {
		t.Fatalf("after resume got %+v, want a's processed event", evA)
	}
}

// TestStream_Resume: a client misses 50 events and, resuming with Last-Event-ID,
// gets exactly those 50 in order, then live ones: from the same process (its
// memory) and from a fresh one (the log).
func TestStream_Resume(t *testing.T) {
	url := dbtest.New(t)
	sqlDB := dbtest.Open(t, url)
	dbtest.InsertVideo(t, sqlDB, "a")
	dbtest.InsertVideo(t, sqlDB, "other")
	p := startPgsse(t, url)
	s := open(t, p.URL+"/videos/a/events", "")
	last := s.next(t).LastEventID
	s.close()

	for i := range 50 {
		dbtest.Exec(t, sqlDB, `SELECT pgsse.publish('video.progress', 'videos/a', json_build_object('video_id', 'a', 'percent', $1::int)::jsonb)`, i*2)
		dbtest.Exec(t, sqlDB, `SELECT pgsse.publish('video.progress', 'videos/other', '{"video_id": "other", "percent": 1}')`)
	}
	fresh := startPgsse(t, url)
	for name, base := range map[string]string{"Memory": p.URL, "Log": fresh.URL} {
		t.Run(name, func(t *testing.T) {
			r := open(t, base+"/videos/a/events", last)
			got := r.take(t, 50)
			for i, ev := range got {
				var d struct{ Percent int }
				_ = json.Unmarshal(ev.env.Data, &d)
				if ev.Type != "video.progress" || ev.env.Topic != "videos/a" || d.Percent != i*2 || ev.env.Snapshot {
					t.Fatalf("event %d = %s %s, want progress %d", i, ev.Type, ev.Data, i*2)
				}
			}
			dbtest.Exec(t, sqlDB, `SELECT pgsse.publish('video.progress', 'videos/a', '{"video_id": "a", "percent": 100}')`)
			if ev := r.next(t); !strings.Contains(ev.Data, `"percent":100`) {
				t.Fatalf("live event %s, want percent 100", ev.Data)
			}
		})
	}
}

// TestStream_AheadOfReplica: a Last-Event-ID above what this replica has read,
// but one the log handed out (another replica was a moment ahead), is no reset:
// the stream waits for the live events after it.
func TestStream_AheadOfReplica(t *testing.T) {
	url := dbtest.New(t)
	sqlDB := dbtest.Open(t, url)
	dbtest.InsertVideo(t, sqlDB, "a")
	p := startPgsse(t, url)
	var ahead int64
	// Ids drawn without a committed event: the log's newest id moves past
	// everything this replica can have read.
	if err := sqlDB.QueryRow(`SELECT max(nextval('pgsse.event_id_seq')) FROM generate_series(1, 5)`).Scan(&ahead); err != nil {
		t.Fatal(err)
	}
	s := open(t, p.URL+"/videos/a/events", fmt.Sprint(ahead-2))
	dbtest.SetStatus(t, sqlDB, "a", "processed")
	ev := s.next(t)
	if ev.Type != "video.status" || ev.env.Snapshot || ev.env.ID <= ahead {
		t.Fatalf("got %s %s, want the live event after %d (no reset, no snapshot)", ev.Type, ev.Data, ahead)
	}
}

func TestStream_Reset(t *testing.T) {
	url := dbtest.New(t)
	sqlDB := dbtest.Open(t, url)
	dbtest.InsertVideo(t, sqlDB, "a")
	dbtest.SetStatus(t, sqlDB, "a", "processing")
	sequence(t, sqlDB) // ids 1 and 2, before the test prunes them
	p := startPgsse(t, url)

	for _, tc := range []struct{ name, lastID, why string }{
		{"HistoryPruned", "1", "history_pruned"},
		{"AheadOfLog", "999999999", "log_reset"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.why == "history_pruned" {
				// What pruning leaves: events up to 2 gone, the horizon past them.
				dbtest.Exec(t, sqlDB, `DELETE FROM pgsse.events WHERE id <= 2; UPDATE pgsse.horizon SET pruned_through = 2`)
			}
			s := open(t, p.URL+"/videos/a/events", tc.lastID)
			reset := s.next(t)
			if reset.Type != "stream.reset" || reset.LastEventID != "" || !strings.Contains(reset.Data, tc.why) {
				t.Fatalf("first event %+v, want stream.reset (%s) without id", reset, tc.why)
			}
			var body struct {
				Kind  string         `json:"kind"`
				Topic *string        `json:"topic"`
				Data  map[string]any `json:"data"`
			}
			if err := json.Unmarshal([]byte(reset.Data), &body); err != nil || body.Kind != "stream.reset" || body.Topic != nil {
				t.Errorf("reset data %s: want kind stream.reset, no topic", reset.Data)
			}
			snap := s.next(t)
			if status, _ := snap.status(); !snap.env.Snapshot || status != "processing" {
				t.Fatalf("after reset got %+v, want a snapshot", snap)
			}
		})
	}
}

// TestStream_LargeTransaction: one transaction changes 10 000 rows; every
// subscriber gets all of its events once, in order; a 100 KB payload arrives
// intact.
func TestStream_LargeTransaction(t *testing.T) {
	url := dbtest.New(t)
	sqlDB := dbtest.Open(t, url)
	dbtest.Exec(t, sqlDB, `INSERT INTO videos (id, created_at, updated_at, raw_file_path)
		SELECT 'v' || i, now(), now(), '/raw' FROM generate_series(1, 10000) i`)
	sequence(t, sqlDB) // the inserts are history, before pgsse starts
	p := startPgsse(t, url)
	all := []*follower{follow(t, "", p.URL+"/events?topic=videos/*"), follow(t, "", p.URL+"/events?topic=videos/*")}
	one := follow(t, "", p.URL+"/events?topic=videos/v42&topic=videos/v9999")
	time.Sleep(300 * time.Millisecond) // subscribed
	head := logHead(t, sqlDB)

	dbtest.Exec(t, sqlDB, `UPDATE videos SET processing_status = 'processed'`)
	blob := strings.Repeat("0123456789", 10000)
	dbtest.Exec(t, sqlDB, `SELECT pgsse.publish('video.progress', 'videos/v42', json_build_object('video_id', 'v42', 'percent', 100, 'stage', $1::text)::jsonb)`, blob)

	waitAllIDs(t, all, logIDs(t, sqlDB, head, "videos/%"))
	one.waitIDs(t, logIDs(t, sqlDB, head, "videos/v42", "videos/v9999"))
	one.mu.Lock()
	defer one.mu.Unlock()
	last := one.events[len(one.events)-1]
	if !strings.Contains(last.Data, `"stage":"`+blob+`"`) {
		t.Errorf("100 KB payload not intact: %d bytes", len(last.Data))
	}
}

// TestStream_DatabaseRestart: Postgres restarts while a writer commits; every
// client still receives every committed event exactly once, in order.
func TestStream_DatabaseRestart(t *testing.T) {
	cluster := dbtest.NewCluster(t)
	p := startPgsse(t, cluster.URL, "PGSSE_POLL_INTERVAL=500ms")
	sqlDB := dbtest.Open(t, cluster.URL)
	var fs []*follower
	for range 5 {
		fs = append(fs, follow(t, "", p.URL+"/events?topic=videos/*"))
	}
	time.Sleep(300 * time.Millisecond)

	stopWriter := startWriter(t, sqlDB, "r", 0)
	time.Sleep(500 * time.Millisecond)
	cluster.Restart()
	restarted := time.Now()
	time.Sleep(time.Second)
	if last := stopWriter(); last.Before(restarted) {
		t.Fatal("the writer committed nothing after the restart")
	}

	waitAllIDs(t, fs, logIDs(t, sqlDB, 0, "videos/%"))
	if !hasLine(p.logs.String(), "listener reconnected") {
		t.Error("the listener never logged a reconnect")
	}
}

// TestStream_DatabaseDown: with Postgres gone, an open stream keeps its
// heartbeats and a new one is answered 200 (never a 5xx, which would make
// EventSource give up); both are served once the database is back.
func TestStream_DatabaseDown(t *testing.T) {
	cluster := dbtest.NewCluster(t)
	p := startPgsse(t, cluster.URL, "PGSSE_HEARTBEAT=200ms")
	sqlDB := dbtest.Open(t, cluster.URL)
	dbtest.InsertVideo(t, sqlDB, "a")
	before := open(t, p.URL+"/videos/a/events", "")
	before.next(t) // snapshot

	cluster.Stop()
	during := open(t, p.URL+"/videos/a/events", "") // fails the test unless 200
	time.Sleep(time.Second)
	cluster.Start()

	if snap := during.next(t); !snap.env.Snapshot {
		t.Fatalf("stream opened during the outage got %+v first, want its snapshot", snap)
	}
	dbtest.SetStatus(t, sqlDB, "a", "processed")
	for _, s := range []*openStream{before, during} {
		if status, _ := s.next(t).status(); status != "processed" {
			t.Errorf("after the outage got status %q, want processed", status)
		}
	}
}

// TestStream_SlowClient: a client that stops reading is dropped (it overflows
// its queue without progress, or misses the write deadline while catching up)
// without delaying the others, and loses nothing when it resumes. Dropping it is what
// keeps the server's memory bounded: its queue cannot grow past PGSSE_QUEUE.
func TestStream_SlowClient(t *testing.T) {
	url := dbtest.New(t)
	sqlDB := dbtest.Open(t, url)
	p := startPgsse(t, url, "PGSSE_QUEUE=64")
	fast := follow(t, "", p.URL+"/events?topic=videos/*")

	stalledClient(t, p.URL+"/events?topic=videos/*") // sends its request and never reads
	publishBulk(t, sqlDB, 10)
	want := logIDs(t, sqlDB, 0, "videos/%")
	fast.waitIDs(t, want)

	dropped := func() bool {
		logs := p.logs.String()
		return hasLine(logs, `"reason":"queue_overflow"`) || hasLine(logs, `"reason":"write_failed"`)
	}
	for deadline := time.Now().Add(15 * time.Second); !dropped() && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	if !dropped() {
		t.Fatal("the slow stream was not dropped")
	}
	// Bursts larger than the queue overflow the fast reader's too: it is caught
	// up in its stream, without reconnecting.
	if m := scrape(t, p.URL); m["pgsse_subscriber_evictions_total"] < 1 {
		t.Errorf("overflows %v, want at least 1", m["pgsse_subscriber_evictions_total"])
	}
	if n := fast.connects.Load(); n != 1 {
		t.Errorf("the fast reader connected %d times, want once", n)
	}

	// It comes back from where it was (the start) and gets everything.
	resumed := follow(t, "0", p.URL+"/events?topic=videos/*")
	resumed.waitIDs(t, want)
}

// TestStream_Curl: curl -N receives a correctly framed event.
func TestStream_Curl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatal("curl not installed: .ci/run installs it")
	}
	url := dbtest.New(t)
	sqlDB := dbtest.Open(t, url)
	dbtest.InsertVideo(t, sqlDB, "abc123")
	p := startPgsse(t, url, "PGSSE_HEARTBEAT=200ms")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.CommandContext(ctx, curl, "-N", "-s", "-i", p.URL+"/events?topic=videos/abc123")
	out := &syncBuffer{}
	cmd.Stdout = out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	waitFor(t, func() bool { return strings.Contains(out.String(), `"snapshot":true`) })
	dbtest.SetStatus(t, sqlDB, "abc123", "processed")
	waitFor(t, func() bool { return strings.Contains(out.String(), `"previous_status":"pending"`) })
	waitFor(t, func() bool { return strings.HasSuffix(out.String(), "\n\n: ping\n\n") })
	cancel()

	text := out.String()
	if !strings.Contains(text, "HTTP/1.1 200 OK\r\n") || !strings.Contains(strings.ToLower(text), "content-type: text/event-stream\r\n") {
		t.Fatalf("curl saw headers:\n%s", text)
	}
	body := text[strings.Index(text, "\r\n\r\n")+4:]
	if !strings.HasPrefix(body, "retry: ") {
		t.Errorf("stream does not start with a retry: line:\n%s", body)
	}
	var frames []string
	for _, f := range strings.Split(strings.TrimSuffix(body, "\n\n"), "\n\n") {
		if f != ": ping" {
			frames = append(frames, f)
		}
	}
	last := frames[len(frames)-1]
	lines := strings.Split(last, "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "id: ") || lines[1] != "event: video.status" || !strings.HasPrefix(lines[2], `data: {"id":`+strings.TrimPrefix(lines[0], "id: ")+`,`) {
		t.Fatalf("last frame:\n%s", last)
	}
}

// startWriter inserts videos prefix0, prefix1, … one commit each, pausing
// between them, until the returned stop is called; stop returns when the last
// commit succeeded. Failed commits (the database is away) are retried later.
func startWriter(t *testing.T, sqlDB *sql.DB, prefix string, pause time.Duration) (stop func() time.Time) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	var last time.Time
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			case <-time.After(pause):
			}
			_, err := sqlDB.Exec(`INSERT INTO videos (id, created_at, updated_at, raw_file_path) VALUES ($1, now(), now(), '/raw')`, fmt.Sprint(prefix, i))
			if err == nil {
				last = time.Now()
			} else {
				time.Sleep(20 * time.Millisecond)
			}
		}
	}()
	var once sync.Once
	stop = func() time.Time {
		once.Do(func() { close(done); wg.Wait() })
		return last
	}
	t.Cleanup(func() { stop() })
	return stop
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 15s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestStream_TwoProcesses: two replicas on one database both deliver everything.
func TestStream_TwoProcesses(t *testing.T) {
	url := dbtest.New(t)
	sqlDB := dbtest.Open(t, url)
	p1, p2 := startPgsse(t, url), startPgsse(t, url)
	f1 := follow(t, "", p1.URL+"/events?topic=videos/*")
	f2 := follow(t, "", p2.URL+"/events?topic=videos/*")
	time.Sleep(300 * time.Millisecond)
	for i := range 100 {
		dbtest.InsertVideo(t, sqlDB, fmt.Sprint("v", i))
	}
	want := logIDs(t, sqlDB, 0, "videos/%")
	f1.waitIDs(t, want)
	f2.waitIDs(t, want)
}

// TestMigrate_FourProcesses: four `pgsse migrate` started at once apply each
// migration exactly once between them.
func TestMigrate_FourProcesses(t *testing.T) {
	url := dbtest.NewEmpty(t)
	var wg sync.WaitGroup
	outs := make([][]byte, 4)
	errs := make([]error, 4)
	for i := range outs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i], errs[i] = command(t, url, nil, "migrate").CombinedOutput()
		}()
	}
	wg.Wait()
	applied := 0
	for i := range outs {
		if errs[i] != nil {
			t.Errorf("migrate %d: %v\n%s", i, errs[i], outs[i])
		}
		applied += strings.Count(string(outs[i]), `"dbmate":"Applying:`)
	}
	files, _ := os.ReadDir("migrations")
	want := 0
	for _, f := range files {
		if strings.HasSuffix(f.Name(), ".sql") {
			want++
		}
	}
	if applied != want {
		t.Errorf("migrations applied %d times in all, want %d (each once)", applied, want)
	}
}

// TestServe_SIGTERM: with a writer committing and clients streaming, one of two
// replicas gets SIGTERM; it fails readiness, closes its streams over the drain
// window and exits 0; its clients resume on the other replica and lose nothing.
func TestServe_SIGTERM(t *testing.T) {
	url := dbtest.New(t)
	sqlDB := dbtest.Open(t, url)
	p1 := startPgsse(t, url, "PGSSE_DRAIN=2s")
	p2 := startPgsse(t, url)
	var fs []*follower
	for range 20 {
		fs = append(fs, follow(t, "", p1.URL+"/events?topic=videos/*", p2.URL+"/events?topic=videos/*"))
	}
	time.Sleep(300 * time.Millisecond)

	stopWriter := startWriter(t, sqlDB, "w", 5*time.Millisecond)
	time.Sleep(300 * time.Millisecond)

	start := time.Now()
	p1.signal(syscall.SIGTERM)
	time.Sleep(200 * time.Millisecond)
	if resp, err := http.Get(p1.URL + "/readyz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("readyz while draining = %d, want 503", resp.StatusCode)
		}
	}
	select {
	case <-p1.done:
	case <-time.After(10 * time.Second):
		t.Fatal("pgsse did not exit within 10s of SIGTERM")
	}
	if took := time.Since(start); took < time.Second {
		t.Errorf("exited after %v: streams should close over the 2s window", took)
	}
	if p1.err != nil {
		t.Errorf("exit: %v, want status 0", p1.err)
	}
	time.Sleep(300 * time.Millisecond)
	stopWriter()

	waitAllIDs(t, fs, logIDs(t, sqlDB, 0, "videos/%"))
}
