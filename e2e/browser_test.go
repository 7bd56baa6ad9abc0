package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"pgsse/internal/dbtest"
)

// newBrowser starts headless Chromium (Debian's package; `make test` installs it
// when missing) and returns a context to drive a tab with.
func newBrowser(t *testing.T, flags ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	path := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		t.Fatal("no Chromium: install Debian's chromium package (scripts/deps.sh does)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 860),
	)
	opts = append(opts, flags...)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// pageVideo is one video row as the demo page shows it.
type pageVideo struct {
	ID      string `json:"id"`
	Status  string `json:"status"`
	Percent string `json:"percent"`
	Events  int    `json:"events"`
}

type pageState struct {
	Conn   string      `json:"conn"`
	Videos []pageVideo `json:"videos"`
	Feed   []int64     `json:"feed"`
}

const readPage = `({
	conn: document.querySelector('#conn').dataset.state,
	videos: [...document.querySelectorAll('#videos li')].map(li => ({
		id: li.dataset.video, status: li.dataset.status || '', percent: li.dataset.percent || '', events: +li.dataset.events})),
	feed: [...document.querySelectorAll('#feed li')].map(li => +li.dataset.eventId),
})`

// waitPage polls the page until ok accepts its state.
func waitPage(t *testing.T, ctx context.Context, what string, ok func(pageState) bool) pageState {
	t.Helper()
	var st pageState
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		var err error
		if st, err = chromedp.Run(ctx, chromedp.Evaluate[pageState](readPage)); err != nil {
			t.Fatal(err)
		}
		if ok(st) {
			return st
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("page never showed %s; last state %+v", what, st)
	return st
}

func allVideos(st pageState, n int, f func(pageVideo) bool) bool {
	if len(st.Videos) != n {
		return false
	}
	for _, v := range st.Videos {
		if !f(v) {
			return false
		}
	}
	return true
}

// TestBrowser_LivePage drives the demo page in headless Chromium: videos advance
// as SQL updates them; pgsse is restarted mid-run and the browser's own
// EventSource reconnects and resumes with Last-Event-ID; the final page is
// exactly right, with every event shown once, over a single stream.
func TestBrowser_LivePage(t *testing.T) {
	url := dbtest.New(t)
	sqlDB := dbtest.Open(t, url)
	const n = 6
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("vid%02d", i)
		dbtest.InsertVideo(t, sqlDB, ids[i])
	}
	head := logHead(t, sqlDB)
	port := freePort(t)
	p1 := startPgsseOn(t, port, url, "PGSSE_DEMO=true", "PGSSE_DRAIN=200ms")
	ctx := newBrowser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(p1.URL+"/")); err != nil {
		t.Fatal(err)
	}
	waitPage(t, ctx, "all videos pending, live", func(st pageState) bool {
		return st.Conn == "live" && allVideos(st, n, func(v pageVideo) bool { return v.Status == "pending" })
	})

	progress := func(id string, percent int, stage string) {
		dbtest.Exec(t, sqlDB, `SELECT pgsse.publish('video.progress', 'videos/' || $1::text, json_build_object('video_id', $1::text, 'percent', $2::int, 'stage', $3::text)::jsonb)`, id, percent, stage)
	}
	// The first videos start processing; the last two are still waiting.
	const started = n - 2
	midway := func(i int) int { return 20 + 20*i }
	for i, id := range ids[:started] {
		dbtest.SetStatus(t, sqlDB, id, "processing")
		progress(id, 10, "probe")
		progress(id, midway(i), "transcode")
	}
	waitPage(t, ctx, "the first videos processing, part way", func(st pageState) bool {
		return allVideos(st, n, func(v pageVideo) bool {
			var i int
			fmt.Sscanf(v.ID, "vid%d", &i)
			if i >= started {
				return v.Status == "pending"
			}
			return v.Status == "processing" && v.Percent == fmt.Sprint(midway(i))
		})
	})
	if path := os.Getenv("PGSSE_SCREENSHOT"); path != "" {
		time.Sleep(500 * time.Millisecond) // let the progress bars finish moving
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if got := strings.Count(p1.logs.String(), `"message":"stream started"`); got != 1 {
		t.Errorf("the page opened %d streams for %d videos, want 1", got, n)
	}

	// Cut every stream: stop pgsse, keep writing, start it again on the same port.
	p1.stop()
	for _, id := range ids[started:] {
		dbtest.SetStatus(t, sqlDB, id, "processing")
	}
	for _, id := range ids {
		progress(id, 90, "transcode")
	}
	waitPage(t, ctx, "the page noticing the cut", func(st pageState) bool { return st.Conn == "reconnecting" })
	p2 := startPgsseOn(t, port, url, "PGSSE_DEMO=true")
	for i, id := range ids {
		if i == n-1 {
			dbtest.SetStatus(t, sqlDB, id, "failed")
			continue
		}
		progress(id, 100, "package")
		dbtest.SetStatus(t, sqlDB, id, "processed")
	}

	st := waitPage(t, ctx, "the final state", func(st pageState) bool {
		return st.Conn == "live" && allVideos(st, n, func(v pageVideo) bool { return v.Status == "processed" || v.Status == "failed" })
	})
	want := map[string]pageVideo{}
	for i, id := range ids {
		var events int
		if err := sqlDB.QueryRow(`SELECT count(*) FROM pgsse.events WHERE topic = 'videos/' || $1 AND id > $2`, id, head).Scan(&events); err != nil {
			t.Fatal(err)
		}
		w := pageVideo{ID: id, Status: "processed", Percent: "100", Events: events}
		if i == n-1 {
			w.Status, w.Percent = "failed", "90"
		}
		want[id] = w
	}
	for _, v := range st.Videos {
		if v != want[v.ID] {
			t.Errorf("page shows %+v, want %+v", v, want[v.ID])
		}
	}
	seen := map[int64]bool{}
	for _, id := range st.Feed {
		if seen[id] {
			t.Errorf("event %d shown twice in the feed", id)
		}
		seen[id] = true
	}
	// The page's URL still says last_event_id=<head>; only EventSource's own
	// Last-Event-ID header can carry the position it had reached.
	if resumed := resumedFrom(t, p2.logs.String()); resumed <= head {
		t.Errorf("the browser resumed from %d, not past the page's first position %d: no Last-Event-ID header", resumed, head)
	}
}

// resumedFrom returns the last_event_id of the first stream logged in logs.
func resumedFrom(t *testing.T, logs string) int64 {
	t.Helper()
	for _, line := range strings.Split(logs, "\n") {
		var l struct {
			Message     string `json:"message"`
			LastEventID int64  `json:"last_event_id"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.Message == "stream started" {
			return l.LastEventID
		}
	}
	t.Fatal("no stream started")
	return 0
}

// TestBrowser_CORS: a page on another origin streams with credentials when its
// origin is allowed, and the browser refuses the stream when it is not.
func TestBrowser_CORS(t *testing.T) {
	url := dbtest.New(t)
	sqlDB := dbtest.Open(t, url)
	dbtest.InsertVideo(t, sqlDB, "a")
	page := func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `<!doctype html><title>waiting</title><script>
			const es = new EventSource(%q, {withCredentials: true});
			es.addEventListener('video.status', (e) => { document.title = 'got:' + JSON.parse(e.data).data.status; });
			es.onerror = () => { if (es.readyState === EventSource.CLOSED) document.title = 'refused'; };
		</script>`, r.URL.Query().Get("stream"))
	}
	allowed := httptest.NewServer(http.HandlerFunc(page))
	defer allowed.Close()
	denied := httptest.NewServer(http.HandlerFunc(page))
	defer denied.Close()
	p := startPgsse(t, url, "PGSSE_CORS_ORIGINS=https://other.example, "+allowed.URL)

	ctx := newBrowser(t)
	for _, tc := range []struct {
		name, origin, want string
	}{
		{"Allowed", allowed.URL, "got:pending"},
		{"Denied", denied.URL, "refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var title string
			deadline := time.Now().Add(20 * time.Second)
			err := chromedp.Do(ctx, chromedp.Navigate(tc.origin+"/?stream="+p.URL+"/videos/a/events"))
			for err == nil && title != tc.want && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
				title, err = chromedp.Run(ctx, chromedp.Title())
			}
			if err != nil || title != tc.want {
				t.Fatalf("page title %q (%v), want %q", title, err, tc.want)
			}
		})
	}

	t.Run("Preflight", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodOptions, p.URL+"/events?topic=videos/a", nil)
		req.Header.Set("Origin", allowed.URL)
		req.Header.Set("Access-Control-Request-Method", "GET")
		req.Header.Set("Access-Control-Request-Headers", "last-event-id")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		h := resp.Header
		if resp.StatusCode != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != allowed.URL ||
			h.Get("Access-Control-Allow-Credentials") != "true" || !strings.Contains(strings.ToLower(h.Get("Access-Control-Allow-Headers")), "last-event-id") {
			t.Errorf("preflight: %d %v", resp.StatusCode, h)
		}
	})
}
