package stream_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"pgsse/db"
	"pgsse/event"
	"pgsse/hub"
	"pgsse/internal/dbtest"
	"pgsse/stream"
)

// openStore opens the store at url until the test ends.
func openStore(t *testing.T, url string) *db.Store {
	t.Helper()
	store, err := db.Open(url, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return store
}

// serve starts a hub at cursor and a handler on history behind a test server,
// both stopped when the test ends; it returns the hub and the server's URL.
func serve(t *testing.T, cursor int64, history stream.History, cfg stream.HandlerConfig) (*hub.Hub, string) {
	t.Helper()
	hub := hub.NewHub(hub.HubConfig{})
	hub.Start(cursor)
	e := echo.New()
	h := stream.NewHandler(hub, history, cfg)
	h.Register(e)
	srv := httptest.NewServer(e)
	t.Cleanup(func() {
		hub.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.Close(ctx); err != nil {
			t.Error(err)
		}
		srv.Close()
	})
	return hub, srv.URL
}

// pruningHistory is the real store, pruning the whole log right after the
// first replay batch is read: the pruner running mid-replay.
type pruningHistory struct {
	*db.Store
	once sync.Once
}

func (h *pruningHistory) TopicEvents(ctx context.Context, after, through int64, topics, prefixes []string, limit int) ([]event.Raw, bool, int64, error) {
	raws, more, horizon, err := h.Store.TopicEvents(ctx, after, through, topics, prefixes, limit)
	h.once.Do(func() {
		if _, perr := h.Store.Prune(ctx, time.Now(), db.PruneBatch); perr != nil {
			err = perr
		}
	})
	return raws, more, horizon, err
}

// TestStream_PrunedDuringReplay: a replay from the database that the pruner
// overtakes ends with stream.reset, never silently short (it used to send the
// first batch and then nothing).
func TestStream_PrunedDuringReplay(t *testing.T) {
	url := dbtest.New(t)
	sqlDB := dbtest.Open(t, url)
	dbtest.Exec(t, sqlDB, `INSERT INTO pgsse.events (id, kind, topic, time, data)
		SELECT nextval('pgsse.event_id_seq'), 'video.status', 'videos/a', now() - interval '2 days',
		       '{"video_id": "a", "status": "processed"}'
		FROM generate_series(1, 250)`)
	_, srvURL := serve(t, 250, &pruningHistory{Store: openStore(t, url)}, stream.HandlerConfig{ReplayBatch: 100, Heartbeat: 100 * time.Millisecond})

	req, _ := http.NewRequest("GET", srvURL+"/events?topic=videos/*", nil)
	req.Header.Set("Last-Event-ID", "0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	ids := 0
	for lines.Scan() {
		line := lines.Text()
		switch {
		case strings.HasPrefix(line, "id: "):
			ids++
		case line == "event: stream.reset":
			if ids != 100 {
				t.Errorf("reset after %d events, want after the first batch of 100", ids)
			}
			return
		case strings.HasPrefix(line, ":"):
			t.Fatalf("stream went idle after %d of 250 events with no stream.reset", ids)
		}
	}
	t.Fatalf("stream ended after %d events: %v", ids, lines.Err())
}

// TestStream_AnyVideoID: a video whose id is outside the topic grammar is watched
// by its encoded topic (the /videos/{id}/events alias: TestRoutes_VideoAliasAnyID).
func TestStream_AnyVideoID(t *testing.T) {
	url := dbtest.New(t)
	sqlDB := dbtest.Open(t, url)
	dbtest.InsertVideo(t, sqlDB, "legacy upload/7")
	_, srvURL := serve(t, 1, openStore(t, url), stream.HandlerConfig{})

	for _, path := range []string{"/events?topic=videos/legacy%2520upload%252F7"} {
		resp, err := http.Get(srvURL + path)
		if err != nil {
			t.Fatal(err)
		}
		lines := bufio.NewScanner(resp.Body)
		for lines.Scan() && !strings.HasPrefix(lines.Text(), "data: ") {
		}
		resp.Body.Close()
		if want := `"topic":"videos/legacy%20upload%2F7"`; resp.StatusCode != 200 || !strings.Contains(lines.Text(), want) ||
			!strings.Contains(lines.Text(), `"video_id":"legacy upload/7"`) {
			t.Errorf("%s: %d %s, want the snapshot of video \"legacy upload/7\" on %s", path, resp.StatusCode, lines.Text(), want)
		}
	}
}

// TestStream_PositionFromFirstBytes: a stream that has had no event of its own
// still carries a resumable position, from its first bytes and kept current
// while idle (a wildcard stream, or one on a video that does not exist yet, used
// to reconnect with no Last-Event-ID and miss what was committed meanwhile).
func TestStream_PositionFromFirstBytes(t *testing.T) {
	hub, srvURL := serve(t, 7, openStore(t, dbtest.New(t)), stream.HandlerConfig{Heartbeat: 50 * time.Millisecond})

	position := int64(7)
	for _, path := range []string{"/events?topic=videos/*", "/events?topic=videos/gap1"} {
		resp, err := http.Get(srvURL + path)
		if err != nil {
			t.Fatal(err)
		}
		lines := bufio.NewScanner(resp.Body)
		nextID := func() string {
			// Heartbeats may come first (also while the snapshot is read); a
			// second's worth of them without a position fails.
			for beats := 0; beats < 20 && lines.Scan(); {
				if id, ok := strings.CutPrefix(lines.Text(), "id: "); ok {
					lines.Scan()
					lines.Scan()
					if !strings.HasPrefix(lines.Text(), "data: ") {
						t.Fatalf("%s: id %s without data", path, id)
					}
					return id
				}
				if strings.HasPrefix(lines.Text(), ": ") {
					beats++
				}
			}
			return "only heartbeats, or the end"
		}
		if got, want := nextID(), fmt.Sprint(position); got != want {
			t.Errorf("%s: first position %s, want %s", path, got, want)
		}
		// Events of other topics pass: the idle stream's position follows.
		position += 5
		hub.Publish([]event.Event{{ID: position, Kind: "thumbnail.ready", Topic: "thumbs/x", Data: &event.VideoStatus{VideoID: "x"}}})
		if got, want := nextID(), fmt.Sprint(position); got != want {
			t.Errorf("%s: position after idling %s, want %s", path, got, want)
		}
		resp.Body.Close()
	}
}
