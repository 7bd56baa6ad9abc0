package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"pgsse/internal/dbtest"
)

// TestBrowser_CapacityRefusalRetried: a browser's EventSource refused for
// capacity (here the process is full) comes back by itself once a slot frees.
// A 503 used to close it for good (EventSource gives up on any non-200).
func TestBrowser_CapacityRefusalRetried(t *testing.T) {
	url := dbtest.New(t)
	dbtest.InsertVideo(t, dbtest.Open(t, url), "a")
	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `<!doctype html><title>waiting</title><script>
			let refusals = 0;
			const es = new EventSource(%q, {withCredentials: true});
			es.addEventListener('stream.refused', () => { refusals++; document.title = 'refused:' + refusals; });
			es.addEventListener('video.status', (e) => { document.title = 'got:' + JSON.parse(e.data).data.status + ':' + refusals; });
			es.onerror = () => { if (es.readyState === EventSource.CLOSED) document.title = 'closed'; };
		</script>`, r.URL.Query().Get("stream"))
	}))
	defer page.Close()
	p := startPgsse(t, url, "PGSSE_MAX_STREAMS=1", "PGSSE_CORS_ORIGINS="+page.URL)
	holder := open(t, p.URL+"/events?topic=videos/*", "") // the one slot

	ctx := newBrowser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(page.URL+"/?stream="+p.URL+"/videos/a/events")); err != nil {
		t.Fatal(err)
	}
	title := waitTitle(t, ctx, func(s string) bool { return strings.HasPrefix(s, "refused:") || s == "closed" })
	if title == "closed" {
		t.Fatal("the refused EventSource closed for good")
	}
	holder.close()
	title = waitTitle(t, ctx, func(s string) bool { return strings.HasPrefix(s, "got:") || s == "closed" })
	if !strings.HasPrefix(title, "got:pending:") {
		t.Fatalf("page title %q, want a's snapshot once the slot freed", title)
	}
}

// waitTitle polls the page's title until ok accepts it.
func waitTitle(t *testing.T, ctx context.Context, ok func(string) bool) string {
	t.Helper()
	var title string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var err error
		if title, err = chromedp.Run(ctx, chromedp.Title()); err != nil {
			t.Fatal(err)
		}
		if ok(title) {
			return title
		}
	}
	t.Fatalf("page title still %q after 20s", title)
	return title
}

// TestStream_CapacityRefusal: a client asking for text/event-stream is refused
// for capacity with a 200 stream that carries a retry: and a stream.refused
// event without id, then ends; others keep the 429 and its JSON. A flood of
// refusals is a few log lines, not one per request.
func TestStream_CapacityRefusal(t *testing.T) {
	url := dbtest.New(t)
	p := startPgsse(t, url, "PGSSE_MAX_STREAMS_PER_IP=1")
	open(t, p.URL+"/events?topic=videos/*", "")

	req, _ := http.NewRequest(http.MethodGet, p.URL+"/events?topic=videos/*", nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body) // it ends by itself
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" ||
		!strings.Contains(string(body), "retry: ") || !strings.Contains(string(body), "event: stream.refused\n") ||
		strings.Contains(string(body), "\nid:") || !strings.Contains(string(body), `"status":429`) {
		t.Fatalf("event-stream client refused with %d %q:\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}

	for range 200 {
		resp := get(t, p.URL+"/events?topic=videos/*")
		resp.Body.Close()
		if resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("plain client refused with %d, want 429", resp.StatusCode)
		}
	}
	if n := countLines(p.logs.String(), `"message":"stream refused"`); n < 1 || n > 3 {
		t.Errorf("%d log lines for 201 refusals, want 1 to 3", n)
	}
	if m := scrape(t, p.URL); m["pgsse_streams_refused_total{status=429}"] != 201 {
		t.Errorf("refusals counted %v, want 201", m["pgsse_streams_refused_total{status=429}"])
	}
}
