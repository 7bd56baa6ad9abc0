package e2e

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lib/pq"
	gosse "github.com/tmaxmax/go-sse"

	"pgsse/internal/dbtest"
	"pgsse/internal/testbin"
)

// TestMain runs the tests from the repository's root (they read its README,
// docs and Makefile, and run make), then removes the pgsse binary they ran.
func TestMain(m *testing.M) {
	if os.Getenv("PGSSE_TEST_DATABASE_URL") == "" {
		fmt.Println("e2e: PGSSE_TEST_DATABASE_URL is not set: the tests that need a database skip (make test runs them against a throwaway PostgreSQL)")
	}
	if err := os.Chdir(".."); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	code := m.Run()
	testbin.Remove()
	os.Exit(code)
}

// proc is a pgsse process.
type proc struct {
	t    *testing.T
	cmd  *exec.Cmd
	URL  string // http://127.0.0.1:port
	logs *syncBuffer
	done chan struct{}
	err  error // exit status, once done is closed
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// command runs pgsse with args against dbURL; env adds variables.
func command(t *testing.T, dbURL string, env []string, args ...string) *exec.Cmd {
	cmd := exec.Command(testbin.Build(t), args...)
	// The harness's own variables are no pgsse settings.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PGSSE_TEST_DATABASE_URL=") && !strings.HasPrefix(kv, "PGSSE_SCREENSHOT=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "DATABASE_URL="+dbURL, "PGSSE_LOG_FORMAT=json", "PGSSE_LOG_LEVEL=debug",
		"PGSSE_AUTH_MODE=none", "PGSSE_CONNECT_RATE=0", "PGSSE_MAX_STREAMS_PER_IP=0", // tests that need auth or limits set them
		"GORACE=atexit_sleep_ms=0") // the race detector would add a second to every exit
	cmd.Env = append(cmd.Env, env...)
	return cmd
}

// startPgsse starts `pgsse serve` on a free port and waits until it is ready.
func startPgsse(t *testing.T, dbURL string, env ...string) *proc {
	t.Helper()
	return startPgsseOn(t, freePort(t), dbURL, env...)
}

// startPgsseOn starts `pgsse serve` on port and waits until it is ready.
func startPgsseOn(t *testing.T, port int, dbURL string, env ...string) *proc {
	t.Helper()
	p := launchPgsse(t, port, dbURL, env...)
	p.waitReady()
	return p
}

// launchPgsse starts `pgsse serve` on port; it is killed when the test ends.
func launchPgsse(t *testing.T, port int, dbURL string, env ...string) *proc {
	t.Helper()
	p := &proc{t: t, URL: fmt.Sprintf("http://127.0.0.1:%d", port), logs: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = command(t, dbURL, append([]string{fmt.Sprintf("PGSSE_ADDR=127.0.0.1:%d", port)}, env...), "serve")
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.signal(syscall.SIGKILL)
		<-p.done
		if t.Failed() {
			t.Logf("pgsse %s logs:\n%s", p.URL, p.logs)
		}
	})
	return p
}

func (p *proc) waitReady() {
	p.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			p.t.Fatalf("pgsse exited early: %v\n%s", p.err, p.logs)
		default:
		}
		resp, err := http.Get(p.URL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.t.Fatalf("pgsse not ready within 30s:\n%s", p.logs)
}

// stop sends SIGTERM and waits for the process to exit.
func (p *proc) stop() {
	p.t.Helper()
	p.signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.t.Fatal("pgsse did not exit within 20s of SIGTERM")
	}
}

func (p *proc) signal(sig os.Signal) {
	if p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(sig)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// envelope is the JSON clients receive as an event's data.
type envelope struct {
	ID       int64           `json:"id"`
	Kind     string          `json:"kind"`
	Topic    string          `json:"topic"`
	Time     string          `json:"time"`
	Data     json.RawMessage `json:"data"`
	Snapshot bool            `json:"snapshot"`
}

// received is one event as a client saw it.
type received struct {
	gosse.Event
	env envelope
}

func (r received) status() (status, previous string) {
	var d struct {
		Status   string  `json:"status"`
		Previous *string `json:"previous_status"`
	}
	_ = json.Unmarshal(r.env.Data, &d)
	if d.Previous != nil {
		previous = *d.Previous
	}
	return d.Status, previous
}

// openStream is one open SSE response, read in the background.
type openStream struct {
	resp   *http.Response
	events chan received
	cancel context.CancelFunc
	ended  chan struct{} // closed when the server ends the response
}

// open starts a stream at url; lastID, when not empty, is sent as Last-Event-ID.
func open(t *testing.T, url, lastID string) *openStream {
	t.Helper()
	return openWith(t, url, lastID)
}

// openWith is open with extra request headers, given as name, value pairs.
func openWith(t *testing.T, url, lastID string, header ...string) *openStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		body, _ := io.ReadAll(resp.Body)
		cancel()
		t.Fatalf("GET %s: %d %s %s", url, resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	s := &openStream{resp: resp, events: make(chan received, 100000), cancel: cancel, ended: make(chan struct{})}
	go func() {
		defer close(s.ended)
		defer resp.Body.Close()
		for ev, err := range gosse.Read(resp.Body, &gosse.ReadConfig{MaxEventSize: 1 << 20}) {
			if err != nil {
				return
			}
			if ev.Type == "stream.position" {
				continue // moves the position only; TestStream_PositionFromFirstBytes covers it
			}
			r := received{Event: ev}
			_ = json.Unmarshal([]byte(ev.Data), &r.env)
			s.events <- r
		}
	}()
	t.Cleanup(s.close)
	return s
}

func (s *openStream) close() {
	s.cancel()
	<-s.ended
}

func (s *openStream) next(t *testing.T) received {
	t.Helper()
	select {
	case ev := <-s.events:
		return ev
	case <-time.After(15 * time.Second):
		t.Fatal("no event within 15s")
		return received{}
	}
}

// take returns the next n events.
func (s *openStream) take(t *testing.T, n int) []received {
	t.Helper()
	out := make([]received, n)
	for i := range out {
		out[i] = s.next(t)
	}
	return out
}

// quiet fails if an event arrives within d.
func (s *openStream) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case ev := <-s.events:
		t.Fatalf("unexpected event %s %s", ev.Type, ev.Data)
	case <-time.After(d):
	}
}

// follower is an EventSource-like client: it keeps one stream open across
// server-side ends, reconnecting (to the next of urls, round robin) with the
// last id it saw, and records every event.
type follower struct {
	urls     []string
	connects atomic.Int64 // requests made: 1 + reconnects
	mu       sync.Mutex
	events   []received
	lastID   string
	stop     chan struct{}
	done     chan struct{}
	cancel   context.CancelFunc
}

func follow(t *testing.T, lastID string, urls ...string) *follower {
	f := &follower{urls: urls, lastID: lastID, stop: make(chan struct{}), done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	go f.run(ctx)
	t.Cleanup(f.close)
	return f
}

func (f *follower) run(ctx context.Context) {
	defer close(f.done)
	for i := 0; ; i++ {
		select {
		case <-f.stop:
			return
		default:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, f.urls[i%len(f.urls)], nil)
		f.mu.Lock()
		if f.lastID != "" {
			req.Header.Set("Last-Event-ID", f.lastID)
		}
		f.mu.Unlock()
		f.connects.Add(1)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			if resp.StatusCode == http.StatusOK {
				f.read(resp.Body)
			}
			resp.Body.Close()
		}
		select {
		case <-f.stop:
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (f *follower) read(body io.Reader) {
	for ev, err := range gosse.Read(bufio.NewReader(body), &gosse.ReadConfig{MaxEventSize: 1 << 20}) {
		if err != nil {
			return
		}
		r := received{Event: ev}
		_ = json.Unmarshal([]byte(ev.Data), &r.env)
		f.mu.Lock()
		f.events = append(f.events, r)
		if ev.LastEventID != "" {
			f.lastID = ev.LastEventID
		}
		f.mu.Unlock()
	}
}

func (f *follower) close() {
	select {
	case <-f.stop:
	default:
		close(f.stop)
	}
	f.cancel()
	<-f.done
}

// ids returns the ids of the non-snapshot events received so far.
func (f *follower) ids() []int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []int64
	for _, ev := range f.events {
		if ev.env.ID != 0 && !ev.env.Snapshot {
			ids = append(ids, ev.env.ID)
		}
	}
	return ids
}

// waitIDs waits until the follower has seen want (in any order), then checks it
// saw exactly want, in order.
func (f *follower) waitIDs(t *testing.T, want []int64) {
	t.Helper()
	waitAllIDs(t, []*follower{f}, want)
}

// waitAllIDs waits until every follower has seen as many events as want, then
// checks each saw exactly want, in order.
func waitAllIDs(t *testing.T, fs []*follower, want []int64) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for _, f := range fs {
		for len(f.ids()) < len(want) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	time.Sleep(100 * time.Millisecond) // a duplicate would show up by now
	for i, f := range fs {
		if got := f.ids(); !equalIDs(got, want) {
			t.Fatalf("client %d received %d events, want %d; first difference: %s", i, len(got), len(want), firstDiff(got, want))
		}
	}
}

func equalIDs(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func firstDiff(got, want []int64) string {
	for i := 0; i < len(got) && i < len(want); i++ {
		if got[i] != want[i] {
			return fmt.Sprintf("at %d got id %d, want %d", i, got[i], want[i])
		}
	}
	if len(got) > len(want) {
		return fmt.Sprintf("extra id %d at %d", got[len(want)], len(want))
	}
	if len(got) < len(want) {
		return fmt.Sprintf("missing id %d at %d", want[len(got)], len(got))
	}
	return "none"
}

// logIDs returns the ids above after in the event log whose topic matches one
// of the SQL LIKE patterns, in order: the truth a client is compared against.
// It sequences first, so events committed but not yet in the log are included.
func logIDs(t *testing.T, sqlDB *sql.DB, after int64, likes ...string) []int64 {
	t.Helper()
	sequence(t, sqlDB)
	rows, err := sqlDB.Query(`SELECT id FROM pgsse.events WHERE topic LIKE ANY($1) AND id > $2 ORDER BY id`, pq.Array(likes), after)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

// logHead returns the newest id in the log, after sequencing.
func logHead(t *testing.T, sqlDB *sql.DB) int64 {
	t.Helper()
	sequence(t, sqlDB)
	var head int64
	if err := sqlDB.QueryRow(`SELECT coalesce(max(id), 0) FROM pgsse.events`).Scan(&head); err != nil {
		t.Fatal(err)
	}
	return head
}

// sequence moves every committed event into the log, as a pgsse would.
func sequence(t *testing.T, sqlDB *sql.DB) {
	t.Helper()
	if _, err := sqlDB.Exec(`SELECT pgsse.sequence(1000000)`); err != nil {
		t.Fatal(err)
	}
}

func hasLine(logs, substr string) bool {
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, substr) {
			return true
		}
	}
	return false
}

func itoa(n int) string { return fmt.Sprint(n) }

func countLines(logs, substr string) int {
	n := 0
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, substr) {
			n++
		}
	}
	return n
}

// stalledClient opens a stream at url over a raw connection with a small read
// buffer, and never reads: a client on a stalled network. It is closed when the
// test ends.
func stalledClient(t *testing.T, url string) {
	t.Helper()
	u, err := neturl.Parse(url)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.(*net.TCPConn).SetReadBuffer(4096)
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", u.RequestURI())
	time.Sleep(300 * time.Millisecond) // subscribed
}

// publishBulk commits batches × 200 video.progress events of about 4 KB each,
// 200 per transaction, on topics videos/s<n>.
func publishBulk(t *testing.T, sqlDB *sql.DB, batches int) {
	t.Helper()
	payload := strings.Repeat("x", 4000)
	for batch := range batches {
		dbtest.Exec(t, sqlDB, `SELECT pgsse.publish('video.progress', 'videos/s' || i, json_build_object('video_id', 's' || i, 'percent', 1, 'stage', $1::text)::jsonb)
			FROM generate_series($2::int, $2::int + 199) i`, payload, batch*200)
	}
}
