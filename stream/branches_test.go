package stream_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"pgsse/event"
	"pgsse/hub"
	"pgsse/stream"
)

// fakeStore is an in-memory log of video.status events on videos/a and the
// state of video a: the stream's branches tested without a database.
type fakeStore struct {
	mu      sync.Mutex
	log     []event.Raw // ids ascending
	horizon int64
	reads   atomic.Int64 // TopicEvents calls
}

func newFakeStore(through int64) *fakeStore {
	s := &fakeStore{}
	for id := int64(1); id <= through; id++ {
		s.log = append(s.log, event.Raw{ID: id, Kind: event.KindVideoStatus, Topic: "videos/a", Time: time.Unix(id, 0),
			Data: []byte(`{"video_id":"a","status":"processed"}`)})
	}
	return s
}

func (s *fakeStore) newest() int64 {
	if len(s.log) == 0 {
		return 0
	}
	return s.log[len(s.log)-1].ID
}

func (s *fakeStore) LogBounds(context.Context) (int64, int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.horizon, s.newest(), nil
}

func (s *fakeStore) TopicEvents(_ context.Context, after, through int64, topics, prefixes []string, limit int) ([]event.Raw, bool, int64, error) {
	s.reads.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []event.Raw
	for _, r := range s.log {
		if r.ID <= after || r.ID > through || r.ID <= s.horizon {
			continue
		}
		match := false
		for _, t := range topics {
			match = match || r.Topic == t
		}
		for _, p := range prefixes {
			match = match || strings.HasPrefix(r.Topic, p)
		}
		if match {
			if len(out) == limit {
				return out, true, s.horizon, nil
			}
			out = append(out, r)
		}
	}
	return out, false, s.horizon, nil
}

func (s *fakeStore) Stateful(topic string) bool { return topic == "videos/a" }

func (s *fakeStore) Snapshot(_ context.Context, topics []string) (int64, []event.Event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	position := s.newest()
	return position, []event.Event{{ID: position, Kind: event.KindVideoStatus, Topic: "videos/a", Time: time.Unix(0, 0),
		Data: &event.VideoStatus{VideoID: "a", Status: "processed"}, Snapshot: true}}, nil
}

// branchServer serves a hub started at cursor over store, replaying in
// batches of 3.
func branchServer(t *testing.T, store stream.History, hubCfg hub.HubConfig, cursor int64) *takeoverServer {
	t.Helper()
	return serveTakeoverWith(t, hubCfg, stream.HandlerConfig{Heartbeat: time.Minute, ReplayBatch: 3}, false, store, cursor)
}

// lines opens path with lastEventID and returns its "id:", "event:" and
// "data:" lines as they come.
func lines(t *testing.T, s *takeoverServer, path, lastEventID string) <-chan string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.srv.URL+path, nil)
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	out := make(chan string, 1024)
	go func() {
		defer close(out)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if l := sc.Text(); strings.HasPrefix(l, "id: ") || strings.HasPrefix(l, "event: ") || strings.HasPrefix(l, "data: ") {
				out <- l
			}
		}
	}()
	return out
}

// expectLines fails unless lines matching wants come, in order, within 5 s:
// "data: X" matches a data line holding X, others the line itself. Other
// lines may come between, but no id line between two wanted ids.
func expectLines(t *testing.T, got <-chan string, wants ...string) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for _, want := range wants {
		for matched := false; !matched; {
			select {
			case l, ok := <-got:
				if !ok {
					t.Fatalf("stream ended; want %q", want)
				}
				if x, ok := strings.CutPrefix(want, "data: "); ok {
					matched = strings.HasPrefix(l, "data: ") && strings.Contains(l, x)
				} else {
					matched = l == want
				}
				if !matched && strings.HasPrefix(want, "id: ") && strings.HasPrefix(l, "id: ") {
					t.Fatalf("got %q, want %q", l, want)
				}
			case <-timeout:
				t.Fatalf("no %q within 5s", want)
			}
		}
	}
}

// TestBranch_Fresh: a fresh subscription to a topic with state gets its
// snapshot at the log's position, then live events.
func TestBranch_Fresh(t *testing.T) {
	store := newFakeStore(5)
	s := branchServer(t, store, hub.HubConfig{}, 5)
	got := lines(t, s, "/events?topic=videos/a", "")
	expectLines(t, got, "id: 5", `data: "snapshot":true`)
	s.publish(6, 6)
	expectLines(t, got, "id: 6")
	if n := store.reads.Load(); n != 0 {
		t.Errorf("%d log reads, want none", n)
	}
}

// TestBranch_ResumeFromMemory: a resume inside the hub's history is served
// from it, without reading the log.
func TestBranch_ResumeFromMemory(t *testing.T) {
	store := newFakeStore(0)
	s := branchServer(t, store, hub.HubConfig{}, 0)
	s.publish(1, 5)
	got := lines(t, s, "/events?topic=videos/*", "3")
	expectLines(t, got, "id: 4", "id: 5")
	if n := store.reads.Load(); n != 0 {
		t.Errorf("%d log reads, want none", n)
	}
}

// TestBranch_ResumeFromLog: a resume from before the hub's history is read
// from the log, in batches, then continues live.
func TestBranch_ResumeFromLog(t *testing.T) {
	store := newFakeStore(10)
	s := branchServer(t, store, hub.HubConfig{}, 10)
	got := lines(t, s, "/events?topic=videos/*", "4")
	expectLines(t, got, "id: 5", "id: 6", "id: 7", "id: 8", "id: 9", "id: 10")
	s.publish(11, 11)
	expectLines(t, got, "id: 11")
	if n := store.reads.Load(); n < 2 {
		t.Errorf("%d log reads, want at least 2 batches of 3", n)
	}
}

// TestBranch_Reset: a position the log no longer has (pruned, or from a log
// that was replaced) gets stream.reset with the reason, then the snapshot.
func TestBranch_Reset(t *testing.T) {
	for _, tc := range []struct {
		lastEventID, reason string
	}{{"3", "history_pruned"}, {"50", "log_reset"}} {
		t.Run(tc.reason, func(t *testing.T) {
			store := newFakeStore(10)
			store.horizon = 8
			s := branchServer(t, store, hub.HubConfig{}, 10)
			got := lines(t, s, "/events?topic=videos/a", tc.lastEventID)
			expectLines(t, got, "event: stream.reset", fmt.Sprintf(`data: "reason":%q`, tc.reason), "id: 10", `data: "snapshot":true`)
		})
	}
}

// TestBranch_CatchUp: a burst larger than the queue is caught up in the
// stream from the hub's history: every event once, in order, no reconnect.
func TestBranch_CatchUp(t *testing.T) {
	store := newFakeStore(0)
	s := branchServer(t, store, hub.HubConfig{QueueLen: 8}, 0)
	got := lines(t, s, "/events?topic=videos/*", "0")
	s.publish(1, 1)
	expectLines(t, got, "id: 1")
	s.publish(2, 200)
	var wants []string
	for id := 2; id <= 200; id++ {
		wants = append(wants, fmt.Sprintf("id: %d", id))
	}
	expectLines(t, got, wants...)
	if n := testutil.ToFloat64(s.metrics.CatchUps.WithLabelValues("memory")); n < 1 {
		t.Errorf("%v catch-ups from memory, want at least 1", n)
	}
	if n := testutil.ToFloat64(s.metrics.StreamsOpened); n != 1 {
		t.Errorf("%v streams opened, want 1", n)
	}
}
